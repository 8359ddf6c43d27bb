"""The benchmark harness, in layers (each imports only the layers above it in this list):

* ``runners.train``: the numeric core, everything that decides a run's numbers (data, augmentation,
  schedules, the model and optimizer build, the loop). ``code_version`` hashes this folder whole.
* ``runners.config`` and ``runners.plugins``: the boundary where a resolved config becomes a typed
  ``RunConfig`` (and a plug-in's dotted path a checked class).
* ``runners.sweep``: running runs as jobs (locks, run folders, provenance, progress, Hydra glue).
* ``runners.tuning``: search spaces and the choice of tuned configurations.
* ``runners.report``: tables, statistics and figures of a results folder.

``runners.atomic`` (atomic file writes) and ``runners.outcomes`` (what a run folder's files say
happened, and how each status enters the numbers) are leaves every layer may use;
``runners.status`` (``python -m runners.status``) sits on top, beside the report.
"""
