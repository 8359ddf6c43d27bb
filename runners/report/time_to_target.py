"""Time-to-target and AlgoPerf's performance profiles and benchmark score.

* target per dataset: the median over seeds of the reference optimizer's final accuracy (AdamW by
  default), or a given number of accuracy points;
* a run's time-to-target: its first evaluation point (step, epoch, training seconds) at or above the
  target; infinity when it never gets there or diverged (runners.outcomes). Evaluation points are
  every few steps when every run of the section with points has evals.csv (trainer.eval_every_steps),
  else the ends of epochs;
* an optimizer's time on a dataset: the median over the seeds of the section's grid, a miss (a seed
  without a counted run, runners/report/blocks.py) at infinity (so infinity when most never arrive);
* performance ratio r = t / (the fastest optimizer's t on that dataset); profile rho(tau) = share of
  datasets with r <= tau; benchmark score = integral of rho from 1 to 4, divided by 3 (1 = fastest
  everywhere, 0 = never within 4x of the fastest).
Steps are the time measure of the ratios (hardware-independent); seconds are reported beside them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ..atomic import write_text
from ..outcomes import COUNTED
from .blocks import grid, mark
from .collect import OPTIMIZER_ORDER, _ordered
from .paths import section_heading, section_title
from .tables import markdown_table

__all__ = [
    "targets",
    "first_crossing",
    "run_times",
    "performance_ratios",
    "profile",
    "benchmark_score",
    "write_time_to_target",
    "time_to_target",
    "missed",
    "TAU_MAX",
]

TAU_MAX = 4.0


def targets(runs: pd.DataFrame, reference: str = "adamw", fixed: Optional[float] = None) -> dict[str, float]:
    """Target accuracy per dataset: ``fixed``, else the median final accuracy of ``reference``."""
    if fixed is not None:
        return {d: float(fixed) for d in runs["dataset"].unique()}
    ref = runs[runs["optimizer"] == reference]
    return {d: float(g["final_eval_acc"].median()) for d, g in ref.groupby("dataset")}


def first_crossing(curve: pd.DataFrame, target: float) -> dict[str, float]:
    """Step, epoch and seconds of the first point with eval_acc >= target (inf when none)."""
    hit = curve[curve["eval_acc"] >= target - 1e-9].sort_values("step")
    if hit.empty:
        return {"steps": math.inf, "epochs": math.inf, "seconds": math.inf}
    first = hit.iloc[0]
    return {"steps": float(first["step"]), "epochs": float(first["epoch"]), "seconds": float(first["seconds"])}


def run_times(runs: pd.DataFrame, curves: pd.DataFrame, target_of: dict[str, float]) -> pd.DataFrame:
    """One row per run with its target and time-to-target (inf when never reached)."""
    out = runs[["dataset", "optimizer", "seed", "run_dir"]].copy()
    out["target"] = out["dataset"].map(target_of)
    points = curves[curves["run_dir"].isin(out["run_dir"])]
    # diverged runs have no points (their time is infinite): the grid is fine when every run with points has it
    fine = bool(len(points)) and bool(points.groupby("run_dir")["fine"].all().all())
    if not fine:
        points = points[points["epoch"] == points["epoch"].round()]  # epoch ends only: the same grid for all
    points = points.merge(out[["run_dir", "target"]], on="run_dir")
    hits = points[points["eval_acc"] >= points["target"] - 1e-9].sort_values("step").groupby("run_dir").first()
    for col, src in (("steps", "step"), ("epochs", "epoch"), ("seconds", "seconds")):
        out[col] = out["run_dir"].map(hits[src]).astype(float).fillna(math.inf)
    out.loc[out["target"].isna(), ["steps", "epochs", "seconds"]] = math.nan
    out = out.reset_index(drop=True)
    out.attrs["fine"] = fine
    return out


def performance_ratios(times: pd.DataFrame) -> pd.DataFrame:
    """datasets x optimizers: (median steps over seeds) / (the fastest optimizer's), inf if never."""
    t = times.pivot_table(index="dataset", columns="optimizer", values="steps", aggfunc="median")
    best = t.min(axis=1)
    ratios = t.div(best, axis=0)
    ratios.loc[~np.isfinite(best)] = np.inf  # nobody reached the target: inf for all, not inf/inf
    return ratios


def profile(ratios: pd.DataFrame, taus) -> pd.DataFrame:
    """taus x optimizers: the share of datasets with ratio <= tau (a missing cell counts as never)."""
    r = ratios.fillna(np.inf).to_numpy()
    return pd.DataFrame([(r <= t).mean(axis=0) for t in taus], index=taus, columns=ratios.columns)


def benchmark_score(ratios: pd.DataFrame, tau_max: float = TAU_MAX) -> pd.Series:
    """Exact integral of the profile from 1 to tau_max over (tau_max - 1): a dataset with ratio r
    contributes (tau_max - r) / (tau_max - 1) when r <= tau_max, else 0."""
    r = ratios.fillna(np.inf)
    return ((tau_max - r.clip(lower=1.0)).clip(lower=0.0) / (tau_max - 1.0)).mean(axis=0)


def write_time_to_target(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    out: Path,
    section: str,
    reference: str = "adamw",
    fixed: Optional[float] = None,
    attempts: Optional[pd.DataFrame] = None,
) -> tuple[Optional[dict], pd.DataFrame]:
    """Writes time_to_target.{md,csv} and performance_profile.png; returns (summary, per-run times).
    ``attempts``: the section's runs of every status; a cell of its grid without a counted run is a miss
    (runners/report/blocks.py) and never reaches the target."""
    result = time_to_target(runs, curves, reference, fixed, attempts)
    if result is None:
        write_text(
            out / "time_to_target.md",
            section_heading("Time to target", section) + "\nNo target: the reference optimizer "
            f"{reference!r} has no runs here (python -m runners.report --target-reference NAME, or --target ACC).\n",
        )
        return None, pd.DataFrame()
    target_of, times, all_times = result["targets"], result["times"], result["all_times"]
    ratios, score, label = result["ratios"], result["score"], result["label"]
    write_text(out / "time_to_target.csv", all_times.drop(columns="run_dir").to_csv(index=False))
    taus = np.linspace(1.0, TAU_MAX, 301)
    _plot(profile(ratios, taus), score, out, section, label)
    optimizers = _ordered(ratios.columns, OPTIMIZER_ORDER)
    med = all_times.groupby(["dataset", "optimizer"])[["steps", "epochs", "seconds"]].median()
    reached = (
        all_times.assign(
            hit=np.isfinite(all_times["steps"]),
            diverged=all_times["status"] == "diverged",
            missing=~all_times["status"].isin(COUNTED),
        )
        .groupby(["dataset", "optimizer"])[["hit", "diverged", "missing"]]
        .agg(["sum", "count"])
    )

    mixed = "hardware" in runs and runs["hardware"].nunique() > 1

    def cell(d, o):
        if (d, o) not in med.index:
            return "–"
        m, h = med.loc[(d, o)], reached.loc[(d, o)]
        seconds = "" if mixed else f", {m['seconds']:.1f} s"  # seconds only compare on one hardware
        text = "never" if not math.isfinite(m["steps"]) else f"{m['steps']:.0f} steps{seconds}"
        lost, miss = int(h[("diverged", "sum")]), int(h[("missing", "sum")])
        marks = (f", {lost} diverged" if lost else "") + (f", {miss} missing" if miss else "")
        return f"{text} ({int(h[('hit', 'sum')])}/{int(h[('hit', 'count')])}{marks})"

    what = "every few steps (evals.csv)" if times.attrs["fine"] else "at the end of each epoch"
    source = f"{fixed:g}% on every dataset" if fixed is not None else f"the median final accuracy of {reference}"
    text = [
        section_heading("Time to target", section),
        f"Target per dataset: {source}. Evaluated {what}; a run's time is its first evaluation at or above "
        "the target; a diverged run's is infinite, and so is a miss's (a seed of the section's grid without a "
        "counted run: failed, interrupted or never run; runners/report/blocks.py). Cells: median over the "
        "grid's seeds (steps, training seconds) and how many reached it. "
        "Ratios use steps: r = t / the fastest optimizer's t; the AlgoPerf benchmark score is the "
        f"integral of the profile ρ(τ) = share of datasets with r ≤ τ, from 1 to {TAU_MAX:g}, over "
        f"{TAU_MAX - 1:g} (1 = fastest everywhere)."
        + (" Seconds are left out: these runs ran on different hardware.\n" if mixed else "\n"),
        markdown_table(
            ["dataset", "target"] + optimizers,
            [[d, f"{target_of[d]:.2f}"] + [cell(d, o) for o in optimizers] for d in sorted(target_of)],
        ),
        "\n## Benchmark score\n",
        markdown_table(["optimizer", "score"], [[label[o], f"{score[o]:.3f}"] for o in optimizers]),
    ]
    write_text(out / "time_to_target.md", "\n".join(text) + "\n")
    summary = {
        "targets": target_of,
        "fine": bool(times.attrs["fine"]),
        "score": score.to_dict(),
        "ratios": ratios.astype(object).where(np.isfinite(ratios), None).to_dict(),
    }
    return summary, times


def time_to_target(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    reference: str = "adamw",
    fixed: Optional[float] = None,
    attempts: Optional[pd.DataFrame] = None,
) -> Optional[dict]:
    """The section's times to target and AlgoPerf scores (None without a target): ``targets``, ``times``
    (one row per counted run), ``all_times`` (and one per miss of the grid, at infinity), ``ratios``,
    ``score`` and ``label`` (each optimizer's name, marked where it has misses)."""
    target_of = targets(runs, reference, fixed)
    if fixed is not None and attempts is not None and len(attempts):  # a dataset where every run failed stays
        target_of.update({d: float(fixed) for d in attempts["dataset"].unique()})
    if not target_of:
        return None
    times = run_times(runs[runs["dataset"].isin(target_of)], curves, target_of)
    status = runs.set_index("run_dir")["status"] if "status" in runs else pd.Series(dtype=object)
    counted = times.assign(status=times["run_dir"].map(status).fillna("done"))
    all_times = pd.concat([counted, missed(runs, attempts, target_of)], ignore_index=True)
    all_times = all_times.sort_values(["dataset", "optimizer", "seed"], kind="stable").reset_index(drop=True)
    all_times.attrs["fine"] = times.attrs["fine"]
    ratios = performance_ratios(all_times)
    missing = all_times[~all_times["status"].isin(COUNTED)].groupby("optimizer").size()
    return {
        "targets": target_of,
        "times": times,
        "all_times": all_times,
        "ratios": ratios,
        "score": benchmark_score(ratios),
        "label": {o: mark(o, int(missing.get(o, 0))) for o in ratios.columns},
    }


def missed(runs: pd.DataFrame, attempts: Optional[pd.DataFrame], target_of: dict) -> pd.DataFrame:
    """One row per miss of the section's grid on a dataset with a target: its time is infinite."""
    g = grid(runs, attempts)
    g = g[~g["counted"] & g["dataset"].isin(target_of)]
    frame = g[["dataset", "optimizer", "seed", "status"]].assign(run_dir=None, target=g["dataset"].map(target_of))
    return frame.assign(steps=math.inf, epochs=math.inf, seconds=math.inf)


def _plot(prof: pd.DataFrame, score: pd.Series, out: Path, section: str, label: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .palette import styles

    style = styles(prof.columns)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for opt in _ordered(prof.columns, OPTIMIZER_ORDER):
        s = style[opt]
        ax.step(
            prof.index,
            prof[opt],
            where="post",
            color=s["color"],
            ls=s["linestyle"],
            lw=1.6,
            label=f"{label[opt]} ({score[opt]:.2f})",
        )
    ax.set_xlabel("τ (time-to-target ratio to the fastest, in steps)")
    ax.set_ylabel("share of datasets with ratio ≤ τ")
    ax.set_xlim(1, TAU_MAX)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False, title="benchmark score", title_fontsize=8)
    ax.set_title(f"Performance profile ({section_title(section)})")
    fig.tight_layout()
    fig.savefig(out / "performance_profile.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
