"""Tables, paired statistics and figures from any results folder.

    python -m runners.report <results_dir> [--out results/<name>] [--baseline adam] [--candidate thermolion]

Reads every run folder below ``results_dir`` (a folder with ``run.json``). Only complete runs
(``DONE`` present, status ``done``) enter the numbers; running, killed, failed and diverged runs
are counted and listed in ``README.md`` and ``summary.json``, never mixed in. Writes, per protocol
found, into ``<out>/<protocol>/``:

* ``table_final.{csv,md,tex}``: datasets x optimizers, final eval accuracy mean ± std over seeds
  (n shown where it differs), best per row in bold. The paper protocol's eval accuracy is on
  the training subset, as the paper reported; the rigorous protocol's on the test split.
* ``stats.{csv,md}``: the candidate (ThermoLion) against every other optimizer per dataset, paired
  by seed: mean difference, bootstrap 95% CI, paired t-test and Wilcoxon p-values, both
  Holm-corrected across datasets (per baseline), and a win/tie/loss count.
* ``convergence.{png,pdf}``: per dataset, training loss (log axis) and eval accuracy per epoch,
  mean ± std band over seeds, one colour per optimizer throughout.
* ``thermolion_phase.png``: ThermoLion's gate mean, gas fraction, alignment rate and temperature.
* ``overhead.md``: median optimizer step time relative to the baseline (default Adam).

and ``<out>/paper_comparison.md`` (our paper-protocol numbers next to the paper's) and
``<out>/summary.json`` (all of the above, machine-readable).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from thermolion import OPTIMIZERS, PAPER_OPTIMIZERS

from .data import DATASETS, PAPER_DATASETS
from .io import write_json, write_text

__all__ = ["ReportError", "collect_runs", "final_table", "paired_stats", "holm", "build_report", "main"]

# The figures the source documents report (paper protocol, accuracy on the training subset, %).
PAPER_FIGURES = [("gtsrb", "thermolion", 87.98), ("gtsrb", "adam", 67.38),
                 ("cifar10", "thermolion", 74.60), ("cifar10", "adam", 54.60),
                 ("mnist", "thermolion", 99.9)]
DATASET_ORDER = list(PAPER_DATASETS) + [d for d in DATASETS if d not in PAPER_DATASETS]
OPTIMIZER_ORDER = list(PAPER_OPTIMIZERS) + [o for o in OPTIMIZERS if o not in PAPER_OPTIMIZERS]
ALPHA = 0.05
TIE_POINTS = 0.05  # |mean difference| below this many accuracy points is a tie when untestable


class ReportError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- loading
def collect_runs(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(runs, epochs, excluded): one row per complete run, one per (run, epoch), and the rest."""
    runs, epochs, excluded = [], [], []
    for info_path in sorted(Path(results_dir).rglob("run.json")):
        run_dir = info_path.parent
        if any(part.startswith(".") for part in run_dir.relative_to(results_dir).parts):
            continue  # Hydra's own folders
        try:
            info = json.loads(info_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            excluded.append({"run_dir": str(run_dir), "status": "unreadable", "reason": str(err)})
            continue
        status = info.get("status", "unknown")
        if status != "done" or not (run_dir / "DONE").exists():
            reason = info.get("error") or (f"diverged at epoch {info.get('diverged_at_epoch')}"
                                           if status == "diverged" else "no DONE marker (running or killed)")
            excluded.append({"run_dir": str(run_dir), "status": status, "reason": reason})
            continue
        cfg = info["config"]
        # Folder "<optimizer>[_<overrides>][+<settings>]": runs with other settings (epochs, label
        # noise, ...) form their own section "<protocol>+<settings>", never mixed with the defaults.
        optimizer, _, settings = run_dir.parent.name.partition("+")
        key = {"protocol": cfg["protocol"] + (f"+{settings}" if settings else ""), "dataset": cfg["data"]["name"],
               "optimizer": optimizer, "optimizer_name": cfg["optimizer"]["name"], "seed": int(cfg["seed"])}
        metrics, problem = _read_metrics(run_dir / "metrics.csv", info.get("epochs_done"))
        if problem:
            excluded.append({"run_dir": str(run_dir), "status": "unreadable", "reason": problem})
            continue
        last = metrics.iloc[-1]
        runs.append({**key, "run_dir": str(run_dir), "lr": float(cfg["optimizer"].get("lr", math.nan)),
                     "tuned_from": cfg.get("tuned_from"), "code_version": info.get("code_version") or "unrecorded",
                     "final_eval_acc": float(last["eval_acc"]),
                     "final_eval_loss": float(last["eval_loss"]), "final_train_loss": float(last["train_loss"]),
                     "final_train_acc": float(last["train_acc"]), "epochs": len(metrics),
                     "step_time_ms": float(metrics["step_time_ms"].median()),
                     "eval_split": info.get("sizes", {}).get("eval_split"), "notes": info.get("data_notes", [])})
        for _, row in metrics.iterrows():
            epochs.append({**key, **row.to_dict()})
    return pd.DataFrame(runs), pd.DataFrame(epochs), excluded


def _read_metrics(path: Path, epochs_done) -> tuple[Optional[pd.DataFrame], Optional[str]]:
    """(metrics, None), or (None, why) when the file is missing, unparsable or truncated."""
    try:
        metrics = pd.read_csv(path)
    except (OSError, ValueError) as err:  # pandas' EmptyDataError and ParserError are ValueErrors
        return None, f"metrics.csv unreadable ({type(err).__name__}: {err})"
    needed = ["epoch", "train_loss", "train_acc", "eval_loss", "eval_acc"]
    missing = [c for c in needed if c not in metrics.columns]
    if missing or metrics.empty:
        return None, f"metrics.csv truncated: no {missing or 'rows'}"
    if epochs_done is not None and len(metrics) != epochs_done:
        return None, f"metrics.csv truncated: {len(metrics)} rows, run.json records {epochs_done} epochs"
    if metrics.isna().any().any():  # the trainer writes every column of every row
        return None, "metrics.csv truncated: a row has missing values"
    return metrics, None


def _ordered(values, order) -> list:
    """Distinct values in ``order``; a name like ``adamw_lr=0.01`` sorts with its longest known prefix."""
    rank = {name: i for i, name in enumerate(order)}

    def key(v):
        prefixes = [n for n in order if v.startswith(n)]
        return (rank[max(prefixes, key=len)] if prefixes else len(order), v)

    return sorted(dict.fromkeys(values), key=key)


# ----------------------------------------------------------------------------- tables
def final_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Long table: one row per (dataset, optimizer) with mean, std, n and whether it is the row's best."""
    g = runs.groupby(["dataset", "optimizer"])["final_eval_acc"]
    table = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}).reset_index()
    table["best"] = table["mean"] == table.groupby("dataset")["mean"].transform("max")
    return table


