"""Fair tuning: pick each optimizer's configuration on validation accuracy, then re-run it with fresh seeds.

    python -m runners.tuning <results_dir> [--rerun-seeds 3] [--run]

Reads the complete runs of ``results_dir`` that were evaluated on a validation split (the ``tuned``
protocol: ``+experiment=lr_sensitivity`` grids or ``+experiment=tunability`` trials), and for every
(settings, dataset, optimizer) picks the configuration (all its hyperparameters, not only the lr)
with the highest mean validation accuracy over the tuning seeds. Ties (equal means to 1e-9) go to
the lr closest to the optimizer's default on a log scale, then to the smaller lr, then to the lower
trial index (so the defaults win a tie). Test-split numbers are never read. Writes
``<results_dir>/tuning/chosen_lrs.json`` (choices with their whole configuration, the rule, tuning
seeds, each optimizer's budget) and prints the re-run command: the rigorous protocol (test split)
with the chosen configurations (``tuned_lrs=...``) and seeds disjoint from the tuning seeds; ``--run``
launches it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd

from models import ModelConfig
from thermolion import OPTIMIZERS, get_spec

from ..atomic import write_json
from ..report import ReportError, collect_runs
from ..report.paths import shown_command
from ..report.spaces import space_keys
from ..train.settings import DataConfig, TrainerConfig

__all__ = ["mixed_spaces", "select_configs", "rerun_seeds", "main"]

RULE = (
    "among the configurations that finished every tuning seed of their group (a failed or interrupted run "
    "leaves its configuration out, so that no mean over fewer seeds beats one over more; where none finished "
    "every seed, those with the most seeds, and the choice says so), the "
    "highest mean validation accuracy over the tuning seeds; ties (to 1e-9) go to the configuration whose lr "
    "is closest to the optimizer's default on a log scale, then to the smaller lr, then to the lower trial index"
)


def _tuning_runs(results_dir: Path) -> pd.DataFrame:
    runs, _, _ = collect_runs(results_dir)
    if runs.empty:
        raise ReportError(f"no complete runs under {results_dir}")
    runs = runs[runs["eval_split"] == "val"]  # validation-evaluated runs only: never the test split
    if runs.empty:
        raise ReportError(
            f"no runs evaluated on a validation split under {results_dir}; "
            "run the tuning sweep first: python run.py +experiment=lr_sensitivity"
        )
    return runs


def mixed_spaces(runs: pd.DataFrame) -> str:
    """'' when each optimizer's sampled trials come from one search space, else which ones mix."""
    if "trial" not in runs or "search_space" not in runs:
        return ""
    sampled = runs[runs["trial"] > 0]
    keys = sampled.assign(space=space_keys(sampled)).groupby("optimizer_name")["space"].unique()
    return "; ".join(
        f"{opt}'s trials come from {len(k)} search spaces ({', '.join(sorted(k))})"
        for opt, k in keys.items()
        if len(k) > 1
    )


def select_configs(runs: pd.DataFrame) -> dict:
    """Choices per (settings section, dataset, optimizer) from validation-evaluated runs."""
    chosen, budget, table = {}, {}, []
    if "trial" not in runs:  # lr grids have no trials
        runs = runs.assign(trial=math.nan)
    if "optimizer_config" not in runs:  # configurations that differ in the lr alone
        runs = runs.assign(optimizer_config=runs["lr"].map(lambda lr: json.dumps({"lr": lr})))
    for (section, dataset, opt), g in runs.groupby(["protocol", "dataset", "optimizer_name"]):
        default = get_spec(opt).defaults["lr"] if opt in OPTIMIZERS else float(g["lr"].median())
        per = (
            g.groupby("optimizer_config")
            .agg(
                mean=("final_eval_acc", "mean"),
                std=("final_eval_acc", "std"),
                count=("final_eval_acc", "count"),
                lr=("lr", "first"),
                trial=("trial", "min"),
                seeds=("seed", frozenset),
            )
            .reset_index()
        )
        every = frozenset(g["seed"])
        per["complete"] = per["seeds"] == every
        eligible = per[per["complete"]] if per["complete"].any() else per[per["count"] == per["count"].max()]
        note = "" if per["complete"].any() else f"no configuration finished every seed ({sorted(every)})"
        best = eligible["mean"].max()
        ties = eligible[eligible["mean"] >= best - 1e-9].copy()
        ties["distance"] = (ties["lr"].apply(math.log10) - math.log10(default)).abs()
        pick = ties.sort_values(["distance", "lr", "trial"]).iloc[0]
        config = {k: v for k, v in json.loads(pick["optimizer_config"]).items() if k != "_target_"}
        chosen.setdefault(dataset, {})[opt] = {
            "lr": float(pick["lr"]),
            "config": config,
            "trial": None if math.isnan(pick["trial"]) else int(pick["trial"]),
            "val_acc_mean": float(pick["mean"]),
            "section": section,
            "tied": int(len(ties)),
            "left_out": int((~per["complete"]).sum()),  # configurations missing a seed
            **({"note": note} if note else {}),
        }
        budget.setdefault(dataset, {})[opt] = {"configs": int(len(per)), "runs": int(len(g))}
        for r in per.itertuples():
            table.append(
                {
                    "section": section,
                    "dataset": dataset,
                    "optimizer": opt,
                    "lr": r.lr,
                    "trial": r.trial,
                    "config": r.optimizer_config,
                    "val_acc_mean": r.mean,
                    "val_acc_std": r.std,
                    "seeds": r.count,
                    "every_seed": bool(r.complete),
                    "chosen": r.optimizer_config == pick["optimizer_config"],
                }
            )
    return {"chosen": chosen, "budget": budget, "table": table}


