"""Self-tuning verdicts (AlgoPerf's self-tuning ruleset): every optimizer at its published defaults.

A section is a self-tuning study when all its runs use ``trainer.schedule=recipe`` (each optimizer
with its own published schedule, nothing tuned: ``+experiment=self_tuning``). It writes
``self_tuning.{md,png,csv}`` from the definitions of ``aggregate`` (scores, IQM, stratified bootstrap,
probability of improvement) and ``time_to_target`` (targets, performance ratios, AlgoPerf score):

* IQM of the run scores with its 95% stratified-bootstrap CI, per dataset and across datasets;
* P(rival > candidate) per dataset and averaged over datasets, with its bootstrap CI;
* the time-to-target performance profile and AlgoPerf benchmark score (target: the reference's median);
* where the results folder also holds a tunability study's tuned re-runs of AdamW (``tuned_from``) on
  the same dataset, split and data budget, each default's mean accuracy minus tuned AdamW's;
* a verdict written from those numbers: a rival "beats" the candidate when its P's CI lies above
  0.5 across datasets, "loses" when it lies below, else the two are not told apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..atomic import write_text  # noqa: E402
from .aggregate import (  # noqa: E402
    N_BOOT,
    cross_dataset,
    iqm,
    no_ci_reason,
    probability_of_improvement,
    stratified_bootstrap_ci,
)
from .blocks import block_means, grid, mark  # noqa: E402
from .collect import OPTIMIZER_ORDER, _ordered  # noqa: E402
from .palette import styles  # noqa: E402
from .paths import section_heading, section_title  # noqa: E402
from .tables import markdown_table  # noqa: E402
from .time_to_target import (  # noqa: E402
    TAU_MAX,
    benchmark_score,
    missed,
    performance_ratios,
    profile,
    run_times,
    targets,
)

__all__ = ["is_self_tuning", "write_self_tuning", "tuned_reference"]

ALL = "all datasets"


def is_self_tuning(runs: pd.DataFrame) -> bool:
    return "schedule" in runs and bool(len(runs)) and bool((runs["schedule"] == "recipe").all())


def tuned_reference(all_runs: pd.DataFrame, section_runs: pd.DataFrame, reference: str = "adamw") -> pd.Series:
    """Mean accuracy per dataset of ``reference``'s tuned re-runs (runners.tuning) with the section's
    evaluation split and data budget (train_subset, batch size, epochs, image size), where any exist."""
    if "tuned_from" not in all_runs or "budget" not in all_runs:
        return pd.Series(dtype=float)
    budgets = set(section_runs["budget"])
    tuned = all_runs[
        all_runs["tuned_from"].notna()
        & (all_runs["optimizer_name"] == reference)
        & all_runs["budget"].isin(budgets)
        & all_runs["dataset"].isin(section_runs["dataset"].unique())
    ]
    return tuned.groupby("dataset")["final_eval_acc"].mean()


def write_self_tuning(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    out: Path,
    section: str,
    candidate: str,
    reference: str = "adamw",
    tuned: Optional[pd.Series] = None,
    attempts: Optional[pd.DataFrame] = None,
) -> Optional[dict]:
    """Writes self_tuning.{md,csv,png} for one self-tuning section; None when the candidate is absent."""
    if candidate not in set(runs["optimizer"]):
        return None
    g = grid(runs, attempts)  # the section's per-dataset blocks (runners/report/blocks.py)
    across = cross_dataset(g, candidate).get("table").set_index("optimizer")
    optimizers = _ordered(g["optimizer"], OPTIMIZER_ORDER)
    datasets = sorted(g["dataset"].unique())
    best, chance = block_means(g).max(axis=1), g.groupby("dataset")["chance"].first()
    acc = {o: {d: b["acc"].to_numpy() for d, b in g[g["optimizer"] == o].groupby("dataset")} for o in optimizers}
    missing = g[~g["counted"]].groupby(["optimizer", "dataset"]).size()
    rows = []
    for k, opt in enumerate(optimizers):
        mine = g[g["optimizer"] == opt]
        for scope in [*datasets, ALL]:
            s = mine if scope == ALL else mine[mine["dataset"] == scope]
            miss = int(missing.get(opt, pd.Series(dtype=int)).sum() if scope == ALL else missing.get((opt, scope), 0))
            row = {
                "scope": scope,
                "optimizer": opt,
                "runs": int(s["counted"].sum()),
                "diverged": int(((s["status"] == "diverged") & s["counted"]).sum()),
                "missing": miss,
            }
            if scope == ALL:  # each dataset once: its block's mean, then across datasets
                a = across.loc[opt]
                row.update(mean_acc=float(s.groupby("dataset")["acc"].mean().mean()), iqm=a["iqm"])
                row.update(iqm_low=a["iqm_low"], iqm_high=a["iqm_high"], no_ci=a["no_ci"])
            else:
                span = best[scope] - chance[scope]
                score = (s["acc"] - chance[scope]) / span if span > 0 else s["acc"] * 0.0
                row.update(mean_acc=float(s["acc"].mean()), iqm=float(iqm(score)), no_ci=no_ci_reason(miss, len(s)))
                low, high = (
                    (np.nan, np.nan) if row["no_ci"] else stratified_bootstrap_ci(score, s["dataset"], iqm, seed=k)
                )
                row.update(iqm_low=low, iqm_high=high)
            if opt != candidate:
                x = acc[opt] if scope == ALL else {scope: acc[opt][scope]}
                y = acc[candidate] if scope == ALL else {scope: acc[candidate][scope]}
                row["poi"], row["poi_low"], row["poi_high"] = probability_of_improvement(x, y, seed=k)
                theirs = int(
                    missing.get(candidate, pd.Series(dtype=int)).sum()
                    if scope == ALL
                    else missing.get((candidate, scope), 0)
                )
                if row["no_ci"] or no_ci_reason(theirs, len(s)):
                    row["poi_low"] = row["poi_high"] = np.nan
            if tuned is not None and scope in tuned.index:
                row["minus_tuned_" + reference] = row["mean_acc"] - float(tuned[scope])
            rows.append(row)
    table = pd.DataFrame(rows)
    target_of = targets(runs, reference)
    times = run_times(runs[runs["dataset"].isin(target_of)], curves, target_of) if target_of else pd.DataFrame()
    if target_of:  # a miss never reaches the target (blocks.py)
        times = pd.concat([times, missed(runs, attempts, target_of)], ignore_index=True)
    ratios = performance_ratios(times) if not times.empty else pd.DataFrame()
    score = benchmark_score(ratios) if not ratios.empty else pd.Series(dtype=float)
    table["algoperf_score"] = table["optimizer"].map(score).where(table["scope"] == ALL)
    write_text(out / "self_tuning.csv", table.to_csv(index=False))
    _plot(table, ratios, score, optimizers, candidate, out, section)
    verdict = _verdict(table, score, candidate, datasets, tuned, reference)
    write_text(out / "self_tuning.md", _markdown(table, score, target_of, candidate, reference, section, verdict))
    return {"table": table.to_dict(orient="records"), "algoperf_score": score.to_dict(), "verdict": verdict}


def _ci(v, low, high, digits=2, why="") -> str:
    if pd.isna(v):
        return "–"
    if pd.isna(low):  # blocks.py's rule gives no interval here
        return f"{v:.{digits}f} (no CI{': ' + why if why else ''})"
    return f"{v:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _markdown(table, score, target_of, candidate, reference, section, verdict) -> str:
    tuned_col = "minus_tuned_" + reference
    header = ["optimizer", "runs (diverged)", "mean acc", "IQM score [95% CI]", f"P(X > {candidate}) [95% CI]"]
    if tuned_col in table:
        header.append(f"− tuned {reference} (points)")
    text = [
        section_heading("Self-tuning, every optimizer at its published defaults", section),
        "One fixed configuration per optimizer for every dataset (AlgoPerf's self-tuning ruleset), each with "
        "its own published schedule (trainer.schedule=recipe). The runs counted are the section's per-dataset "
        "blocks (runners/report/blocks.py): a seed any optimizer ran on a dataset is owed by every optimizer, and "
        "a miss (failed, interrupted, never run) counts at chance like a diverged run, marked `(k missing)`, with "
        "no interval. Score of a run: (accuracy − chance) / (best optimizer's block mean − chance) on its "
        "dataset; per dataset, IQM = mean of the middle 50% of the runs' scores; across datasets, the IQM of "
        "the datasets' scores, each dataset once (as in aggregate.md); 95% CIs from a bootstrap of runs "
        f"within datasets ({N_BOOT} resamples). P(X > "
        f"{candidate}): the chance that a run of X beats a run of {candidate} on the same dataset, averaged "
        "over datasets; 0.5 = no difference.\n",
        "## Verdict\n",
        verdict + "\n",
    ]
    for scope in [ALL, *[s for s in table["scope"].unique() if s != ALL]]:
        part = table[table["scope"] == scope]
        lines = []
        for r in part.itertuples():
            cells = [
                mark(r.optimizer, r.missing),
                f"{r.runs} ({r.diverged})",
                f"{r.mean_acc:.2f}",
                _ci(r.iqm, r.iqm_low, r.iqm_high, 3, r.no_ci),
                _ci(getattr(r, "poi", np.nan), getattr(r, "poi_low", np.nan), getattr(r, "poi_high", np.nan)),
            ]
            if tuned_col in table:
                v = getattr(r, tuned_col)
                cells.append("–" if pd.isna(v) else f"{v:+.2f}")
            lines.append(cells)
        text += [f"## {scope}\n", markdown_table(header, lines)]
    text.append("## Time to target (AlgoPerf)\n")
    if score.empty:
        text.append(f"No target: {reference} has no runs here.\n")
    else:
        text.append(
            "Target per dataset: the median final accuracy of "
            + f"{reference} ("
            + ", ".join(f"{d} {t:.2f}%" for d, t in sorted(target_of.items()))
            + "). Performance ratio = median steps to the target / the fastest optimizer's; the AlgoPerf score "
            f"integrates the share of datasets within ratio τ from 1 to {TAU_MAX:g} (1 = fastest everywhere, "
            "0 = never within 4x). Profiles in self_tuning.png.\n"
        )
        ranked = score.sort_values(ascending=False)
        text.append(markdown_table(["optimizer", "AlgoPerf score"], [[o, f"{v:.3f}"] for o, v in ranked.items()]))
    return "\n".join(text)


def _verdict(table, score, candidate, datasets, tuned, reference) -> str:
    pooled = table[table["scope"] == ALL].set_index("optimizer")
    rivals = pooled.drop(index=candidate)
    if "poi" not in rivals:
        return f"No rival shares a dataset with {candidate}: nothing to compare."
    beats = rivals[rivals["poi_low"] > 0.5].index.tolist()
    loses = rivals[rivals["poi_high"] < 0.5].index.tolist()
    ties = [o for o in rivals.index if o not in beats + loses]
    best = pooled["iqm"].idxmax()
    me = pooled.loc[candidate]
    parts = [
        f"Over {len(datasets)} dataset(s) ({', '.join(datasets)}), {candidate}'s IQM score is "
        f"{_ci(me['iqm'], me['iqm_low'], me['iqm_high'], 3, me['no_ci'])}; the highest is {best}'s "
        f"({pooled.loc[best, 'iqm']:.3f})."
    ]
    if beats:
        parts.append(
            "Rivals whose runs beat "
            f"{candidate}'s (P's CI above 0.5): "
            + ", ".join(f"{o} (P = {rivals.loc[o, 'poi']:.2f})" for o in beats)
            + "."
        )
    if loses:
        parts.append(f"Rivals {candidate} beats (P's CI below 0.5): {', '.join(loses)}.")
    if ties:
        parts.append(f"Not told apart from {candidate} with these runs: {', '.join(ties)}.")
    if not score.empty and candidate in score:
        order = score.sort_values(ascending=False)
        parts.append(
            f"AlgoPerf score (time to target): {candidate} {score[candidate]:.3f}, rank "
            f"{list(order.index).index(candidate) + 1} of {len(order)} (best {order.index[0]}, {order.iloc[0]:.3f})."
        )
    if tuned is not None and len(tuned) and "minus_tuned_" + reference in pooled:
        gap = table[(table["scope"] != ALL) & (table["optimizer"] == candidate)]["minus_tuned_" + reference]
        parts.append(
            f"Against tuned {reference} on {int(gap.notna().sum())} dataset(s), {candidate}'s defaults are "
            f"{gap.mean():+.2f} points on average."
        )
    claim = (
        f"So the claim that {candidate} needs no tuning to lead holds against these rivals: none beats it."
        if not beats
        else f"So the claim that {candidate} needs no tuning to lead does not hold here: "
        f"{len(beats)} rival(s) at their own defaults beat it."
    )
    parts.append(claim)
    seeds = int(table[table["scope"] != ALL]["runs"].min())
    if seeds < 6:
        parts.append(
            f"With {seeds} run(s) a dataset the bootstrap intervals understate the uncertainty (stats.md's paired "
            "t-intervals are the conservative check), so a rival that 'beats' here is a lead, not a settled result."
        )
    return " ".join(parts)


def _plot(table, ratios, score, optimizers, candidate, out: Path, section: str) -> None:
    style = styles(optimizers)
    colour = {k: v["color"] for k, v in style.items()}
    pooled = table[table["scope"] == ALL].set_index("optimizer").reindex(optimizers)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    y = np.arange(len(optimizers))
    ax = axes[0]
    for i, o in enumerate(optimizers):
        r = pooled.loc[o]
        ax.errorbar(r["iqm"], i, xerr=[[r["iqm"] - r["iqm_low"]], [r["iqm_high"] - r["iqm"]]], fmt="o", color=colour[o])
    marked = [mark(o, int(pooled.loc[o, "missing"])) for o in optimizers]  # an incomplete block, named
    ax.set(yticks=y, yticklabels=marked, xlabel="IQM score (95% CI where complete)", title="IQM across datasets")
    ax.invert_yaxis()
    ax = axes[1]
    rivals = [o for o in optimizers if o != candidate and "poi" in pooled and not pd.isna(pooled.loc[o, "poi"])]
    for i, o in enumerate(rivals):
        r = pooled.loc[o]
        ax.errorbar(r["poi"], i, xerr=[[r["poi"] - r["poi_low"]], [r["poi_high"] - r["poi"]]], fmt="o", color=colour[o])
    ax.axvline(0.5, color="grey", lw=0.8, ls="--")
    labels = [mark(o, int(pooled.loc[o, "missing"])) for o in rivals]
    ax.set(yticks=np.arange(len(rivals)), yticklabels=labels, xlim=(0, 1), xlabel=f"P(X > {candidate})")
    ax.set_title(f"probability of improvement over {candidate}")
    ax.invert_yaxis()
    ax = axes[2]
    if not ratios.empty:
        taus = np.linspace(1.0, TAU_MAX, 301)
        prof = profile(ratios, taus)
        for o in _ordered(prof.columns, optimizers):
            ax.step(
                taus,
                prof[o],
                where="post",
                color=colour[o],
                ls=style[o]["linestyle"],
                label=f"{o} ({score.get(o, np.nan):.2f})",
            )
        ax.legend(fontsize=7, loc="lower right")
    ax.set(xlabel="τ (steps to target / fastest)", ylabel="share of datasets", ylim=(-0.02, 1.02))
    ax.set_title("time-to-target profile (AlgoPerf score)")
    fig.suptitle(f"Self-tuning, published defaults ({section_title(section)})")
    fig.tight_layout()
    fig.savefig(out / "self_tuning.png", dpi=120)
    plt.close(fig)
