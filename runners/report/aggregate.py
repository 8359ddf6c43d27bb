"""Cross-dataset verdicts (rliable, Demšar 2006) over one section's per-dataset blocks.

Which runs go in is ``runners.report.blocks``'s rule: a grid of datasets x seeds, each optimizer's block
on a dataset reduced to its mean first (so every dataset weighs the same), a miss (failed, interrupted,
missing) at chance like a diverged run, an incomplete optimizer marked and given no interval.

Definitions (tested against hand computations in tests/test_aggregate.py):
* score of an optimizer on a dataset: (block mean - chance) / (best block mean - chance), chance =
  100 / classes and best = the highest block mean of any optimizer on that dataset in this section
  (0 where nobody beat chance). So 1 is "as good as the best optimizer's average", 0 is chance.
* mean, median and IQM (the mean of the middle 50%, scipy.stats.trim_mean, 25% each side) of an
  optimizer's dataset scores, each dataset once.
* block bootstrap: resample runs with replacement within each of the optimizer's dataset blocks,
  recompute the block means, their scores (the best block means held fixed) and the statistic; the 95%
  interval is the 2.5 and 97.5 percentiles (rliable's stratified bootstrap, strata = datasets).
* probability of improvement P(X > Y) on one dataset: (#{x > y} + 0.5 #{x = y}) / (n m) over all
  pairs of runs (Mann-Whitney U / nm), averaged over the section's datasets.
* ranks: per dataset, optimizers ranked by block mean (1 = best, ties share the average); Friedman test
  over datasets (scipy), Nemenyi post-hoc (scikit-posthocs) and its critical-difference diagram. An
  optimizer with no counted run at all on some dataset takes no part (its block there is all misses).
* performance profile: the share of datasets on which an optimizer's block mean is within tau points
  of the best optimizer's.

``cross_dataset`` computes (tables from tables); ``aggregate_files.write_aggregate`` renders its result.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

from .blocks import block_means, misses
from .collect import OPTIMIZER_ORDER, _ordered

__all__ = [
    "scores",
    "iqm",
    "stratified_bootstrap_ci",
    "probability_of_improvement",
    "average_ranks",
    "friedman",
    "profile_within",
    "cross_dataset",
    "dataset_scores",
    "block_bootstrap_ci",
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


def block_bootstrap_ci(
    blocks: list[np.ndarray], transforms: list[Callable], statistic: Callable = iqm, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[float, float]:
    """Percentile 95% interval of ``statistic`` over blocks (called with ``axis=1``): each block's runs
    resampled with replacement, reduced to their mean and mapped by its ``transform`` (its score)."""
    rng = np.random.default_rng(seed)
    draws = np.stack(
        [f(b[rng.integers(0, len(b), (n_boot, len(b)))].mean(axis=1)) for b, f in zip(blocks, transforms)], axis=1
    )
    low, high = np.percentile(statistic(draws, axis=1), [2.5, 97.5])
    return float(low), float(high)


def dataset_scores(means: pd.DataFrame, chance: pd.Series) -> pd.DataFrame:
    """datasets x optimizers: (block mean - chance) / (best block mean - chance); 0 where best = chance."""
    span = means.max(axis=1) - chance.reindex(means.index)
    return means.sub(chance.reindex(means.index), axis=0).div(span.where(span > 0), axis=0).fillna(0.0)


def no_ci_reason(missing: int, fewest: int) -> str:
    """Why an optimizer's value gets no interval ('' when it gets one): the rule of blocks.py."""
    if missing:
        return f"incomplete: {missing} missing"
    if fewest < MIN_CI_RUNS:
        return f"{fewest} run on a dataset"
    return ""