def _cell(mean: float, std: float, n: int, show_n: bool) -> str:
    text = f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"
    return f"{text} (n={n})" if show_n else text


def _wide(table: pd.DataFrame, bold: tuple[str, str]) -> tuple[list[str], list[str], list[list[str]]]:
    datasets = _ordered(table["dataset"], DATASET_ORDER)
    optimizers = _ordered(table["optimizer"], OPTIMIZER_ORDER)
    show_n = table["n"].nunique() > 1
    rows = []
    for d in datasets:
        row = []
        for o in optimizers:
            hit = table[(table["dataset"] == d) & (table["optimizer"] == o)]
            if hit.empty:
                row.append("–")
                continue
            r = hit.iloc[0]
            text = _cell(r["mean"], r["std"], int(r["n"]), show_n)
            row.append(f"{bold[0]}{text}{bold[1]}" if r["best"] else text)
        rows.append(row)
    return datasets, optimizers, rows


def _num(v) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.3g}"
    return str(v)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def code_versions_note(versions: pd.Series) -> str:
    """One line naming the code versions behind a table, with a warning when there are several."""
    counts = versions.value_counts()
    text = "Code version(s): " + ", ".join(f"`{v}` ({n} runs)" for v, n in counts.items()) + "."
    if versions.str.partition("+")[0].nunique() > 1:  # "+..." is a plug-in's own source: not a mix
        text += (" **Warning: this table mixes runs from different code.** Re-run the old ones with "
                 "`rerun=stale` on the same sweep command.")
    return text


