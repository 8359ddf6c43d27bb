"""aggregate.{csv,md,png} and critical_difference.png: the files of ``aggregate.cross_dataset``'s result."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ..atomic import write_text
from .aggregate import MIN_CI_RUNS, MIN_DATASETS, MIN_RANK_DATASETS, N_BOOT, cross_dataset, profile_within
from .blocks import grid, left_out_datasets, mark
from .paths import section_heading, section_title
from .tables import _num, markdown_table

__all__ = ["write_aggregate", "render_aggregate"]


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
