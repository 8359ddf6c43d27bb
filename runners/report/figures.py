"""Convergence and ThermoLion-phase figures, with one colour per optimizer throughout."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .collect import DATASET_ORDER, OPTIMIZER_ORDER, _ordered
from .palette import styles
from .paths import section_title


def draw(ax, x, y, style: dict, label: str, lw: float = 1.6, **kw):
    """One line in its optimizer's style; markers only every few points, so that a long curve stays a line
    (and every point of a curve of three or fewer, where a line alone could hide a point)."""
    n = len(x)
    marker = style["marker"] or ("o" if n <= 3 else None)
    return ax.plot(
        x,
        y,
        color=style["color"],
        linestyle=style["linestyle"],
        marker=marker,
        markevery=max(1, n // 8),
        ms=4,
        lw=lw,
        label=label,
        **kw,
    )


def integer_ticks(ax) -> None:
    """Whole epochs only: a short run would otherwise show ticks at 1.2, 1.4, ..."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _grid(n: int, rows_per: int = 1):
    import matplotlib.pyplot as plt

    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows * rows_per, cols, figsize=(5.2 * cols, 3.4 * rows * rows_per), squeeze=False)
    return fig, axes, cols


def _finish_grid(fig, axes, used: int, cols: int, title: str, paths, bottom: float = 0.08, ncol: int = 6) -> None:
    """Hide the unused panels, put one legend under the grid, save to every path, close."""
    import matplotlib.pyplot as plt

    for k in range(used, axes.size):
        axes[k // cols, k % cols].set_visible(False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(title)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), ncol), frameon=False, fontsize=10)
    for path in paths:  # no creation date in a PDF: a rebuilt report's figure equals the first's byte for byte
        metadata = {"CreationDate": None} if str(path).endswith(".pdf") else None
        fig.savefig(path, dpi=110, bbox_inches="tight", metadata=metadata)
    plt.close(fig)


def plot_convergence(epochs: pd.DataFrame, out: Path, protocol: str) -> bool:
    """convergence.{png,pdf} of the counted runs (a diverged one at chance from its divergence, named in the
    legend); False (and no figure) when none has an epoch row."""
    if epochs.empty:
        return False
    import matplotlib

    matplotlib.use("Agg")

    datasets = _ordered(epochs["dataset"], DATASET_ORDER)
    optimizers = _ordered(epochs["optimizer"], OPTIMIZER_ORDER)
    style = styles(optimizers)
    fig, axes, cols = _grid(len(datasets), rows_per=2)
    acc_label = "train-subset accuracy (%)" if protocol.startswith("paper") else "eval accuracy (%)"
    for k, dataset in enumerate(datasets):
        ax_loss, ax_acc = axes[2 * (k // cols), k % cols], axes[2 * (k // cols) + 1, k % cols]
        for opt in optimizers:
            sub = epochs[(epochs["dataset"] == dataset) & (epochs["optimizer"] == opt)]
            if sub.empty:
                continue
            # a diverged run is in its curve as in the table: at chance from the epoch it diverged (collect.py)
            diverged = sub.loc[sub["at_chance"].eq(True), "run_dir"].nunique() if "at_chance" in sub else 0
            label = f"{opt} ({diverged} diverged: at chance)" if diverged else opt
            for ax, col in ((ax_loss, "train_loss"), (ax_acc, "eval_acc")):
                g = sub.groupby("epoch")[col]
                mean, std = g.mean(), g.std(ddof=1).fillna(0.0)
                draw(ax, mean.index, mean.values, style[opt], label)
                ax.fill_between(
                    mean.index, (mean - std).values, (mean + std).values, color=style[opt]["color"], alpha=0.14, lw=0
                )
        ax_loss.set_yscale("log")
        ax_loss.set_title(f"{dataset}: training loss", fontsize=11)
        ax_loss.set_ylabel("mean batch loss (log)")
        ax_acc.set_title(f"{dataset}: {acc_label.split(' (')[0]}", fontsize=11)
        ax_acc.set_ylabel(acc_label)
        ax_acc.set_xlabel("epoch")
        for ax in (ax_loss, ax_acc):
            ax.grid(True, alpha=0.3)
            integer_ticks(ax)
    for k in range(len(datasets), axes.shape[1] * (axes.shape[0] // 2)):
        axes[2 * (k // cols), k % cols].set_visible(False)
        axes[2 * (k // cols) + 1, k % cols].set_visible(False)
    _finish_grid(
        fig,
        axes,
        axes.size,
        cols,
        f"Convergence ({section_title(protocol)}): mean ± std over seeds",
        [out / "convergence.png", out / "convergence.pdf"],
        bottom=0.06,
    )
    return True


PHASE_COLUMNS = [
    ("gate_mean", "mean gate λ"),
    ("gas_fraction", "gas fraction (λ < 0.5)"),
    ("alignment_rate", "alignment rate"),
    ("temperature", "temperature T"),
]
# Colour names the diagnostic in both phase figures (PNG and page); line style the ThermoLion variant.
PHASE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")


def plot_phase(epochs: pd.DataFrame, out: Path, candidate: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")

    if epochs.empty:
        return False
    sub = epochs[epochs["optimizer_name"].str.startswith("thermolion")]
    if sub.empty or "gate_mean" not in sub.columns or sub["gate_mean"].isna().all():
        return False
    datasets = _ordered(sub["dataset"], DATASET_ORDER)
    fig, axes, cols = _grid(len(datasets))
    variant = styles(_ordered(sub["optimizer"], OPTIMIZER_ORDER))
    for k, dataset in enumerate(datasets):
        ax = axes[k // cols, k % cols]
        for opt in _ordered(sub["optimizer"], OPTIMIZER_ORDER):
            d = sub[(sub["dataset"] == dataset) & (sub["optimizer"] == opt)]
            if d.empty:
                continue
            for (col, label), colour in zip(PHASE_COLUMNS, PHASE_COLOURS):
                mean = d.groupby("epoch")[col].mean()
                shown = label if len(variant) == 1 else f"{label} [{opt}]"
                draw(ax, mean.index, mean.values, {**variant[opt], "color": colour}, shown)
        ax.set_title(dataset, fontsize=11)
        ax.set_xlabel("epoch")
        ax.set_ylabel("per-epoch mean (0..1)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
        integer_ticks(ax)
    _finish_grid(
        fig,
        axes,
        len(datasets),
        cols,
        "ThermoLion's phase per epoch (element-weighted, mean over seeds)",
        [out / "thermolion_phase.png"],
        bottom=0.1,
        ncol=4,
    )
    return True
