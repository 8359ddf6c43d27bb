"""Tables, statistics and figures from any results folder (``python -m runners.report``).

    python -m runners.report <results_dir> [--out results/<name>] [--baseline adam] [--candidate thermolion]
    python -m runners.report <report>                      # rebuilt from its own tables, with this code
    python -m runners.report <report or results> ... --out results/<name>   # several, merged

Reads every run folder below ``results_dir`` (a folder with ``run.json`` or ``LOCK``) and gives each
a status (``runners.outcomes``): done runs count with their numbers, diverged runs at chance accuracy
(and never reach a target); failed, interrupted and running runs get no number but every table cell
counts them, and ``README.md`` and ``summary.json`` list them with their reasons. Writes, per protocol
found, into ``<out>/<protocol>/``:

* ``table_final.{csv,md,tex}``: datasets x optimizers, final eval accuracy mean ± std over seeds
  with (done / attempted) and the runs that are not done, best per row in bold. The paper
  protocol's eval accuracy is on the training subset, as the paper reported; the rigorous
  protocol's on the test split.
* ``stats.{csv,md}``: the candidate (ThermoLion) against every other optimizer per dataset, paired
  by seed: mean difference, 95% CI (t below 6 seeds, else bootstrap), paired t-test and Wilcoxon
  p-values, both Holm-corrected across datasets (per baseline), and a win/tie/loss count (untested
  outcomes apart).
* ``convergence.{png,pdf}``: per dataset, training loss (log axis) and eval accuracy per epoch,
  mean ± std band over seeds, one colour per optimizer throughout.
* ``thermolion_phase.png``: ThermoLion's gate mean, gas fraction, alignment rate and temperature.
* ``overhead.md``: median optimizer step time relative to the baseline (default Adam).

and ``<out>/paper_comparison.md`` (our paper-protocol numbers next to the paper's) and
``<out>/summary.json`` (all of the above, machine-readable).

Also, per section, ``aggregate.{md,csv,png}`` and ``critical_difference.png`` (across datasets, from
per-dataset blocks: ``blocks``), ``time_to_target.{md,csv}`` and ``performance_profile.png``, and where
tuning trials exist ``tunability.{png,md,csv}``; at the top ``runs.parquet`` (one row per run folder),
``epochs.parquet`` and ``evals.parquet`` (their rows): the report's own tables (``tables_io``), from which
it can be rebuilt.

One module per job: ``collect`` (reading run folders), ``tables_io`` (the report's own tables, written
and read back), ``blocks`` (the grid every cross-dataset verdict uses), ``tables``, ``stats`` (per-dataset
paired tests), ``aggregate`` (cross-dataset statistics) and ``aggregate_files`` (their files),
``time_to_target``, ``tunability``, ``tuning`` (lr sensitivity, tuned re-runs), ``figures``, ``runs_table``,
``paper``, and ``build`` (the driver).
"""

from .build import build_report, main
from .collect import DATASET_ORDER, OPTIMIZER_ORDER, ReportError, collect_runs
from .stats import holm, paired_stats
from .tables import final_table, markdown_table
from .tuning import lr_robustness

__all__ = [
    "ReportError",
    "collect_runs",
    "final_table",
    "markdown_table",
    "paired_stats",
    "holm",
    "lr_robustness",
    "build_report",
    "main",
    "DATASET_ORDER",
    "OPTIMIZER_ORDER",
]
