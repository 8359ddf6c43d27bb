"""Learning-rate sensitivity (robustness widths, verdict) and the tuned re-run table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ..atomic import write_text
from .collect import DATASET_ORDER, OPTIMIZER_ORDER, _ordered
from .figures import _finish_grid, _grid, draw
from .palette import styles
from .paths import section_heading, section_title, shown_path
from .stats import paired_stats
from .tables import _num, _wide, code_versions_note, final_table, markdown_table

WITHIN_POINTS = 1.0


def lr_robustness(lrs, accs, within: float = WITHIN_POINTS) -> dict:
    """Width in decades of the lr interval around the best lr whose accuracy stays within
    ``within`` points of the best, with linear interpolation in log10(lr) between grid points.
    ``truncated`` says the interval reaches the end of the grid (the true width may be larger)."""
    order = np.argsort(lrs)
    x = np.log10(np.asarray(lrs, dtype=float)[order])
    y = np.asarray(accs, dtype=float)[order]
    b = int(np.argmax(y))
    threshold = y[b] - within

    def edge(step: int) -> tuple[float, bool]:
        i = b
        while 0 <= i + step < len(y) and y[i + step] >= threshold:
            i += step
        j = i + step
        if not 0 <= j < len(y):
            return x[i], True
        return x[j] + (threshold - y[j]) / (y[i] - y[j]) * (x[i] - x[j]), False

    lo, cut_lo = edge(-1)
    hi, cut_hi = edge(+1)
    return {
        "best_lr": float(10 ** x[b]),
        "best_acc": float(y[b]),
        "low_lr": float(10**lo),
        "high_lr": float(10**hi),
        "width_decades": float(hi - lo),
        "truncated": bool(cut_lo or cut_hi),
    }


def sensitivity(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean final accuracy per (dataset, optimizer, lr) for optimizers run at 3 or more lrs."""
    base = runs[runs["tuned_from"].isna()] if "tuned_from" in runs else runs
    # only runs that differ from the optimizer's defaults in the lr alone
    plain = [
        label == name or label.startswith(f"{name}_lr=") and "," not in label
        for label, name in zip(base["optimizer"], base["optimizer_name"])
    ]
    base = base[plain]
    curves = (
        base.groupby(["dataset", "optimizer_name", "lr"])["final_eval_acc"].agg(["mean", "std", "count"]).reset_index()
    )
    counts = curves.groupby(["dataset", "optimizer_name"])["lr"].transform("count")
    return curves[counts >= 3]


