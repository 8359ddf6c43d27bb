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

``cross_dataset`` computes (tables from tables); ``write_aggregate`` renders its result.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from scipy import stats

from ..atomic import write_text
from .blocks import block_means, grid, left_out_datasets, mark, misses
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
    "cross_dataset",
    "render_aggregate",
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


def write_aggregate(
    runs: pd.DataFrame, out: Path, section: str, candidate: str, attempts: Optional[pd.DataFrame] = None
) -> dict:
    """aggregate.{csv,md,png} and critical_difference.png of one section; returns its summary."""
    g = grid(runs, attempts)
    result = cross_dataset(g, candidate)
    table, ranked, ranks, fried = result["table"], result["ranked"], result["ranks"], result["friedman"]
    label = dict(zip(table["optimizer"], (mark(o, n) for o, n in zip(table["optimizer"], table["missing"]))))
    if fried is None and len(ranks):  # enough datasets, but every optimizer ties on every one
        cd = {"nemenyi": None, "note": "No critical-difference diagram: every optimizer ties on every dataset."}
    else:
        cd = _critical_difference(ranked, ranks, out, label)
    write_text(out / "aggregate.csv", table.to_csv(index=False))
    _plot(
        table.assign(label=table["optimizer"].map(label)),
        profile_within(ranked) if not ranked.empty else None,
        out,
        section,
    )
    write_text(
        out / "aggregate.md", render_aggregate(result, section, candidate, left_out_datasets(runs, attempts), cd)
    )
    return {
        "table": table.astype(object).where(table.notna(), None).to_dict(orient="records"),
        "ranks": ranks.to_dict(),
        "friedman": None if fried is None else {"statistic": fried[0], "p": fried[1]},
        "datasets": result["datasets"],
        **cd,
    }


def render_aggregate(result: dict, section: str, candidate: str, left_out: list, cd: dict) -> str:
    """aggregate.md from ``cross_dataset``'s result."""
    table, ranked, ranks, fried = result["table"], result["ranked"], result["ranks"], result["friedman"]

    def ci(r, name, digits=3):  # no interval where blocks.py's rule gives none: the value, and why
        if r["no_ci"]:
            return f"{r[name]:.{digits}f} (no CI: {r['no_ci']})"
        return f"{r[name]:.{digits}f} [{r[name + '_low']:.{digits}f}, {r[name + '_high']:.{digits}f}]"

    header = ["optimizer", "runs (diverged)", "missing", "datasets", "mean [95% CI]", "median [95% CI]", "IQM [95% CI]"]
    if "avg_rank" in table:
        header.append("avg rank")
    if "p_candidate_better" in table:
        header.append(f"P({candidate} > X) [95% CI]")
    ours = table[table["optimizer"] == candidate]
    lines = []
    for _, r in table.iterrows():
        missing = f"{int(r['missing'])} ({r['missing_on']})" if r["missing"] else "0"
        cells = [mark(r["optimizer"], int(r["missing"])), f"{int(r['runs'])} ({int(r['diverged'])})", missing]
        cells += [int(r["datasets"]), ci(r, "mean"), ci(r, "median"), ci(r, "iqm")]
        if "avg_rank" in table:
            cells.append(_num(r.get("avg_rank", np.nan)))
        if "p_candidate_better" in table:
            if pd.isna(r.get("p_candidate_better")):
                cells.append("–")
            else:
                why = r["no_ci"] or (ours["no_ci"].iloc[0] if len(ours) else "")
                p = {"p": r["p_candidate_better"], "p_low": r["p_low"], "p_high": r["p_high"], "no_ci": why}
                cells.append(ci(p, "p", 2))
        lines.append(cells)
    n_runs = int(table["runs"].sum())
    text = [
        section_heading("Across datasets", section),
        f"{len(result['datasets'])} dataset(s), {n_runs} counted runs.\n",
        "Per-dataset blocks first (runners/report/blocks.py): the grid is every seed any optimizer attempted "
        "on each dataset, and each optimizer owes a run per cell. A miss (failed, interrupted or never run) "
        "counts at chance, as a diverged run does; an optimizer with misses is marked `(k missing)` and gets "
        "no interval, since its value is a bound, not an estimate. Score on a dataset: (block mean − chance) / "
        "(best block mean − chance), so 1 = the best optimizer's average and 0 = chance. Mean, median and IQM "
        f"(mean of the middle 50%) are over datasets, each once; 95% CIs from a bootstrap of runs within each "
        f"dataset block ({N_BOOT} resamples). P({candidate} > X): the chance that a run of {candidate} beats a "
        "run of X on the same dataset (Mann–Whitney U / nm), averaged over datasets; 0.5 means no difference. "
        f"No interval below {MIN_CI_RUNS} runs in a block.\n",
        markdown_table(header, lines),
    ]
    if left_out:
        text.append(f"\nLeft out, no optimizer has a counted run there: {', '.join(left_out)}.\n")
    text.append("\n## Ranks (Demšar 2006)\n")
    dropped = [o for o in table["optimizer"] if o not in ranked.columns]
    rank_note = f" No run at all on some dataset, so left out of the ranks: {', '.join(dropped)}." if dropped else ""
    if fried is None:
        text.append(
            f"Not enough for rank statistics: {ranked.shape[0]} dataset(s) × {ranked.shape[1]} "
            f"optimizer(s) (need ≥ {MIN_RANK_DATASETS} datasets and ≥ 3 optimizers run on all of them)"
            + (", or every optimizer ties on every dataset" if len(ranks) else "")
            + f".{rank_note}\n"
        )
    else:
        marks = dict(zip(table["optimizer"], table["missing"]))
        text.append(
            "Average rank by block mean (1 = best): "
            + ", ".join(f"{mark(o, int(marks[o]))} {v:.2f}" for o, v in ranks.items())
            + f". Friedman χ² = {fried[0]:.2f}, p = {fried[1]:.3g} over {ranked.shape[0]} datasets.{rank_note}\n"
        )
    text.append(cd["note"] + "\n")
    return "\n".join(text)


