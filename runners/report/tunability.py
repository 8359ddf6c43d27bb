"""Tunability (Sivaprasad et al. 2020; Dodge et al. 2019; AlgoPerf): what tuning buys each optimizer.

From a sweep of ``trial=0..N`` (trial 0 = the defaults, 1..N = search-space points), per dataset and
optimizer, on validation accuracy:
* the expected best accuracy after k random trials, k = 1..N, by the exact estimator over all size-k
  subsets drawn without replacement (v(1) <= ... <= v(N) sorted):
      E[max_k] = sum_i v(i) * (C(i, k) - C(i-1, k)) / C(N, k),
  with a bootstrap band (the N trials resampled with replacement);
* k*: the trials a baseline needs for E[max_k] to reach ThermoLion's default accuracy;
* self-tuning (AlgoPerf): for each optimizer, the one trial (the same hyperparameters everywhere)
  with the best mean rank across the datasets, next to per-dataset tuning and the defaults.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ..atomic import write_text
from .collect import DATASET_ORDER, OPTIMIZER_ORDER, _ordered
from .paths import section_heading, section_title
from .spaces import by_space
from .tables import markdown_table

__all__ = ["expected_max", "expected_max_curve", "write_tunability", "N_BOOT"]

N_BOOT = 1000
GAIN_POINTS = 0.5  # tuning "matters" when it adds more than this many accuracy points


def _weights(n: int) -> np.ndarray:
    """(k, i) -> P(the i-th smallest of n values is the max of k drawn without replacement), k, i = 1..n."""
    return np.array(
        [[(math.comb(i, k) - math.comb(i - 1, k)) / math.comb(n, k) for i in range(1, n + 1)] for k in range(1, n + 1)]
    )


def expected_max(values, k: int) -> float:
    """E[max of k draws without replacement] from the N observed values (Dodge et al. 2019)."""
    n = len(values)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    return float(expected_max_curve(values)[k - 1])


def expected_max_curve(values) -> np.ndarray:
    """E[max_k] for k = 1..N."""
    return _weights(len(values)) @ np.sort(np.asarray(values, dtype=float))


def _band(values, seed: int) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    # The weights depend only on N: one matrix for every resample at once.
    draws = np.sort(v[rng.integers(0, len(v), (N_BOOT, len(v)))], axis=1) @ _weights(len(v)).T
    return np.percentile(draws, 2.5, axis=0), np.percentile(draws, 97.5, axis=0)


def _first_k(curve: np.ndarray, level: float) -> Optional[int]:
    hit = np.flatnonzero(curve >= level - 1e-9)
    return int(hit[0]) + 1 if len(hit) else None


def _k_star(curve: np.ndarray, default: float, level: float) -> Optional[int]:
    """Random trials needed to reach ``level``: 0 when the defaults already do (ties count), None if N do not."""
    if not math.isnan(default) and default >= level - 1e-9:
        return 0
    return _first_k(curve, level)


def _readable(path: Path) -> Path:
    """A recorded space file: as given, else relative to the checkout (run.json records it so)."""
    return path if path.is_absolute() or path.exists() else Path(__file__).resolve().parents[2] / path


def _spaces(runs: pd.DataFrame) -> list[str]:
    import yaml

    lines = []
    for opt, path in sorted(
        runs[runs["trial"] > 0]
        .dropna(subset=["search_space"])
        .groupby("optimizer_name")["search_space"]
        .first()
        .items()
    ):
        try:
            params = yaml.safe_load(_readable(Path(path)).read_text())["params"]
            text = "; ".join(
                f"{n} [{s['low']:g}, {s['high']:g}] {s['scale']}"
                + (f" (P(0) = {s['p_zero']:g})" if s.get("p_zero") else "")
                for n, s in params.items()
            )
        except (OSError, KeyError, TypeError, ValueError):
            text = "(file not readable here)"
        lines.append(f"- {opt}: `{path}`: {text}")
    return lines


def write_tunability(runs: pd.DataFrame, out: Path, section: str, candidate: str) -> Optional[dict]:
    """tunability.{png,md,csv} from runs with a trial index (trial 0 = defaults)."""
    runs = by_space(runs)
    per_trial = (
        runs.groupby(["dataset", "optimizer_name", "trial"])["final_eval_acc"]
        .mean()
        .reset_index()
        .rename(columns={"optimizer_name": "optimizer"})
    )
    curves, table = tunability_curves(per_trial, section)
    if table.empty:
        return None
    datasets = _ordered(per_trial["dataset"], DATASET_ORDER)
    optimizers = _ordered(per_trial["optimizer"], OPTIMIZER_ORDER)
    write_text(out / "tunability.csv", table.to_csv(index=False))
    _plot(curves, datasets, optimizers, out, section)
    kstar = trials_to_match(curves, candidate)
    self_tuned = _self_tuning(per_trial)
    text = _markdown(runs, section, candidate, curves, kstar, self_tuned, table, datasets, optimizers)
    write_text(out / "tunability.md", text)
    return {
        "curves": table.to_dict(orient="records"),
        "kstar": {f"{d}/{o}": k for (d, o), k in kstar.items()},
        "self_tuning": self_tuned,
    }


def tunability_curves(per_trial: pd.DataFrame, section: str) -> tuple[dict, pd.DataFrame]:
    """Per (dataset, optimizer) with trials: (E[best of k] for every k, its band's low and high, the
    default's accuracy), and the same as one row per k."""
    curves, rows = {}, []
    for (dataset, opt), g in per_trial.groupby(["dataset", "optimizer"]):
        trials = g[g["trial"] > 0]["final_eval_acc"].to_numpy()
        default = g[g["trial"] == 0]["final_eval_acc"]
        if len(trials) == 0:
            continue
        curve = expected_max_curve(trials)
        low, high = _band(trials, seed=len(rows))
        curves[(dataset, opt)] = (curve, low, high, float(default.iloc[0]) if len(default) else math.nan)
        rows += [
            {
                "section": section,
                "dataset": dataset,
                "optimizer": opt,
                "k": k + 1,
                "expected_max": curve[k],
                "low": low[k],
                "high": high[k],
                "default": curves[(dataset, opt)][3],
                "trials": len(trials),
            }
            for k in range(len(trials))
        ]
    return curves, pd.DataFrame(rows)


def trials_to_match(curves: dict, candidate: str) -> dict:
    """k* per (dataset, baseline): the random trials it needs to match the candidate's defaults on that
    dataset (None: not within its trials); absent where the dataset has no candidate curve."""
    kstar = {}
    for (dataset, opt), (curve, _, _, default) in curves.items():
        ref = next((curves[(dataset, c)] for c in _labels_of(candidate, curves) if (dataset, c) in curves), None)
        if ref is not None and not _is_candidate(opt, candidate):
            kstar[(dataset, opt)] = _k_star(curve, default, ref[3])
    return kstar


def _is_candidate(label: str, candidate: str) -> bool:
    """The candidate itself, or the candidate under one of several search spaces (``by_space``)."""
    return label == candidate or label.startswith(candidate + " [")


def _labels_of(candidate: str, curves: dict) -> list[str]:
    return sorted({o for _, o in curves if _is_candidate(o, candidate)})


def _markdown(runs, section, candidate, curves, kstar, self_tuned, table, datasets, optimizers) -> str:
    budgets = table.groupby("optimizer")["trials"].max()
    summary_rows = []
    for dataset in datasets:
        for opt in optimizers:
            if (dataset, opt) not in curves:
                continue
            curve, _, _, default = curves[(dataset, opt)]
            k = kstar.get((dataset, opt))
            summary_rows.append(
                [
                    dataset,
                    opt,
                    _pct(default),
                    _pct(curve[0]),
                    _pct(curve[3]) if len(curve) >= 4 else "–",  # fewer than 4 trials: no best of 4
                    _pct(curve[-1]),
                    f"{curve[-1] - default:+.2f}",
                    "–" if (dataset, opt) not in kstar else (str(k) if k is not None else f"> {len(curve)}"),
                ]
            )
    text = [
        section_heading("Tunability, validation accuracy (%)", section),
        "Trial 0 is each optimizer's default configuration; trials 1..N are points of its declared search "
        "space (scrambled Sobol). E[best of k]: the expected best validation accuracy after k random trials "
        "(exact estimator over all size-k subsets, Dodge et al. 2019); `tunability.png` shows it for every k "
        f"with a bootstrap band ({N_BOOT} resamples of the trials) and each default as a dashed line. "
        f"k*: the random trials a baseline needs to match {candidate}'s defaults (0: its own defaults already do; "
        "ties count as a match). Best of N is over the sampled trials only, so a negative "
        "'best of N − default' means no sampled trial reached the defaults. "
        f"Trials per optimizer: {', '.join(f'{o} {int(n)}' for o, n in budgets.items())}"
        + (" (equal)." if budgets.nunique() == 1 else " (**unequal budgets**)."),
        "",
        markdown_table(
            [
                "dataset",
                "optimizer",
                "default",
                "E[best of 1]",
                "E[best of 4]",
                "best of N",
                "best of N − default",
                f"k* (to {candidate}'s default)",
            ],
            summary_rows,
        ),
        "\n## Self-tuning (one configuration for every dataset, AlgoPerf style)\n",
        "For each optimizer, the configuration with the best mean validation rank across the datasets, chosen "
        "among its defaults (trial 0) and its N trials, against per-dataset tuning (the best of the same "
        "candidates on each dataset) and the defaults. Every number is validation accuracy, the split the "
        "choice is made on, so the tuned columns are optimistic; held-out test accuracy of a choice comes from "
        "re-running it (`python -m runners.tuning`). A self-tuned value below the defaults on one dataset is "
        "the price of one configuration for all of them.\n",
        markdown_table(
            [
                "optimizer",
                "chosen trial",
                "dataset",
                "defaults (val)",
                "self-tuned (val)",
                "per-dataset tuned (val)",
            ],
            [
                [
                    r["optimizer"],
                    r["trial"],
                    r["dataset"],
                    _pct(r["default"]),
                    _pct(r["self_tuned"]),
                    _pct(r["per_dataset"]),
                ]
                for r in self_tuned
            ],
        ),
        "\n## Search spaces\n",
        *_spaces(runs),
        '\n## Verdict on "hyperparameter-free"\n',
        _verdict(curves, kstar, candidate, datasets, optimizers),
    ]
    return "\n".join(text) + "\n"


def _pct(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def _self_tuning(per_trial: pd.DataFrame) -> list[dict]:
    out = []
    for opt, g in per_trial.groupby("optimizer"):
        wide = g.pivot_table(index="trial", columns="dataset", values="final_eval_acc")
        # The candidates are every trial run on all datasets, the defaults (trial 0) among them: a tuner
        # that keeps its defaults when nothing beats them never reports a pick below them on average.
        candidates = wide.dropna()
        if not (candidates.index > 0).any():
            continue
        chosen = int(candidates.rank(ascending=False).mean(axis=1).idxmin())
        for dataset in wide.columns:
            out.append(
                {
                    "optimizer": opt,
                    "trial": chosen,
                    "dataset": dataset,
                    "default": float(wide.loc[0, dataset]) if 0 in wide.index else math.nan,
                    "self_tuned": float(wide.loc[chosen, dataset]),
                    "per_dataset": float(candidates[dataset].max()),
                }
            )
    return out


def _verdict(curves, kstar, candidate, datasets, optimizers) -> str:
    lines = []
    for label in _labels_of(candidate, curves):
        lines += _own_gain(curves, label, datasets)
    for opt in optimizers:
        if _is_candidate(opt, candidate):
            continue
        ks = {d: kstar.get((d, opt)) for d in datasets if (d, opt) in kstar}
        if not ks:
            continue
        already = [d for d, k in ks.items() if k == 0]
        fast = [d for d, k in ks.items() if k is not None and 0 < k <= 4]
        n = {d: len(curves[(d, opt)][0]) for d in ks}
        text = ", ".join(
            f"{d} {'0 (its defaults already do)' if k == 0 else k if k else f'more than {n[d]}'}" for d, k in ks.items()
        )
        tail = []
        if already:
            tail.append(f"its defaults already match {candidate}'s on {', '.join(already)}")
        if fast:
            tail.append(f"within 4 trials on {', '.join(fast)}: a small tuning budget erases the default advantage")
        lines.append(
            f"- {opt} needs k* = {text} random trials to match {candidate}'s defaults"
            + ("; " + "; ".join(tail) + "." if tail else ".")
        )
    lines.append(
        f'- "Hyperparameter-free" would mean {candidate}\'s defaults match what tuning finds, for it and for '
        "its rivals. The evidence is the rows above: the tuning gain of each optimizer and k*."
    )
    return "\n".join(lines)


def _plot(curves, datasets, optimizers, out: Path, section: str) -> None:
    import matplotlib

    matplotlib.use("Agg")

    from .figures import _finish_grid, _grid, draw
    from .palette import styles

    style = styles(optimizers)
    fig, axes, cols = _grid(len(datasets))
    for i, dataset in enumerate(datasets):
        ax = axes[i // cols, i % cols]
        for opt in optimizers:
            if (dataset, opt) not in curves:
                continue
            curve, low, high, default = curves[(dataset, opt)]
            ks = np.arange(1, len(curve) + 1)
            draw(ax, ks, curve, style[opt], opt, lw=1.8)
            ax.fill_between(ks, low, high, color=style[opt]["color"], alpha=0.15, lw=0)
            if not math.isnan(default):
                ax.axhline(default, color=style[opt]["color"], ls=(0, (2, 2)), lw=1.1)
        ax.set_title(dataset, fontsize=11)
        ax.set_xlabel("trials k")
        ax.set_ylabel("expected best validation accuracy (%)")
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3, which="both")
    _finish_grid(
        fig,
        axes,
        len(datasets),
        cols,
        f"Tunability ({section_title(section)}); dashed: each optimizer's defaults",
        [out / "tunability.png"],
    )


def _own_gain(curves, candidate, datasets) -> list[str]:
    """The verdict line on what tuning gains the candidate (under one search space) over its defaults."""
    lines = []
    gains = {d: curves[(d, candidate)][0][-1] - curves[(d, candidate)][3] for d in datasets if (d, candidate) in curves}
    gains = {d: g for d, g in gains.items() if not math.isnan(g)}
    if gains:
        each = ", ".join(f"{d} {g:+.2f}" for d, g in gains.items())
        worst = max(gains, key=gains.get)
        if gains[worst] > GAIN_POINTS:
            lines.append(
                f"- Tuning {candidate} itself pays: its best of N beats its defaults by {gains[worst]:.2f} "
                f"points on {worst} (best of N minus defaults: {each}). Its defaults are not the end of the "
                "road, so **it is not hyperparameter-free here**."
            )
        elif gains[worst] > 0:
            lines.append(
                f"- Tuning {candidate} adds at most {gains[worst]:.2f} points over its defaults ({each}): its "
                "defaults are close to its best in this space."
            )
        else:
            lines.append(
                f"- No trial of {candidate} beats its defaults: its best of N is at or below them on every "
                f"dataset ({each})."
            )
    return lines