def write_sensitivity(curves: pd.DataFrame, out: Path, protocol: str, candidate: str) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")

    datasets = _ordered(curves["dataset"], DATASET_ORDER)
    optimizers = _ordered(curves["optimizer_name"], OPTIMIZER_ORDER)
    style = styles(optimizers)
    fig, axes, cols = _grid(len(datasets))
    robust = []
    for k, dataset in enumerate(datasets):
        ax = axes[k // cols, k % cols]
        for opt in optimizers:
            c = curves[(curves["dataset"] == dataset) & (curves["optimizer_name"] == opt)].sort_values("lr")
            if c.empty:
                continue
            std = c["std"].fillna(0.0)
            draw(ax, c["lr"], c["mean"], {**style[opt], "marker": style[opt]["marker"] or "o"}, opt)
            ax.fill_between(c["lr"], c["mean"] - std, c["mean"] + std, color=style[opt]["color"], alpha=0.14, lw=0)
            robust.append(
                {
                    "dataset": dataset,
                    "optimizer": opt,
                    "lrs": int(len(c)),
                    "seeds": int(c["count"].min()),
                    **lr_robustness(c["lr"].to_numpy(), c["mean"].to_numpy()),
                }
            )
        ax.set_xscale("log")
        ax.set_title(dataset, fontsize=11)
        ax.set_xlabel("learning rate (log)")
        ax.set_ylabel("final eval accuracy (%)")
        ax.grid(True, alpha=0.3, which="both")
    _finish_grid(
        fig,
        axes,
        len(datasets),
        cols,
        f"Learning-rate sensitivity ({section_title(protocol)}): mean ± std over seeds",
        [out / "lr_sensitivity.png"],
    )

    df = pd.DataFrame(robust)
    rows = [
        [
            r.dataset,
            r.optimizer,
            r.lrs,
            r.seeds,
            f"{r.best_lr:.3g}",
            f"{r.best_acc:.2f}",
            f"{r.low_lr:.3g} – {r.high_lr:.3g}",
            ("≥ " if r.truncated else "") + f"{r.width_decades:.2f}",
        ]
        for r in df.itertuples()
    ]
    text = [
        section_heading("Learning-rate sensitivity", protocol),
        f"Robustness: the width, in decades, of the lr interval around each optimizer's best lr where "
        f"its mean accuracy stays within {WITHIN_POINTS:g} point of that best (linear interpolation in "
        "log lr between grid points; ≥ where the interval reaches the end of the grid).\n",
        markdown_table(
            ["dataset", "optimizer", "lrs", "seeds", "best lr", "best acc", "within 1 point", "width (decades)"], rows
        ),
        "\n## Verdict\n",
        _verdict(df, candidate),
    ]
    write_text(out / "lr_sensitivity.md", "\n".join(text) + "\n")
    return robust


def _verdict(df: pd.DataFrame, candidate: str) -> str:
    if df.empty or candidate not in set(df["optimizer"]):
        return f"No sensitivity curve for {candidate} here."
    med = df.groupby("optimizer")["width_decades"].median()
    lines = []
    for other in [o for o in _ordered(med.index, OPTIMIZER_ORDER) if o != candidate]:
        gap = med[candidate] - med[other]
        word = (
            "less sensitive to the lr than"
            if gap > 0.25
            else "more sensitive to the lr than"
            if gap < -0.25
            else "about as sensitive to the lr as"
        )
        lines.append(
            f"- {candidate} stays within {WITHIN_POINTS:g} point of its best over {med[candidate]:.2f} "
            f"decades of lr (median over datasets) against {med[other]:.2f} for {other}: "
            f"**{word} {other}** (differences under 0.25 decades count as equal)."
        )
    if df["truncated"].any():
        lines.append("- Some intervals reach the end of the lr grid (marked ≥): those widths are lower bounds.")
    return "\n".join(lines)


def write_tuned_table(runs: pd.DataFrame, out: Path, candidate: str) -> Optional[dict]:
    """Test accuracy of the re-runs at each optimizer's chosen configuration (runs with ``tuned_from``)."""
    tuned = runs[runs["tuned_from"].notna()].copy() if "tuned_from" in runs else pd.DataFrame()
    if tuned.empty:
        return None
    tuned["optimizer"] = tuned["optimizer_name"]  # one column per optimizer, its chosen lr in the cell
    table = final_table(tuned)
    lrs = tuned.groupby(["dataset", "optimizer"])["lr"].first()
    table["lr"] = [lrs[(d, o)] for d, o in zip(table["dataset"], table["optimizer"])]
    datasets, optimizers, cells = _wide(table, ("**", "**"))
    steps = tuned.groupby(["dataset", "optimizer"])["effective_lr"].median() if "effective_lr" in tuned else {}

    def at(c, d, o):
        lr, d_lr = lrs.get((d, o), float("nan")), steps.get((d, o), float("nan"))
        # an lr-free method's lr is a multiplier: its step size d·lr is what compares with the others' lr
        return f"{c} @ lr {lr:.3g}" + (f" (d·lr {d_lr:.3g})" if d_lr == d_lr and abs(d_lr - lr) > 1e-12 * lr else "")

    cells = [[at(c, d, o) if c != "–" else c for c, o in zip(row, optimizers)] for d, row in zip(datasets, cells)]
    files = sorted(tuned["tuned_from"].unique())
    source = [shown_path(f) for f in files]
    meta = {}
    try:
        meta = json.loads(Path(files[0]).read_text())
    except (OSError, ValueError):
        pass
    st = paired_stats(tuned, candidate)
    write_text(out / "tuned_table.csv", table.to_csv(index=False))
    cols = ["dataset", "baseline", "n", "mean_diff", "ci_low", "ci_high", "p_ttest_holm", "p_wilcoxon_holm", "outcome"]
    text = [
        "# Tuned comparison: test accuracy (%) at each optimizer's chosen configuration (its lr shown)\n",
        f"Chosen from {', '.join(source)}. Selection rule: {meta.get('rule', 'see that file')}. "
        f"Tuning seeds {meta.get('tuning_seeds', '?')}; re-run seeds {meta.get('rerun_seeds', '?')} (disjoint). "
        f"Equal budget for every optimizer: {meta.get('equal_budget', '?')}. "
        f"{code_versions_note(tuned['code_version'])}\n",
        markdown_table(["dataset"] + optimizers, [[d] + r for d, r in zip(datasets, cells)]),
    ]
    if not st.empty:
        text += [
            f"\n## {candidate} vs each baseline at their chosen configurations (paired by seed)\n",
            markdown_table(cols, [[_num(getattr(r, c)) for c in cols] for r in st.itertuples()]),
        ]
    write_text(out / "tuned_table.md", "\n".join(text) + "\n")
    return {"table": table.to_dict(orient="records"), "stats": st.to_dict(orient="records"), "source": source}