def setting_override(setting: str) -> str:
    """A run folder's ``key=value`` setting as the command-line override that sets it."""
    key = setting.partition("=")[0]
    if key == "model":
        return setting  # the config group
    for prefix, cls in (("data.", DataConfig), ("trainer.", TrainerConfig), ("model.", ModelConfig)):
        if key in {f.name for f in dataclasses.fields(cls)}:
            return prefix + setting
    raise ValueError(f"unknown run setting {setting!r} in a results folder's name")


def rerun_seeds(tuning_seeds, n: int) -> list[int]:
    """``n`` fresh seeds, all above the tuning seeds (so disjoint from them)."""
    start = max(tuning_seeds) + 1 if len(tuning_seeds) else 0
    return list(range(start, start + n))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runners.tuning", description=__doc__.splitlines()[0])
    ap.add_argument("results_dir", type=Path)
    ap.add_argument("--rerun-seeds", type=int, default=3, help="how many fresh seeds to re-run (default 3)")
    ap.add_argument("--out", type=Path, default=None, help="default: <results_dir>/tuning/chosen_lrs.json")
    ap.add_argument("--run", action="store_true", help="launch the re-run sweep")
    args = ap.parse_args(argv)
    if args.rerun_seeds < 1:
        ap.error(f"--rerun-seeds must be >= 1 (how many fresh seeds re-run each choice), got {args.rerun_seeds}")
    try:
        runs = _tuning_runs(args.results_dir)
    except ReportError as err:
        print(f"tune: {err}", file=sys.stderr)
        return 2
    mixed = mixed_spaces(runs)
    if mixed:
        print(
            f"tune: {mixed}: their trials are different configurations, not seeds of one; tune each space in "
            "its own results_dir",
            file=sys.stderr,
        )
        return 2
    sel = select_configs(runs)
    sizes = {(b["configs"], b["runs"]) for per in sel["budget"].values() for b in per.values()}
    tuning_seeds = sorted(int(s) for s in runs["seed"].unique())
    seeds = rerun_seeds(tuning_seeds, args.rerun_seeds)
    out = args.out or args.results_dir / "tuning" / "chosen_lrs.json"
    # Settings of the tuning runs other than the protocol's (e.g. the paper's data budget) carry over.
    sections = sorted(runs["protocol"].unique())
    settings = [s.partition("+")[2] for s in sections]
    if len(set(settings)) > 1:
        print(f"tune: the tuning runs mix settings {sections}; tune each results folder separately", file=sys.stderr)
        return 2
    extra = [kv for kv in settings[0].split(",") if kv] if settings[0] else []
    overrides = [setting_override(k) for k in extra if not k.startswith("eval_split")]
    command = [
        "python",
        "run.py",
        "-m",
        "protocol=rigorous",
        f"tuned_lrs={out}",
        f"results_dir={args.results_dir}",
        "optimizer=" + ",".join(sorted(runs["optimizer_name"].unique())),
        "dataset=" + ",".join(sorted(runs["dataset"].unique())),
        "seed=" + ",".join(map(str, seeds)),
        *overrides,
    ]
    write_json(
        out,
        {
            "rule": RULE,
            "tuning_seeds": tuning_seeds,
            "rerun_seeds": seeds,
            "equal_budget": len(sizes) == 1,
            "rerun_command": shown_command(shlex.join(command)),
            **sel,
        },
    )
    for dataset, per in sel["chosen"].items():
        for opt, c in per.items():
            trial = f" trial {c['trial']}" if c["trial"] is not None else ""
            print(f"{dataset:13s} {opt:20s} lr {c['lr']:.3g}{trial}  (val acc {c['val_acc_mean']:.2f}%)")
    if len(sizes) != 1:
        print(f"tune: warning: unequal tuning budgets {sorted(sizes)} (configurations, runs)", file=sys.stderr)
    print(f"wrote {out}\nre-run: {shlex.join(command)}")
    if args.run:
        return subprocess.call([sys.executable, *command[1:]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