def _critical_difference(means: pd.DataFrame, ranks: pd.Series, out: Path, label: dict) -> dict:
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

    drawn = pvalues.rename(index=label, columns=label)  # an incomplete optimizer's mark on the diagram too
    palette = {label[o]: c for o, c in colours(ranks.index).items()}
    sp.critical_difference_diagram(ranks.rename(index=label), drawn, ax=ax, color_palette=palette)
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
        if r.iqm_low == r.iqm_low:  # an interval only where blocks.py's rule gives one
            ax.plot([r.iqm_low, r.iqm_high], [i, i], color=colour[r.optimizer], lw=6, alpha=0.5, solid_capstyle="butt")
        ax.plot([r.iqm], [i], "|", color="black", ms=14)
    ax.set_yticks(range(len(table)), table["label"])
    ax.invert_yaxis()
    ax.set_xlabel("IQM of the dataset scores (95% block-bootstrap CI)")
    bare = table[table["no_ci"] != ""]
    if len(bare):
        ax.text(
            0.5,
            -0.35,
            "no interval: " + "; ".join(f"{r.optimizer} ({r.no_ci})" for r in bare.itertuples()),
            transform=ax.transAxes,
            ha="center",
            fontsize=8,
            color="dimgrey",
            wrap=True,
        )
    ax.grid(True, axis="x", alpha=0.3)
    ax = axes[0, 1]
    if profile is not None:
        marked = dict(zip(table["optimizer"], table["label"]))
        for opt in profile.columns:
            s = style[opt]
            name = marked.get(opt, opt)  # an incomplete optimizer's mark here too
            ax.step(profile.index, profile[opt], where="post", color=s["color"], ls=s["linestyle"], label=name, lw=1.6)
        ax.set_xlabel("τ (accuracy points behind the best)")
        ax.set_ylabel("share of datasets within τ")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8, frameon=False)
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"Across datasets ({section_title(section)})")
    fig.tight_layout()
    fig.savefig(out / "aggregate.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
