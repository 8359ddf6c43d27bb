"""Runs as jobs: one owner per run folder, skip/resume/stale decisions, run files, provenance,
progress bars and the Hydra glue. Nothing here changes a run's numbers."""
