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
BOOTSTRAP_FROM = 6  # below this many pairs the percentile bootstrap has too few distinct resamples (3 -> 10)


def wilcoxon_floor(n: int) -> float:
    """The smallest two-sided p-value of the exact Wilcoxon signed-rank test with n pairs: 2 / 2^n
    (every difference of one sign); 0.25 at n = 3, so 3 seeds can never reach 5%."""
    return min(1.0, 2.0 / 2**n) if n >= 1 else 1.0


def mean_ci(diff: np.ndarray, seed: int = 0) -> tuple[float, float, str]:
    """95% interval of the mean difference: Student's t below BOOTSTRAP_FROM pairs, else the
    percentile bootstrap (9999 resamples). Returns (low, high, method)."""
    from scipy import stats

    if len(diff) < BOOTSTRAP_FROM:
        ci = stats.ttest_1samp(diff, 0.0).confidence_interval(0.95)
        return float(ci.low), float(ci.high), "t"
    ci = stats.bootstrap(
        (diff,), np.mean, confidence_level=0.95, n_resamples=9999, method="percentile", random_state=seed
    ).confidence_interval
    return float(ci.low), float(ci.high), "bootstrap"


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
                "ci_method": "none",
                "p_ttest": np.nan,
                "p_wilcoxon": np.nan,
            }
            if n >= 2 and np.ptp(diff) > 0:
                low, high, method = mean_ci(diff, seed)
                row.update(
                    ci_low=low,
                    ci_high=high,
                    ci_method=method,
                    p_ttest=stats.ttest_rel(pair[candidate], pair[other]).pvalue,
                    p_wilcoxon=stats.wilcoxon(diff).pvalue,
                )
            elif n >= 2:  # identical differences: no spread, so no test (the outcome says untested)
                row.update(ci_low=diff[0], ci_high=diff[0], ci_method="no spread")
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
    """win/loss when the Holm-corrected paired t-test says so at 5%; with no test possible (fewer
    than 2 paired seeds, or differences with no spread), the sign of the difference beyond
    TIE_POINTS, marked untested: never a bare win."""
    if not math.isnan(r.p_ttest_holm):
        if r.p_ttest_holm < ALPHA:
            return "win" if r.mean_diff > 0 else "loss"
        return "tie"
    if abs(r.mean_diff) <= TIE_POINTS:
        return "tie (untested)"
    return ("win" if r.mean_diff > 0 else "loss") + " (untested)"


def _floors(df: pd.DataFrame) -> str:
    """The smallest p-value each test can reach at the n of this table, before and after Holm."""
    lines = []
    for n in sorted(df["n"].unique()):
        if n < 2:
            lines.append(f"- n = {n} paired seed: no test is possible; these outcomes are marked untested.")
            continue
        m = int(df[df["n"] == n].groupby("baseline")["dataset"].nunique().max())
        floor = wilcoxon_floor(int(n))
        lines.append(
            f"- n = {n} paired seeds: Wilcoxon's smallest possible p is 2/2^{n} = {floor:.3g}"
            + (f" ({min(1.0, m * floor):.3g} after Holm over {m} datasets)" if m > 1 else "")
            + ("; it can never reach 5% here" if min(1.0, m * floor) >= ALPHA else "")
            + ". The t-test has no floor (p falls as the spread shrinks), but with so few seeds it "
            "rests on the differences being normal."
        )
    return "\n".join(lines) + "\n"


def write_stats(df: pd.DataFrame, out: Path, candidate: str) -> dict:
    write_text(out / "stats.csv", df.to_csv(index=False))
    counts = {}
    for base, g in df.groupby("baseline", sort=False):
        tested = g["outcome"][~g["outcome"].str.endswith("(untested)")]
        counts[base] = {k: int((tested == k).sum()) for k in ("win", "tie", "loss")}
        counts[base]["untested"] = int(len(g) - len(tested))
    cols = [
        "dataset",
        "baseline",
        "n",
        "mean_diff",
        "ci_low",
        "ci_high",
        "ci_method",
        "p_ttest",
        "p_ttest_holm",
        "p_wilcoxon",
        "p_wilcoxon_holm",
        "outcome",
    ]
    md = [
        f"# {candidate} vs each baseline, paired by seed\n",
        "Differences are accuracy points (candidate minus baseline); a diverged run counts at chance. "
        f"CI of the mean difference, 95%: Student's t below {BOOTSTRAP_FROM} paired seeds (a percentile "
        "bootstrap of 3 values has at most 10 distinct resamples), the percentile bootstrap from "
        f"{BOOTSTRAP_FROM}. p-values: paired t-test and Wilcoxon signed-rank, Holm-corrected across datasets "
        f"for each baseline. Outcome: win/loss if the Holm-corrected t-test has p < {ALPHA}, else tie; where "
        f"no test is possible (fewer than 2 seeds, or differences with no spread) the sign of the difference "
        f"(ties within {TIE_POINTS} points), marked untested.\n",
        markdown_table(cols, [[_num(getattr(r, c)) for c in cols] for r in df.itertuples()]),
        "\n## What these n can show\n",
        _floors(df),
        "\n## Win / tie / loss across datasets\n",
        markdown_table(
            ["baseline", "win", "tie", "loss", "untested"],
            [[b, c["win"], c["tie"], c["loss"], c["untested"]] for b, c in counts.items()],
        ),
    ]
    write_text(out / "stats.md", "\n".join(md))
    return counts
