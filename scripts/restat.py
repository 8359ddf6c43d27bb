"""Rewrite an old report's final-accuracy verdicts from its own ``runs.parquet``.

    python scripts/restat.py results/paper_digits_mnist_fashionmnist [...]

For curated reports made before a report kept its runs in its own tables (``runs.parquet`` without a
``record`` column, no ``epochs.parquet``), which ``python -m runners.report <report>`` cannot rebuild and
whose run folders are not kept. The per-dataset paired statistics (``stats.{csv,md}``) and the
cross-dataset verdicts (``aggregate.{csv,md,png}``, ``critical_difference.png``) need only each run's final
accuracy, status, seed, dataset, optimizer and section, and ``runs.parquet`` has them for every run folder,
complete or not. Each section gets them anew from the same functions the report uses, over the same runs
(defaults only: no tuning trial, no tuned re-run; a diverged run at chance; a failed or interrupted one a
miss of the grid, ``runners/report/blocks.py``); ``summary.json`` takes the new aggregate and the page is
redrawn. Curves, time to target and the other files stay as the code that made them drew them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json  # noqa: E402

from runners.atomic import write_json  # noqa: E402 - the checkout's runners, above
from runners.outcomes import COUNTED  # noqa: E402
from runners.report.aggregate_files import write_aggregate  # noqa: E402
from runners.report.collect import folder_labels  # noqa: E402
from runners.report.page import write_page  # noqa: E402
from runners.report.stats import paired_stats, write_stats  # noqa: E402
from runners.train.datasets import DATASETS  # noqa: E402


def section_runs(table: pd.DataFrame, section: str, counted: bool = True) -> pd.DataFrame:
    """The runs a report's section statistics are computed from, as ``build_report`` selects them
    (``counted=False``: the section's runs of every status, its attempts)."""
    runs = table[table["protocol"] == section].copy()
    if not counted:
        runs = pd.concat([runs, _uncounted_cells(table, section)])
    if counted:
        runs = runs[runs["status"].isin(COUNTED)]
    if "config.tuned_from" in runs:
        runs = runs[runs["config.tuned_from"].isna()]
    if "config.trial" in runs:
        runs = runs[runs["config.trial"].fillna(0) == 0]
    # runs.parquet already holds a diverged run's accuracy at chance, as the report counts it
    return runs.assign(num_classes=runs["dataset"].map(lambda d: DATASETS[d].num_classes))


def _uncounted_cells(table: pd.DataFrame, section: str) -> pd.DataFrame:
    """The section's runs without a number in a table of older code, which named no cell for them: read
    from their config columns and folder names, as runners.report.collect reads a run folder."""
    old = table[~table["status"].isin(COUNTED) & table["protocol"].isna()] if "protocol" in table else table.iloc[:0]
    if old.empty or "config.protocol" not in old:
        return old.iloc[:0]
    labels = old["run_dir"].map(lambda name: folder_labels(Path(name).parent.name))
    cells = old.assign(
        protocol=old["config.protocol"] + labels.map(lambda lab: f"+{lab['settings']}" if lab["settings"] else ""),
        dataset=old["config.data.name"],
        optimizer=labels.map(lambda lab: lab["optimizer"]),
        seed=old["config.seed"].astype(int),
    )
    return cells[cells["protocol"] == section]


def sections_of(table: pd.DataFrame, report: Path) -> list[str]:
    """The sections of a report that have runs in its table and a folder."""
    return sorted(s for s in table["protocol"].dropna().unique() if (report / s).is_dir())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", type=Path)
    ap.add_argument("--candidate", default="thermolion")
    args = ap.parse_args(argv)
    for report in args.reports:
        if not (report / "runs.parquet").exists():
            print(f"{report}: no runs.parquet (written by python -m runners.report); its stats stay as they are")
            continue
        table = pd.read_parquet(report / "runs.parquet")
        if "record" in table:
            print(f"{report}: its own tables hold its runs; rebuild it whole: python -m runners.report {report}")
            continue
        summary_path = report / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
        for section in sections_of(table, report):
            if not (report / section / "aggregate.md").exists():
                continue
            runs = section_runs(table, section)
            if runs.empty:
                continue
            attempts = section_runs(table, section, counted=False)
            result = write_aggregate(runs, report / section, section, args.candidate, attempts)
            if summary is not None and section in summary.get("protocols", {}):
                summary["protocols"][section]["aggregate"] = result
            print(f"{report / section / 'aggregate.md'}: from {len(runs)} runs ({len(attempts)} attempted)")
        for stats_md in sorted(report.glob("*/stats.md")):
            runs = section_runs(table, stats_md.parent.name)
            df = paired_stats(runs, args.candidate)
            if df.empty:
                print(f"{stats_md}: no paired runs of {args.candidate} in runs.parquet; left as it is")
                continue
            write_stats(df, stats_md.parent, args.candidate)
            print(f"{stats_md}: {len(df)} comparisons from {len(runs)} runs")
        if summary is not None:  # last: the page reads every file of the report
            write_json(summary_path, summary)
            write_page(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
