"""Cross-dataset verdicts (rliable, Demšar 2006): one section's runs pooled over datasets.

Definitions (tested against hand computations in tests/test_aggregate.py):
* score of a run: (acc - chance) / (best mean - chance) on its dataset (a diverged run: acc = chance,
  so 0), chance = 100 / classes and
  best mean = the highest mean final accuracy of any optimizer on that dataset in this section. So
  1 is "as good as the best optimizer's average", 0 is chance; scores are comparable across datasets.
* IQM: the mean of the middle 50% of the pooled run scores (scipy.stats.trim_mean, 25% each side).
* stratified bootstrap: resample runs with replacement within each dataset, recompute; the 95%
  interval is the 2.5 and 97.5 percentiles (rliable's, Agarwal et al. 2021).
* probability of improvement P(X > Y) on one dataset: (#{x > y} + 0.5 #{x = y}) / (n m) over all
  pairs of runs (Mann-Whitney U / nm), averaged over the datasets both were run on.
* ranks: per dataset, optimizers ranked by mean final accuracy (1 = best, ties share the average);
  Friedman test over datasets (scipy), Nemenyi post-hoc (scikit-posthocs) and its critical-difference
  diagram. Only optimizers run on every dataset of the section take part.
* performance profile: the share of datasets on which an optimizer's mean accuracy is within tau
  points of the best optimizer's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from scipy import stats

from ..atomic import write_text
from .collect import OPTIMIZER_ORDER, _ordered
from .paths import section_heading, section_title
from .tables import _num, markdown_table

__all__ = [
    "scores",
    "iqm",
    "stratified_bootstrap_ci",
    "probability_of_improvement",
    "average_ranks",
    "friedman",
    "profile_within",
    "write_aggregate",
    "N_BOOT",
]

N_BOOT = 2000
MIN_DATASETS = 3
TAUS = np.linspace(0, 10, 101)


# Small samples say so (the rule, in one place): an interval needs at least MIN_CI_RUNS runs in every
# dataset block it resamples (with one, the bootstrap returns the point itself: [x, x]); a rank test needs
# at least MIN_RANK_DATASETS datasets. Below either, the value is shown with its reason, not an interval
# or a p-value.
MIN_CI_RUNS = 2
MIN_RANK_DATASETS = 3


def scores(runs: pd.DataFrame) -> pd.Series:
    """Each run's normalised score (see the module docstring)."""
    chance = 100.0 / runs["num_classes"]
    best = runs.groupby(["dataset", "optimizer"])["final_eval_acc"].mean().groupby("dataset").max()
    return (runs["final_eval_acc"] - chance) / (runs["dataset"].map(best) - chance)


def iqm(values, axis=None):
    """Interquartile mean: the mean after trimming 25% from each end."""
    return stats.trim_mean(np.asarray(values, dtype=float), 0.25, axis=axis)


def stratified_bootstrap_ci(
    values, strata, statistic: Callable = iqm, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[float, float]:
    """Percentile 95% interval of ``statistic`` (called with ``axis=1`` on all resamples at once)
    with runs resampled within each stratum."""
    values, strata = np.asarray(values, dtype=float), np.asarray(strata)
    rng = np.random.default_rng(seed)
    idx = np.concatenate(
        [
            g[rng.integers(0, len(g), (n_boot, len(g)))]
            for g in (np.flatnonzero(strata == s) for s in np.unique(strata))
        ],
        axis=1,
    )
    low, high = np.percentile(statistic(values[idx], axis=1), [2.5, 97.5])
    return float(low), float(high)


def _poi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) with ties counting half, batched over leading axes. From ranks (Mann-Whitney):
    (rank sum of x in the pooled sample - n(n+1)/2) / (n m), O(n + m) instead of O(n m) pairs."""
    n, m = x.shape[-1], y.shape[-1]
    ranks = stats.rankdata(np.concatenate([x, y], axis=-1), axis=-1)
    return (ranks[..., :n].sum(axis=-1) - n * (n + 1) / 2) / (n * m)


def probability_of_improvement(
    x_by_dataset: dict, y_by_dataset: dict, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[float, float, float]:
    """P(X > Y) averaged over the shared datasets, and its stratified-bootstrap 95% interval."""
    shared = sorted(set(x_by_dataset) & set(y_by_dataset))
    pairs = [(np.asarray(x_by_dataset[d], float), np.asarray(y_by_dataset[d], float)) for d in shared]
    point = float(np.mean([_poi(x, y) for x, y in pairs]))
    rng = np.random.default_rng(seed)
    draws = np.mean(
        [
            _poi(x[rng.integers(0, len(x), (n_boot, len(x)))], y[rng.integers(0, len(y), (n_boot, len(y)))])
            for x, y in pairs
        ],
        axis=0,
    )
    low, high = np.percentile(draws, [2.5, 97.5])
    return point, float(low), float(high)


def _mean_table(runs: pd.DataFrame) -> pd.DataFrame:
    """datasets x optimizers of mean final accuracy, complete blocks only (every optimizer everywhere)."""
    table = runs.pivot_table(index="dataset", columns="optimizer", values="final_eval_acc", aggfunc="mean")
    return table.dropna(axis=1)


def average_ranks(means: pd.DataFrame) -> pd.Series:
    """Mean over datasets of each optimizer's rank (1 = highest accuracy; ties share the average)."""
    return means.rank(axis=1, ascending=False, method="average").mean().sort_values()


