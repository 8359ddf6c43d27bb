"""The benchmark harness, in layers (each imports only the layers above it in this list):

* ``runners.train``: the numeric core, everything that decides a run's numbers (data, augmentation,
  schedules, the model and optimizer build, the loop). ``code_version`` hashes this folder whole.
* ``runners.config`` and ``runners.plugins``: the boundary where a resolved config becomes a typed
  ``RunConfig`` (and a plug-in's dotted path a checked class).
* ``runners.sweep``: running runs as jobs (locks, run folders, provenance, progress, Hydra glue).
* ``runners.tuning``: search spaces and the choice of tuned configurations.
* ``runners.report``: tables, statistics and figures of a results folder.

``runners.atomic`` (atomic file writes) is a leaf every layer may use.
"""
