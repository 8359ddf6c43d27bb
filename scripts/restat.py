"""Rewrite a report's per-dataset statistics (``stats.{csv,md}``) from its own ``runs.parquet``.

    python scripts/restat.py results/paper_digits_mnist_fashionmnist [...]

For curated reports whose run folders are not kept: the paired statistics need only each run's
final accuracy, seed, dataset, optimizer and section, and ``runs.parquet`` has them for every run.
Each section folder that holds a ``stats.md`` gets it anew from the same ``paired_stats`` and
``write_stats`` the report uses, over the same runs (defaults only: no tuning trial, no tuned re-run;
a diverged run at chance). Nothing else in the report is touched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runners.outcomes import COUNTED  # noqa: E402 - the checkout's runners, above
from runners.report.stats import paired_stats, write_stats  # noqa: E402


def section_runs(table: pd.DataFrame, section: str) -> pd.DataFrame:
    """The runs a report's section statistics are computed from, as ``build_report`` selects them."""
    runs = table[(table["protocol"] == section) & table["status"].isin(COUNTED)].copy()
    if "config.tuned_from" in runs:
        runs = runs[runs["config.tuned_from"].isna()]
    if "config.trial" in runs:
        runs = runs[runs["config.trial"].fillna(0) == 0]
    return runs  # runs.parquet already holds a diverged run's accuracy at chance, as the report counts it


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
        for stats_md in sorted(report.glob("*/stats.md")):
            runs = section_runs(table, stats_md.parent.name)
            df = paired_stats(runs, args.candidate)
            if df.empty:
                print(f"{stats_md}: no paired runs of {args.candidate} in runs.parquet; left as it is")
                continue
            write_stats(df, stats_md.parent, args.candidate)
            print(f"{stats_md}: {len(df)} comparisons from {len(runs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