def write_final_tables(table: pd.DataFrame, out: Path, protocol: str, versions: pd.Series) -> None:
    base = protocol.partition("+")[0]
    what = ("accuracy on the training subset (as the paper)" if base == "paper"
            else "test accuracy" if base == "rigorous" else "validation accuracy")
    datasets, optimizers, rows = _wide(table, ("**", "**"))
    md = (f"# Final {what}, %, mean ± std over seeds ({protocol} protocol)\n\n"
          f"Best per row in bold. {code_versions_note(versions)}\n\n"
          + markdown_table(["dataset"] + optimizers, [[d] + r for d, r in zip(datasets, rows)]))
    write_text(out / "table_final.md", md)
    csv_table = table.assign(protocol=protocol)[["protocol", "dataset", "optimizer", "mean", "std", "n", "best"]]
    write_text(out / "table_final.csv", csv_table.to_csv(index=False))
    _, _, tex_rows = _wide(table, (r"\textbf{", "}"))
    tex = [r"\begin{tabular}{l" + "r" * len(optimizers) + "}", r"\toprule",
           " & ".join(["dataset"] + [o.replace("_", r"\_") for o in optimizers]) + r" \\", r"\midrule"]
    tex += [" & ".join([d] + [c.replace("±", r"$\pm$").replace("_", r"\_") for c in r]) + r" \\"
            for d, r in zip(datasets, tex_rows)]
    tex += [r"\bottomrule", r"\end{tabular}"]
    write_text(out / "table_final.tex", f"% Final {what} (%), {protocol} protocol\n" + "\n".join(tex) + "\n")


# ----------------------------------------------------------------------------- statistics
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
            row = {"dataset": dataset, "candidate": candidate, "baseline": other, "n": n,
                   "candidate_mean": pair[candidate].mean(), "baseline_mean": pair[other].mean(),
                   "mean_diff": diff.mean(), "ci_low": np.nan, "ci_high": np.nan,
                   "p_ttest": np.nan, "p_wilcoxon": np.nan}
            if n >= 2 and np.ptp(diff) > 0:
                ci = stats.bootstrap((diff,), np.mean, confidence_level=0.95, n_resamples=9999,
                                     method="percentile", random_state=seed).confidence_interval
                row.update(ci_low=ci.low, ci_high=ci.high, p_ttest=stats.ttest_rel(pair[candidate], pair[other]).pvalue,
                           p_wilcoxon=stats.wilcoxon(diff).pvalue)
            elif n >= 2:  # identical differences: no spread, so no test
                row.update(ci_low=diff[0], ci_high=diff[0])
            rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for col in ("p_ttest", "p_wilcoxon"):
        df[col + "_holm"] = df.groupby("baseline")[col].transform(lambda s: pd.Series(holm(s.to_numpy()), index=s.index))
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
    cols = ["dataset", "baseline", "n", "mean_diff", "ci_low", "ci_high", "p_ttest", "p_ttest_holm",
            "p_wilcoxon", "p_wilcoxon_holm", "outcome"]
    md = [f"# {candidate} vs each baseline, paired by seed\n",
          "Differences are accuracy points (candidate minus baseline). CI: bootstrap 95% (percentile). "
          "p-values: paired t-test and Wilcoxon signed-rank, Holm-corrected across datasets for each "
          f"baseline. Outcome: win/loss if the Holm-corrected t-test has p < {ALPHA}, else tie; with fewer "
          f"than 2 seeds, the sign of the difference (ties within {TIE_POINTS} points), marked untested.\n",
          markdown_table(cols, [[_num(getattr(r, c)) for c in cols] for r in df.itertuples()]),
          "\n## Win / tie / loss across datasets\n",
          markdown_table(["baseline", "win", "tie", "loss"], [[b, c["win"], c["tie"], c["loss"]] for b, c in counts.items()])]
    write_text(out / "stats.md", "\n".join(md))
    return counts