def friedman(means: pd.DataFrame) -> tuple[float, float]:
    """(statistic, p-value) of the Friedman test over datasets (blocks) and optimizers (treatments)."""
    result = stats.friedmanchisquare(*[means[c].to_numpy() for c in means.columns])
    return float(result.statistic), float(result.pvalue)


def profile_within(means: pd.DataFrame, taus=TAUS) -> pd.DataFrame:
    """taus x optimizers: the share of datasets with mean accuracy >= best - tau."""
    gap = means.max(axis=1).to_numpy()[:, None] - means.to_numpy()
    return pd.DataFrame([(gap <= t + 1e-12).mean(axis=0) for t in taus], index=taus, columns=means.columns)


def write_aggregate(runs: pd.DataFrame, out: Path, section: str, candidate: str) -> dict:
    runs = runs.assign(score=scores(runs))
    optimizers = _ordered(runs["optimizer"], OPTIMIZER_ORDER)
    datasets = sorted(runs["dataset"].unique())
    rows = []
    by = {
        o: {d: g["final_eval_acc"].to_numpy() for d, g in runs[runs["optimizer"] == o].groupby("dataset")}
        for o in optimizers
    }
    for k, opt in enumerate(optimizers):
        r = runs[runs["optimizer"] == opt]
        lost = int((r["status"] == "diverged").sum()) if "status" in r else 0
        row = {"optimizer": opt, "runs": len(r), "diverged": lost, "datasets": r["dataset"].nunique()}
        row["fewest_per_dataset"] = int(r.groupby("dataset").size().min())
        for name, fn in (("mean", np.mean), ("median", np.median), ("iqm", iqm)):
            row[name] = float(fn(r["score"].to_numpy()))
            row[f"{name}_low"], row[f"{name}_high"] = stratified_bootstrap_ci(r["score"], r["dataset"], fn, seed=k)
        if opt != candidate and candidate in by:
            row["p_candidate_better"], row["p_low"], row["p_high"] = probability_of_improvement(by[candidate], by[opt])
        rows.append(row)
    table = pd.DataFrame(rows)
    means = _mean_table(runs)
    ranks, rank_note, fried = pd.Series(dtype=float), "", None
    if means.shape[1] >= 3 and means.shape[0] >= MIN_RANK_DATASETS:
        ranks = average_ranks(means)
        table["avg_rank"] = table["optimizer"].map(ranks)
        fried = friedman(means)
    dropped = sorted(set(optimizers) - set(means.columns))
    if dropped:
        rank_note += f" Not run on every dataset, so left out of the ranks: {', '.join(dropped)}."
    cd = _critical_difference(means, ranks, out)
    write_text(out / "aggregate.csv", table.to_csv(index=False))
    _plot(table, profile_within(means) if not means.empty else None, out, section)

    def ci(r, name):  # an interval from one run of a dataset is no interval: the value, marked
        if r["fewest_per_dataset"] < MIN_CI_RUNS:
            return f"{r[name]:.3f} (no CI: {int(r['fewest_per_dataset'])} run on a dataset)"
        return f"{r[name]:.3f} [{r[name + '_low']:.3f}, {r[name + '_high']:.3f}]"

    header = ["optimizer", "runs (diverged)", "datasets", "mean [95% CI]", "median [95% CI]", "IQM [95% CI]"]
    if "avg_rank" in table:
        header.append("avg rank")
    if "p_candidate_better" in table:
        header.append(f"P({candidate} > X) [95% CI]")
    lines = []
    ours = table.loc[table["optimizer"] == candidate, "fewest_per_dataset"]  # absent: no P column is drawn
    candidate_fewest = int(ours.min()) if len(ours) else 0
    for _, r in table.iterrows():
        runs_cell = f"{int(r['runs'])} ({int(r['diverged'])})"
        cells = [r["optimizer"], runs_cell, int(r["datasets"]), ci(r, "mean"), ci(r, "median"), ci(r, "iqm")]
        if "avg_rank" in table:
            cells.append(_num(r.get("avg_rank", np.nan)))
        if "p_candidate_better" in table:
            fewest = min(r["fewest_per_dataset"], candidate_fewest)
            cells.append(
                "–"
                if pd.isna(r.get("p_candidate_better"))
                else (
                    f"{r['p_candidate_better']:.2f} (no CI: {fewest} run on a dataset)"
                    if fewest < MIN_CI_RUNS
                    else f"{r['p_candidate_better']:.2f} [{r['p_low']:.2f}, {r['p_high']:.2f}]"
                )
            )
        lines.append(cells)
    text = [
        section_heading("Across datasets", section),
        f"{len(datasets)} dataset(s), {len(runs)} runs.\n",
        "Score of a run: (accuracy − chance) / (best optimizer's mean accuracy − chance) on its dataset, so "
        "1 = the best optimizer's average and 0 = chance; a diverged run scores 0 (runners/outcomes.py). "
        "Mean, median and IQM (mean of the middle 50%) "
        f"pool every run (datasets × seeds); 95% CIs from a stratified bootstrap ({N_BOOT} resamples, "
        f"strata = datasets). P({candidate} > X): the chance that a run of {candidate} beats a run of X "
        "on the same dataset (Mann–Whitney U / nm), averaged over datasets, with a stratified-bootstrap CI; "
        "0.5 means no difference.\n",
        markdown_table(header, lines),
        "\n## Ranks (Demšar 2006)\n",
    ]
    if fried is None:
        text.append(
            f"Not enough for rank statistics: {means.shape[0]} complete dataset(s) × {means.shape[1]} "
            f"optimizer(s) (need ≥ {MIN_RANK_DATASETS} datasets and ≥ 3 optimizers run on all of them).{rank_note}\n"
        )
    else:
        text.append(
            "Average rank by mean final accuracy (1 = best): "
            + ", ".join(f"{o} {v:.2f}" for o, v in ranks.items())
            + f". Friedman χ² = {fried[0]:.2f}, p = {fried[1]:.3g} over {means.shape[0]} datasets.{rank_note}\n"
        )
    text.append(cd["note"] + "\n")
    write_text(out / "aggregate.md", "\n".join(text))
    return {
        "table": table.to_dict(orient="records"),
        "ranks": ranks.to_dict(),
        "friedman": None if fried is None else {"statistic": fried[0], "p": fried[1]},
        **cd,
    }