def cross_dataset(g: pd.DataFrame, candidate: str, n_boot: int = N_BOOT) -> dict:
    """The section's cross-dataset verdicts from its grid (``blocks.grid``): ``table`` (one row per
    optimizer), ``means`` (datasets x optimizers, every optimizer), ``ranked`` (the means of the
    optimizers with a run on every dataset), ``ranks``, ``friedman`` (or None) and ``datasets``."""
    optimizers = _ordered(g["optimizer"], OPTIMIZER_ORDER)
    means = block_means(g)[optimizers]
    chance = g.groupby("dataset")["chance"].first()
    score = dataset_scores(means, chance)
    best, span = means.max(axis=1), means.max(axis=1) - chance.reindex(means.index)
    marks = misses(g).set_index("optimizer")
    values = {o: {d: b["acc"].to_numpy() for d, b in g[g["optimizer"] == o].groupby("dataset")} for o in optimizers}
    rows = []
    for k, opt in enumerate(optimizers):
        o = g[g["optimizer"] == opt]
        fewest = int(o.groupby("dataset").size().min())
        m = marks.loc[opt]
        row = {
            "optimizer": opt,
            "runs": int(o["counted"].sum()),
            "diverged": int(((o["status"] == "diverged") & o["counted"]).sum()),
            "missing": int(m["missing"]),
            "missing_on": m["missing_on"],
            "datasets": int(o.loc[o["counted"], "dataset"].nunique()),
            "fewest_per_dataset": fewest,
            "no_ci": no_ci_reason(int(m["missing"]), fewest),
        }
        datasets = list(means.index)
        blocks = [values[opt][d] for d in datasets]
        transforms = [(lambda x, c=chance[d], s=span[d]: (x - c) / s if s > 0 else np.zeros_like(x)) for d in datasets]
        for name, fn in (("mean", np.mean), ("median", np.median), ("iqm", iqm)):
            row[name] = float(fn(score[opt].to_numpy()))
            low = high = np.nan
            if not row["no_ci"]:
                low, high = block_bootstrap_ci(blocks, transforms, fn, n_boot, seed=k)
            row[f"{name}_low"], row[f"{name}_high"] = low, high
        if opt != candidate and candidate in values:
            p, low, high = probability_of_improvement(values[candidate], values[opt], n_boot, seed=k)
            if row["no_ci"] or no_ci_reason(int(marks.loc[candidate, "missing"]), _fewest(g, candidate)):
                low = high = np.nan
            row["p_candidate_better"], row["p_low"], row["p_high"] = p, low, high
        rows.append(row)
    table = pd.DataFrame(rows)
    ranked = means[[o for o in optimizers if not marks.loc[o, "no_run_on"]]]
    ranks, fried = pd.Series(dtype=float), None
    if ranked.shape[1] >= 3 and ranked.shape[0] >= MIN_RANK_DATASETS:
        ranks = average_ranks(ranked)
        table["avg_rank"] = table["optimizer"].map(ranks)
        fried = friedman(ranked)
        if np.isnan(fried[0]):  # all optimizers tie on every dataset: nothing to test
            fried = None
    return {
        "table": table,
        "means": means,
        "ranked": ranked,
        "ranks": ranks,
        "friedman": fried,
        "datasets": list(means.index),
        "best": best,
    }


def _fewest(g: pd.DataFrame, optimizer: str) -> int:
    return int(g[g["optimizer"] == optimizer].groupby("dataset").size().min())


def average_ranks(means: pd.DataFrame) -> pd.Series:
    """Mean over datasets of each optimizer's rank (1 = highest accuracy; ties share the average)."""
    return means.rank(axis=1, ascending=False, method="average").mean().sort_values()


def friedman(means: pd.DataFrame) -> tuple[float, float]:
    """(statistic, p-value) of the Friedman test over datasets (blocks) and optimizers (treatments)."""
    with np.errstate(invalid="ignore", divide="ignore"):  # every dataset a tie: no statistic (nan), said so
        result = stats.friedmanchisquare(*[means[c].to_numpy() for c in means.columns])
    return float(result.statistic), float(result.pvalue)


def profile_within(means: pd.DataFrame, taus=TAUS) -> pd.DataFrame:
    """taus x optimizers: the share of datasets with mean accuracy >= best - tau."""
    gap = means.max(axis=1).to_numpy()[:, None] - means.to_numpy()
    return pd.DataFrame([(gap <= t + 1e-12).mean(axis=0) for t in taus], index=taus, columns=means.columns)
