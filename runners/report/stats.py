"""Per-dataset paired statistics: the candidate against each baseline, by seed, Holm-corrected."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import write_text
from .collect import DATASET_ORDER, OPTIMIZER_ORDER, _ordered
from .tables import _num, markdown_table

ALPHA = 0.05


TIE_POINTS = 0.05  # |mean difference| below this many accuracy points is a tie when untestable


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment (NaN entries are left out and stay NaN)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    if len(idx) == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def paired_stats(runs: pd.DataFrame, candidate: str, seed: int = 0) -> pd.DataFrame:
    """Candidate minus each other optimizer, per dataset, paired by seed."""
    from scipy import stats

    rows = []
    wide = runs.pivot_table(index=["dataset", "seed"], columns="optimizer", values="final_eval_acc")
    if candidate not in wide.columns:
        return pd.DataFrame()
    for other in _ordered([c for c in wide.columns if c != candidate], OPTIMIZER_ORDER):
        for dataset in _ordered(wide.index.get_level_values(0), DATASET_ORDER):
            pair = wide.loc[dataset][[candidate, other]].dropna()
            if pair.empty:
                continue
            diff = (pair[candidate] - pair[other]).to_numpy()
            n = len(diff)
            row = {
                "dataset": dataset,
                "candidate": candidate,
                "baseline": other,
                "n": n,
                "candidate_mean": pair[candidate].mean(),
                "baseline_mean": pair[other].mean(),
                "mean_diff": diff.mean(),
                "ci_low": np.nan,
                "ci_high": np.nan,
                "p_ttest": np.nan,
                "p_wilcoxon": np.nan,
            }
            if n >= 2 and np.ptp(diff) > 0:
                ci = stats.bootstrap(
                    (diff,), np.mean, confidence_level=0.95, n_resamples=9999, method="percentile", random_state=seed
                ).confidence_interval
                row.update(
                    ci_low=ci.low,
                    ci_high=ci.high,
                    p_ttest=stats.ttest_rel(pair[candidate], pair[other]).pvalue,
                    p_wilcoxon=stats.wilcoxon(diff).pvalue,
                )
            elif n >= 2:  # identical differences: no spread, so no test
                row.update(ci_low=diff[0], ci_high=diff[0])
            rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for col in ("p_ttest", "p_wilcoxon"):
        df[col + "_holm"] = df.groupby("baseline")[col].transform(
            lambda s: pd.Series(holm(s.to_numpy()), index=s.index)
        )
    df["outcome"] = [_outcome(r) for r in df.itertuples()]
    return df


def _outcome(r) -> str:
    """win/loss when the Holm-corrected paired t-test says so at 5%; with no test possible
    (fewer than 2 paired seeds), the sign of the difference beyond TIE_POINTS decides."""
    if not math.isnan(r.p_ttest_holm):
        if r.p_ttest_holm < ALPHA:
            return "win" if r.mean_diff > 0 else "loss"
        return "tie"
    if abs(r.mean_diff) <= TIE_POINTS:
        return "tie"
    return ("win" if r.mean_diff > 0 else "loss") + (" (untested)" if r.n < 2 else "")


def write_stats(df: pd.DataFrame, out: Path, candidate: str) -> dict:
    write_text(out / "stats.csv", df.to_csv(index=False))
    counts = {}
    for base, g in df.groupby("baseline", sort=False):
        counts[base] = {k: int(g["outcome"].str.startswith(k).sum()) for k in ("win", "tie", "loss")}
    cols = [
        "dataset",
        "baseline",
        "n",
        "mean_diff",
        "ci_low",
        "ci_high",
        "p_ttest",
        "p_ttest_holm",
        "p_wilcoxon",
        "p_wilcoxon_holm",
        "outcome",
    ]
    md = [
        f"# {candidate} vs each baseline, paired by seed\n",
        "Differences are accuracy points (candidate minus baseline). CI: bootstrap 95% (percentile). "
        "p-values: paired t-test and Wilcoxon signed-rank, Holm-corrected across datasets for each "
        f"baseline. Outcome: win/loss if the Holm-corrected t-test has p < {ALPHA}, else tie; with fewer "
        f"than 2 seeds, the sign of the difference (ties within {TIE_POINTS} points), marked untested.\n",
        markdown_table(cols, [[_num(getattr(r, c)) for c in cols] for r in df.itertuples()]),
        "\n## Win / tie / loss across datasets\n",
        markdown_table(
            ["baseline", "win", "tie", "loss"], [[b, c["win"], c["tie"], c["loss"]] for b, c in counts.items()]
        ),
    ]
    write_text(out / "stats.md", "\n".join(md))
    return counts