def _critical_difference(means: pd.DataFrame, ranks: pd.Series, out: Path) -> dict:
    """Nemenyi post-hoc (scikit-posthocs) and the CD diagram, or a note saying why there is none."""
    if means.shape[0] < MIN_DATASETS or means.shape[1] < 3:
        return {
            "nemenyi": None,
            "note": f"No critical-difference diagram: not enough datasets ({means.shape[0]} "
            f"complete; need ≥ {MIN_DATASETS} datasets and ≥ 3 optimizers).",
        }
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scikit_posthocs as sp

    pvalues = sp.posthoc_nemenyi_friedman(means.to_numpy())
    pvalues.index = pvalues.columns = means.columns
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.35 * len(ranks)))
    from .palette import colours

    sp.critical_difference_diagram(ranks, pvalues, ax=ax, color_palette=colours(ranks.index))
    ax.set_title("Average rank (1 = best); bars join optimizers not different (Nemenyi, 5%)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "critical_difference.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return {
        "nemenyi": pvalues.to_dict(),
        "note": "Nemenyi post-hoc p-values (scikit-posthocs) drive the bars of "
        "`critical_difference.png`: optimizers joined by a bar are not significantly different at 5%.",
    }


def _plot(table: pd.DataFrame, profile: Optional[pd.DataFrame], out: Path, section: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .palette import styles

    style = styles([*table["optimizer"], *(profile.columns if profile is not None else [])])
    colour = {k: v["color"] for k, v in style.items()}
    fig, axes = plt.subplots(1, 2, figsize=(11, 2.5 + 0.4 * len(table)), squeeze=False)
    ax = axes[0, 0]
    for i, r in enumerate(table.itertuples()):
        ax.plot([r.iqm_low, r.iqm_high], [i, i], color=colour[r.optimizer], lw=6, alpha=0.5, solid_capstyle="butt")
        ax.plot([r.iqm], [i], "|", color="black", ms=14)
    ax.set_yticks(range(len(table)), table["optimizer"])
    ax.invert_yaxis()
    ax.set_xlabel("IQM of normalised score (95% stratified-bootstrap CI)")
    if len(table) and (table["iqm_high"] - table["iqm_low"]).abs().max() < 1e-12:
        ax.text(
            0.5,
            -0.35,
            "every interval has zero width: one run per optimizer and dataset leaves nothing to resample",
            transform=ax.transAxes,
            ha="center",
            fontsize=8,
            color="dimgrey",
        )
    ax.grid(True, axis="x", alpha=0.3)
    ax = axes[0, 1]
    if profile is not None:
        for opt in profile.columns:
            s = style[opt]
            ax.step(profile.index, profile[opt], where="post", color=s["color"], ls=s["linestyle"], label=opt, lw=1.6)
        ax.set_xlabel("τ (accuracy points behind the best)")
        ax.set_ylabel("share of datasets within τ")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8, frameon=False)
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"Across datasets ({section_title(section)})")
    fig.tight_layout()
    fig.savefig(out / "aggregate.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