# ----------------------------------------------------------------------------- figures
def _colours(optimizers) -> dict:
    import matplotlib

    # One colour per optimizer in every figure of every report: tab10 in the paper's order,
    # ThermoLion in black so that it stands out, then the remaining entries and unknown labels.
    palette = [c for c in matplotlib.colormaps["tab10"].colors] + list(matplotlib.colormaps["Dark2"].colors)
    others = [o for o in OPTIMIZER_ORDER if o != "thermolion"]
    fixed = {"thermolion": "black", **{name: palette[i % len(palette)] for i, name in enumerate(others)}}
    extra = [o for o in optimizers if o not in fixed]
    return {**fixed, **{o: palette[(len(others) + i) % len(palette)] for i, o in enumerate(extra)}}


def _grid(n: int, rows_per: int = 1):
    import matplotlib.pyplot as plt

    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows * rows_per, cols, figsize=(5.2 * cols, 3.4 * rows * rows_per), squeeze=False)
    return fig, axes, cols


def plot_convergence(epochs: pd.DataFrame, out: Path, protocol: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = _ordered(epochs["dataset"], DATASET_ORDER)
    optimizers = _ordered(epochs["optimizer"], OPTIMIZER_ORDER)
    colour = _colours(optimizers)
    fig, axes, cols = _grid(len(datasets), rows_per=2)
    acc_label = "train-subset accuracy (%)" if protocol.startswith("paper") else "eval accuracy (%)"
    for k, dataset in enumerate(datasets):
        ax_loss, ax_acc = axes[2 * (k // cols), k % cols], axes[2 * (k // cols) + 1, k % cols]
        for opt in optimizers:
            sub = epochs[(epochs["dataset"] == dataset) & (epochs["optimizer"] == opt)]
            if sub.empty:
                continue
            for ax, col in ((ax_loss, "train_loss"), (ax_acc, "eval_acc")):
                g = sub.groupby("epoch")[col]
                mean, std = g.mean(), g.std(ddof=1).fillna(0.0)
                ax.plot(mean.index, mean.values, color=colour[opt], label=opt, lw=1.6)
                ax.fill_between(mean.index, (mean - std).values, (mean + std).values, color=colour[opt], alpha=0.18, lw=0)
        ax_loss.set_yscale("log")
        ax_loss.set_title(f"{dataset}: training loss", fontsize=11)
        ax_loss.set_ylabel("mean batch loss (log)")
        ax_acc.set_title(f"{dataset}: {acc_label.split(' (')[0]}", fontsize=11)
        ax_acc.set_ylabel(acc_label)
        ax_acc.set_xlabel("epoch")
        for ax in (ax_loss, ax_acc):
            ax.grid(True, alpha=0.3)
    for k in range(len(datasets), axes.shape[1] * (axes.shape[0] // 2)):
        axes[2 * (k // cols), k % cols].set_visible(False)
        axes[2 * (k // cols) + 1, k % cols].set_visible(False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(f"Convergence ({protocol} protocol): mean ± std over seeds")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False, fontsize=10)
    for ext in ("png", "pdf"):
        fig.savefig(out / f"convergence.{ext}", dpi=110, bbox_inches="tight")
    plt.close(fig)


PHASE_COLUMNS = [("gate_mean", "mean gate λ"), ("gas_fraction", "gas fraction (λ < 0.5)"),
                 ("alignment_rate", "alignment rate"), ("temperature", "temperature T")]


def plot_phase(epochs: pd.DataFrame, out: Path, candidate: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = epochs[epochs["optimizer_name"].str.startswith("thermolion")]
    if sub.empty or "gate_mean" not in sub.columns or sub["gate_mean"].isna().all():
        return False
    datasets = _ordered(sub["dataset"], DATASET_ORDER)
    fig, axes, cols = _grid(len(datasets))
    styles = ["-", "--", ":", "-."]
    colour = _colours(sub["optimizer"].unique())
    for k, dataset in enumerate(datasets):
        ax = axes[k // cols, k % cols]
        for opt in _ordered(sub["optimizer"], OPTIMIZER_ORDER):
            d = sub[(sub["dataset"] == dataset) & (sub["optimizer"] == opt)]
            if d.empty:
                continue
            for (col, label), ls in zip(PHASE_COLUMNS, styles):
                mean = d.groupby("epoch")[col].mean()
                ax.plot(mean.index, mean.values, ls, color=colour[opt], lw=1.6, label=f"{label} [{opt}]")
        ax.set_title(dataset, fontsize=11)
        ax.set_xlabel("epoch")
        ax.set_ylabel("per-epoch mean (0..1)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
    for k in range(len(datasets), axes.size):
        axes[k // cols, k % cols].set_visible(False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle("ThermoLion's phase per epoch (element-weighted, mean over seeds)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=4, frameon=False, fontsize=9)
    fig.savefig(out / "thermolion_phase.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- lr sensitivity, tuning
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
    return {"best_lr": float(10 ** x[b]), "best_acc": float(y[b]), "low_lr": float(10 ** lo),
            "high_lr": float(10 ** hi), "width_decades": float(hi - lo), "truncated": bool(cut_lo or cut_hi)}


def sensitivity(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean final accuracy per (dataset, optimizer, lr) for optimizers run at 3 or more lrs."""
    base = runs[runs["tuned_from"].isna()] if "tuned_from" in runs else runs
    # only runs that differ from the optimizer's defaults in the lr alone
    plain = [label == name or label.startswith(f"{name}_lr=") and "," not in label
             for label, name in zip(base["optimizer"], base["optimizer_name"])]
    base = base[plain]
    curves = base.groupby(["dataset", "optimizer_name", "lr"])["final_eval_acc"].agg(["mean", "std", "count"]).reset_index()
    counts = curves.groupby(["dataset", "optimizer_name"])["lr"].transform("count")
    return curves[counts >= 3]


def write_sensitivity(curves: pd.DataFrame, out: Path, protocol: str, candidate: str) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = _ordered(curves["dataset"], DATASET_ORDER)
    optimizers = _ordered(curves["optimizer_name"], OPTIMIZER_ORDER)
    colour = _colours(optimizers)
    fig, axes, cols = _grid(len(datasets))
    robust = []
    for k, dataset in enumerate(datasets):
        ax = axes[k // cols, k % cols]
        for opt in optimizers:
            c = curves[(curves["dataset"] == dataset) & (curves["optimizer_name"] == opt)].sort_values("lr")
            if c.empty:
                continue
            std = c["std"].fillna(0.0)
            ax.plot(c["lr"], c["mean"], "o-", color=colour[opt], label=opt, lw=1.6, ms=4)
            ax.fill_between(c["lr"], c["mean"] - std, c["mean"] + std, color=colour[opt], alpha=0.18, lw=0)
            robust.append({"dataset": dataset, "optimizer": opt, "lrs": int(len(c)),
                           "seeds": int(c["count"].min()), **lr_robustness(c["lr"].to_numpy(), c["mean"].to_numpy())})
        ax.set_xscale("log")
        ax.set_title(dataset, fontsize=11)
        ax.set_xlabel("learning rate (log)")
        ax.set_ylabel("final eval accuracy (%)")
        ax.grid(True, alpha=0.3, which="both")
    for k in range(len(datasets), axes.size):
        axes[k // cols, k % cols].set_visible(False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(f"Learning-rate sensitivity ({protocol}): mean ± std over seeds")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False, fontsize=10)
    fig.savefig(out / "lr_sensitivity.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    df = pd.DataFrame(robust)
    rows = [[r.dataset, r.optimizer, r.lrs, r.seeds, f"{r.best_lr:.3g}", f"{r.best_acc:.2f}",
             f"{r.low_lr:.3g} – {r.high_lr:.3g}", ("≥ " if r.truncated else "") + f"{r.width_decades:.2f}"]
            for r in df.itertuples()]
    text = [f"# Learning-rate sensitivity ({protocol})\n",
            f"Robustness: the width, in decades, of the lr interval around each optimizer's best lr where "
            f"its mean accuracy stays within {WITHIN_POINTS:g} point of that best (linear interpolation in "
            "log lr between grid points; ≥ where the interval reaches the end of the grid).\n",
            markdown_table(["dataset", "optimizer", "lrs", "seeds", "best lr", "best acc", "within 1 point",
                            "width (decades)"], rows), "\n## Verdict\n", _verdict(df, candidate)]
    write_text(out / "lr_sensitivity.md", "\n".join(text) + "\n")
    return robust


def _verdict(df: pd.DataFrame, candidate: str) -> str:
    if df.empty or candidate not in set(df["optimizer"]):
        return f"No sensitivity curve for {candidate} here."
    med = df.groupby("optimizer")["width_decades"].median()
    lines = []
    for other in [o for o in _ordered(med.index, OPTIMIZER_ORDER) if o != candidate]:
        gap = med[candidate] - med[other]
        word = ("less sensitive to the lr than" if gap > 0.25 else "more sensitive to the lr than" if gap < -0.25
                else "about as sensitive to the lr as")
        lines.append(f"- {candidate} stays within {WITHIN_POINTS:g} point of its best over {med[candidate]:.2f} "
                     f"decades of lr (median over datasets) against {med[other]:.2f} for {other}: "
                     f"**{word} {other}** (differences under 0.25 decades count as equal).")
    if df["truncated"].any():
        lines.append("- Some intervals reach the end of the lr grid (marked ≥): those widths are lower bounds.")
    return "\n".join(lines)


def write_tuned_table(runs: pd.DataFrame, out: Path, candidate: str) -> Optional[dict]:
    """Test accuracy of the re-runs at each optimizer's chosen lr (runs with ``tuned_from``)."""
    tuned = runs[runs["tuned_from"].notna()].copy() if "tuned_from" in runs else pd.DataFrame()
    if tuned.empty:
        return None
    tuned["optimizer"] = tuned["optimizer_name"]  # one column per optimizer, its chosen lr in the cell
    table = final_table(tuned)
    lrs = tuned.groupby(["dataset", "optimizer"])["lr"].first()
    table["lr"] = [lrs[(d, o)] for d, o in zip(table["dataset"], table["optimizer"])]
    datasets, optimizers, cells = _wide(table, ("**", "**"))
    cells = [[f"{c} @ lr {lrs.get((d, o), float('nan')):.3g}" if c != "–" else c for c, o in zip(row, optimizers)]
             for d, row in zip(datasets, cells)]
    source = sorted(tuned["tuned_from"].unique())
    meta = {}
    try:
        meta = json.loads(Path(source[0]).read_text())
    except (OSError, ValueError):
        pass
    st = paired_stats(tuned, candidate)
    write_text(out / "tuned_table.csv", table.to_csv(index=False))
    cols = ["dataset", "baseline", "n", "mean_diff", "ci_low", "ci_high", "p_ttest_holm", "p_wilcoxon_holm", "outcome"]
    text = ["# Tuned comparison: test accuracy (%) at each optimizer's chosen lr\n",
            f"Chosen lrs from {', '.join(source)}. Selection rule: {meta.get('rule', 'see that file')}. "
            f"Tuning seeds {meta.get('tuning_seeds', '?')}; re-run seeds {meta.get('rerun_seeds', '?')} (disjoint). "
            f"Equal budget for every optimizer: {meta.get('equal_budget', '?')}. "
            f"{code_versions_note(tuned['code_version'])}\n",
            markdown_table(["dataset"] + optimizers, [[d] + r for d, r in zip(datasets, cells)])]
    if not st.empty:
        text += [f"\n## {candidate} vs each baseline at their chosen lrs (paired by seed)\n",
                 markdown_table(cols, [[_num(getattr(r, c)) for c in cols] for r in st.itertuples()])]
    write_text(out / "tuned_table.md", "\n".join(text) + "\n")
    return {"table": table.to_dict(orient="records"), "stats": st.to_dict(orient="records"), "source": source}


# ----------------------------------------------------------------------------- overhead, paper
def write_overhead(runs: pd.DataFrame, out: Path, baseline: str) -> dict:
    med = runs.groupby("optimizer")["step_time_ms"].median()
    ref = med.get(baseline, np.nan)
    rows, data = [], {}
    for opt in _ordered(med.index, OPTIMIZER_ORDER):
        ratio = med[opt] / ref if ref and not math.isnan(ref) else float("nan")
        data[opt] = {"step_time_ms": float(med[opt]), f"ratio_to_{baseline}": float(ratio)}
        rows.append([opt, f"{med[opt]:.2f}", "–" if math.isnan(ratio) else f"{ratio:.2f}x"])
    text = (f"# Optimizer step time relative to {baseline}\n\nMedian over runs of each run's median "
            "`optimizer.step()` time, as recorded during training (same machine and settings as the runs; "
            "see scripts/bench_step.py for controlled measurements).\n\n"
            + markdown_table(["optimizer", "step (ms)", f"vs {baseline}"], rows))
    write_text(out / "overhead.md", text)
    return data


def write_paper_comparison(runs: pd.DataFrame, out: Path) -> list[dict]:
    paper = runs[runs["protocol"] == "paper"]
    rows = []
    for dataset, opt, figure in PAPER_FIGURES:
        ours = paper[(paper["dataset"] == dataset) & (paper["optimizer"] == opt)]["final_eval_acc"]
        rows.append({"dataset": dataset, "optimizer": opt, "paper": figure,
                     "ours_mean": float(ours.mean()) if len(ours) else None,
                     "ours_std": float(ours.std(ddof=1)) if len(ours) > 1 else None, "n": int(len(ours)),
                     "difference": float(ours.mean() - figure) if len(ours) else None})
    lines = ["# Our paper-protocol numbers next to the paper's\n",
             "Paper protocol: first 5000 training samples, 12 epochs, batch 1024, accuracy on that "
             "training subset (%). Paper figures from the source documents (one unseeded run each).\n"]
    table = [[r["dataset"], r["optimizer"], f"{r['paper']:.2f}",
              "not run" if r["ours_mean"] is None else _cell(r["ours_mean"], r["ours_std"] if r["ours_std"] is not None else float("nan"), r["n"], True),
              "–" if r["difference"] is None else f"{r['difference']:+.2f}"] for r in rows]
    lines.append(markdown_table(["dataset", "optimizer", "paper", "ours (mean ± std)", "ours − paper"], table))
    lines.append("\n## Do the claims reproduce?\n")
    for dataset in ("gtsrb", "cifar10"):
        t = next(r for r in rows if r["dataset"] == dataset and r["optimizer"] == "thermolion")
        a = next(r for r in rows if r["dataset"] == dataset and r["optimizer"] == "adam")
        if t["ours_mean"] is None or a["ours_mean"] is None:
            lines.append(f"- {dataset}: not run here (no complete paper-protocol runs of thermolion and adam).")
            continue
        gap_paper, gap_ours = t["paper"] - a["paper"], t["ours_mean"] - a["ours_mean"]
        verdict = "reproduced" if gap_ours > 0 and abs(gap_ours - gap_paper) <= 5 else (
            "direction reproduced, size not" if gap_ours > 0 else "not reproduced")
        lines.append(f"- {dataset}: paper ThermoLion − Adam = {gap_paper:+.2f} points; ours {gap_ours:+.2f} "
                     f"(n={min(t['n'], a['n'])}): **{verdict}** (reproduced = same sign and within 5 points).")
    m = next(r for r in rows if r["dataset"] == "mnist")
    if m["ours_mean"] is None:
        lines.append("- mnist sanity check (ThermoLion > 99.9%): not run here.")
    else:
        ok = m["ours_mean"] >= 99.9
        lines.append(f"- mnist sanity check (ThermoLion passes 99.9%): ours {m['ours_mean']:.2f}%: "
                     f"**{'reproduced' if ok else 'not reproduced'}**.")
    gtsrb = paper[paper["dataset"] == "gtsrb"]
    if not gtsrb.empty:
        lines.append("\nNote: " + "; ".join(sorted({n for notes in gtsrb["notes"] for n in notes if "GTSRB" in n})))
    write_text(out / "paper_comparison.md", "\n".join(lines) + "\n")
    return rows


# ----------------------------------------------------------------------------- driver
def build_report(results_dir: Path, out: Path, baseline: str = "adam", candidate: str = "thermolion",
                 command: Optional[str] = None) -> dict:
    results_dir, out = Path(results_dir), Path(out)
    if not results_dir.is_dir():
        raise ReportError(f"{results_dir} is not a folder; pass the results_dir of a sweep (e.g. outputs)")
    runs, epochs, excluded = collect_runs(results_dir)
    if runs.empty:
        raise ReportError(f"no complete runs under {results_dir} ({len(excluded)} incomplete, failed or "
                          "diverged); run a sweep first, e.g. python run.py -m optimizer=thermolion,adamw")
    out.mkdir(parents=True, exist_ok=True)
    summary = {"results_dir": str(results_dir), "command": command, "candidate": candidate, "baseline": baseline,
               "complete_runs": int(len(runs)), "excluded": excluded, "protocols": {}}
    for protocol, prun in runs.groupby("protocol"):
        pout = out / protocol
        pout.mkdir(parents=True, exist_ok=True)
        pep = epochs[epochs["protocol"] == protocol]
        tuned = write_tuned_table(prun, pout, candidate)
        prun = prun[prun["tuned_from"].isna()]  # the tuned re-runs have their own table
        if prun.empty:
            summary["protocols"][protocol] = {"tuned": tuned}
            continue
        table = final_table(prun)
        write_final_tables(table, pout, protocol, prun["code_version"])
        if prun["code_version"].str.partition("+")[0].nunique() > 1:
            print(f"report: warning: the {protocol} table mixes code versions "
                  f"{sorted(prun['code_version'].unique())}", file=sys.stderr)
        st = paired_stats(prun, candidate)
        counts = write_stats(st, pout, candidate) if not st.empty else {}
        plot_convergence(pep, pout, protocol)
        has_phase = plot_phase(pep, pout, candidate)
        overhead = write_overhead(prun, pout, baseline)
        curves = sensitivity(prun)
        robustness = write_sensitivity(curves, pout, protocol, candidate) if not curves.empty else []
        summary["protocols"][protocol] = {
            "tuned": tuned, "lr_robustness": robustness,
            "runs": int(len(prun)), "table": table.to_dict(orient="records"),
            "stats": st.to_dict(orient="records"), "win_tie_loss": counts, "overhead": overhead,
            "phase_figure": has_phase, "code_versions": prun["code_version"].value_counts().to_dict(),
        }
    summary["paper_comparison"] = write_paper_comparison(runs, out)
    write_json(out / "summary.json", summary)
    index = [f"# Report for `{results_dir}`\n", f"Command: `{command}`\n" if command else "",
             f"{len(runs)} complete run(s) in {', '.join(sorted(summary['protocols']))}; "
             f"{len(excluded)} excluded.\n"]
    if excluded:
        index.append(markdown_table(["run", "status", "reason"], [[e["run_dir"], e["status"], e["reason"]] for e in excluded]))
    index.append("\nFiles: `paper_comparison.md`, `summary.json`, and per protocol `table_final.{csv,md,tex}`, "
                 "`stats.{csv,md}`, `convergence.{png,pdf}`, `thermolion_phase.png`, `overhead.md`.\n")
    write_text(out / "README.md", "\n".join(index))
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runners.report", description=__doc__.splitlines()[0])
    ap.add_argument("results_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="default: <results_dir>/report")
    ap.add_argument("--baseline", default="adam", help="reference for overhead ratios (default adam)")
    ap.add_argument("--candidate", default="thermolion", help="optimizer compared against all others")
    args = ap.parse_args(argv)
    out = args.out or args.results_dir / "report"
    try:
        summary = build_report(args.results_dir, out, args.baseline, args.candidate,
                               command="python -m runners.report " + " ".join(argv if argv is not None else sys.argv[1:]))
    except ReportError as err:
        print(f"report: {err}", file=sys.stderr)
        return 2
    print(f"report: {summary['complete_runs']} complete run(s), {len(summary['excluded'])} excluded -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
