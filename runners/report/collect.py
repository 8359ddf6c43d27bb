"""Reading a results folder: every run folder classified (runners.outcomes), the counted runs as rows."""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from thermolion import OPTIMIZERS, PAPER_OPTIMIZERS

from .. import run_folder as rf
from ..outcomes import COUNTED, chance, classify
from ..train.datasets import DATASETS, PAPER_DATASETS

__all__ = [
    "ReportError",
    "Collected",
    "collect",
    "collect_runs",
    "read_run",
    "assemble",
    "DATASET_ORDER",
    "OPTIMIZER_ORDER",
    "_ordered",
]

DATASET_ORDER = list(PAPER_DATASETS) + [d for d in DATASETS if d not in PAPER_DATASETS]


OPTIMIZER_ORDER = list(PAPER_OPTIMIZERS) + [o for o in OPTIMIZERS if o not in PAPER_OPTIMIZERS]


class ReportError(RuntimeError):
    pass


@dataclass
class Collected:
    runs: pd.DataFrame  # one row per counted run (done, or diverged at chance): what the statistics see
    epochs: pd.DataFrame  # one row per (counted run, epoch); a diverged run at chance from its divergence
    curves: pd.DataFrame  # evaluation points per done run: step, epoch, seconds, eval_acc (fine if evals.csv)
    excluded: list[dict]  # failed, interrupted, running and unreadable runs, with the reason
    records: list[dict] = field(default_factory=list)  # every run folder, flattened (the runs table)
    attempts: pd.DataFrame = field(default_factory=pd.DataFrame)  # every run with a config: its key and status
    read: list[dict] = field(default_factory=list)  # what read_run read of each folder: the report's tables
    source: str = ""  # the folder(s) read, as the report names them


def collect_runs(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(runs, epochs, excluded): one row per counted run, one per (run, epoch), and the rest."""
    c = collect(results_dir)
    return c.runs, c.epochs, c.excluded


def collect(results_dir: Path, stale: Optional[Callable[[dict], list[str]]] = None) -> Collected:
    """Every run folder under ``results_dir``, classified by ``runners.outcomes`` (``stale``: why a
    finished run would not give the same numbers now, to tell stale runs; None leaves that to the
    mixed-version warnings)."""
    results_dir = Path(results_dir)
    return assemble([read_run(run_dir, results_dir, stale) for run_dir in rf.find_runs(results_dir)])


def read_run(run_dir: Path, results_dir: Path, stale: Optional[Callable[[dict], list[str]]] = None) -> dict:
    """Everything the report reads of one run folder, as one record: ``run_dir`` (relative to the results
    folder), ``status`` and ``reason`` (runners.outcomes), ``counted_as`` (what a stale run finished as),
    ``info`` (run.json), ``metrics`` and ``evals`` (their rows, None where not read or not whole). The
    report's tables (runs.parquet, epochs.parquet, evals.parquet) hold these records, so a report can be
    rebuilt from them (``runners.report.tables_io``)."""
    name = run_dir.relative_to(results_dir).as_posix()  # reports name runs relative to the results folder
    try:
        info = rf.read_info(run_dir)
    except rf.UnreadableRecord as err:
        return {"run_dir": name, "status": "unreadable", "reason": str(err), "info": None}
    outcome = classify(run_dir, info, stale)
    record = {"run_dir": name, "status": outcome.status, "reason": outcome.reason, "info": info or {}}
    record["counted_as"] = outcome.finished_as or outcome.status  # a stale run counts as what it finished as
    if record["counted_as"] == "done":
        record["metrics"] = outcome.rows  # whole: classify calls a truncated metrics.csv unreadable
        cfg = (info or {}).get("config") or {}
        if cfg.get("trainer", {}).get("eval_every_steps") and (run_dir / rf.EVALS).exists():
            fine, problem = rf.read_evals(run_dir)
            record["evals"] = fine if problem is None else None
    elif record["counted_as"] == "diverged":
        record["metrics"] = rf.read_metrics(run_dir)[0]
    return record


def assemble(read: list[dict]) -> Collected:
    """The report's frames from the records of ``read_run`` (from run folders or from a report's tables)."""
    # Plain dicts and one DataFrame per kind at the end: per-row pandas calls cost ~10x more
    # and dominate on large folders (scripts/bench_report.py).
    runs, epochs, curves, excluded, records, attempts = [], [], [], [], [], []
    for rec in read:
        name, info = rec["run_dir"], rec.get("info")
        if info is None:
            excluded.append({"run_dir": name, "status": "unreadable", "reason": rec["reason"]})
            records.append({"run_dir": name, "status": "unreadable", "reason": rec["reason"]})
            continue
        status = rec["counted_as"]
        record = {"run_dir": name, "status": rec["status"], "reason": rec["reason"], "info": info}
        records.append(record)
        cfg = info.get("config")
        key = _key(Path(name), info, name) if cfg else None
        if status not in COUNTED:
            excluded.append({"run_dir": name, "status": rec["status"], "reason": rec["reason"]})
            if key:
                attempts.append({**key, "status": rec["status"]})
                record.update({k: key[k] for k in ("protocol", "dataset", "optimizer", "seed")})  # its grid cell
            continue
        if status == "done":
            rows = [dict(r) for r in rec["metrics"]]
            if "step" not in rows[0]:  # runs written before the step column: full batches per epoch
                per_epoch = -(
                    -int(info.get("sizes", {}).get("train", 0)) // int(cfg.get("trainer", {}).get("batch_size", 1))
                )
                for r in rows:
                    r["step"] = r["epoch"] * per_epoch
            run = {**key, "status": "done", **_metrics(rows)}
            epochs += [{**key, **r} for r in rows]
            curves += _curve(name, rows, rec.get("evals"))
        else:  # diverged: a result, at chance; no evaluation points (it never reaches a target)
            rows = rec.get("metrics")
            num_classes = DATASETS[cfg["data"]["name"]].num_classes
            level = chance(num_classes)
            epochs += [{**key, **r} for r in at_chance_epochs(rows or [], cfg, info, num_classes)]
            run = {
                **key,
                "status": "diverged",
                **{m: math.nan for m in ("final_eval_loss", "final_train_loss", "final_train_acc", "best_epoch")},
                "final_eval_acc": level,
                "best_eval_acc": level,
                "epochs": int(info.get("epochs_done") or 0),
                "step_time_ms": _median_step(rows or []),
            }
        run.update(_settings(cfg, info))
        # The step size the optimizer used at its last epoch: d·lr for Prodigy and D-Adaptation, else the lr.
        logged = (rows or [{}])[-1].get("effective_lr")
        run["effective_lr"] = float(logged) if logged not in (None, "") else run["lr"]
        run["diverged_at_epoch"] = info.get("diverged_at_epoch")
        runs.append(run)
        attempts.append({**key, "status": run["status"]})
        record.update(
            run, status=rec["status"]
        )  # the runs table keeps "stale"; the statistics count what it finished as
    # In key order, not folder order: a sum over seeds then adds in the same order whatever the folders
    # are called (a float sum's last bits depend on its order).
    return Collected(
        _in_key_order(pd.DataFrame(runs), []),
        _in_key_order(pd.DataFrame(epochs), ["epoch"]),
        pd.DataFrame(curves, columns=["run_dir", "step", "epoch", "seconds", "eval_acc", "fine"]),
        excluded,
        records,
        pd.DataFrame(attempts, columns=[*_KEY, "trial", "tuned_from", "num_classes", "status"]),
        read,
    )


def _in_key_order(frame: pd.DataFrame, then: list[str]) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame.sort_values(["protocol", "dataset", "optimizer", "seed", *then], kind="stable").reset_index(drop=True)


_KEY = ("protocol", "dataset", "optimizer", "optimizer_name", "seed", "run_dir")


def _key(run_dir: Path, info: dict, name: str) -> dict:
    # Runs with other settings (epochs, label noise, ...) form their own section "<protocol>+<settings>",
    # never mixed with the defaults. The labels come from run.json; only a run.json written before they
    # were recorded has its folder name read, split where a setting's name follows a "+".
    cfg = info["config"]
    labels = info.get("labels") or folder_labels(run_dir.parent.name)
    settings = labels["settings"]
    return {
        "protocol": cfg["protocol"] + (f"+{settings}" if settings else ""),
        "dataset": cfg["data"]["name"],
        "optimizer": labels["optimizer"],
        "optimizer_name": cfg["optimizer"]["name"],
        "seed": int(cfg["seed"]),
        "run_dir": name,
        "trial": cfg.get("trial"),
        "tuned_from": cfg.get("tuned_from"),
        "num_classes": getattr(DATASETS.get(cfg["data"]["name"]), "num_classes", None),
    }


_SETTINGS_START = re.compile(r"\+(?=[a-z][a-z0-9_]*=)")


def folder_labels(folder: str) -> dict[str, str]:
    """The labels of a ``<optimizer>[_<overrides>][+<settings>]`` folder written before run.json recorded
    them: the first "+" that starts a ``name=`` (so ``momentum_decay=1e+06`` stays in the optimizer's)."""
    found = _SETTINGS_START.search(folder)
    if found is None:
        return {"optimizer": folder, "settings": ""}
    return {"optimizer": folder[: found.start()], "settings": folder[found.end() :]}


def at_chance_epochs(rows: list[dict], cfg: dict, info: dict, num_classes: int) -> list[dict]:
    """A diverged run's epochs as the tables count it: its finite epochs before it diverged, then every
    epoch from the one it diverged in to its last at chance (accuracy 100/classes; both losses ln(classes),
    a uniform prediction's), marked ``at_chance``. So a curve's last point is its table cell, and no mean
    curve is drawn over the surviving seeds only. The last epoch is the run's planned
    ``trainer.epochs`` (else its divergence epoch)."""
    diverged = int(info.get("diverged_at_epoch") or (len(rows) + 1))
    kept = [r for r in rows if r["epoch"] < diverged and math.isfinite(r["train_loss"])]
    last = max(int((cfg.get("trainer") or {}).get("epochs") or 0), diverged)
    steps = kept[-1].get("step") if kept else None  # steps per epoch from its last finite epoch, if logged
    per_epoch = steps / kept[-1]["epoch"] if isinstance(steps, (int, float)) and steps == steps else math.nan
    level, loss = chance(num_classes), math.log(num_classes)
    filler = {"train_acc": level, "eval_acc": level, "train_loss": loss, "eval_loss": loss, "at_chance": True}
    return kept + [{"epoch": e, "step": e * per_epoch, **filler} for e in range(diverged, last + 1)]


def _metrics(rows: list[dict]) -> dict:
    last, best = rows[-1], max(rows, key=lambda r: r["eval_acc"])
    return {
        "final_eval_acc": last["eval_acc"],
        "final_eval_loss": last["eval_loss"],
        "final_train_loss": last["train_loss"],
        "final_train_acc": last["train_acc"],
        "best_eval_acc": best["eval_acc"],
        "best_epoch": int(best["epoch"]),
        "epochs": len(rows),
        "step_time_ms": _median_step(rows),
    }


def _median_step(rows: list[dict]) -> float:
    return statistics.median(r["step_time_ms"] for r in rows) if rows and "step_time_ms" in rows[-1] else math.nan


def _settings(cfg: dict, info: dict) -> dict:
    return {
        "lr": float(cfg["optimizer"].get("lr", math.nan)),
        "schedule": cfg.get("trainer", {}).get("schedule", "constant"),
        # The data budget, to match a self-tuning study with a tunability study's tuned re-runs.
        "budget": "|".join(
            str(v)
            for v in (
                info.get("sizes", {}).get("eval_split"),
                cfg["data"].get("train_subset"),
                cfg["data"].get("image_size"),
                cfg.get("trainer", {}).get("batch_size"),
                cfg.get("trainer", {}).get("epochs"),
            )
        ),
        "search_space": cfg.get("search_space"),
        "search_space_sha": cfg.get("search_space_sha"),
        "optimizer_config": json.dumps({k: v for k, v in cfg["optimizer"].items() if k != "name"}, sort_keys=True),
        "code_version": info.get("code_version") or "unrecorded",
        "packages": packages_of(info),
        "hardware": hardware_of(info.get("environment") or {}),
        "num_classes": DATASETS[cfg["data"]["name"]].num_classes,
        "eval_split": info.get("sizes", {}).get("eval_split"),
        "notes": info.get("data_notes", []),
    }


def packages_of(info: dict) -> str:
    """The recorded versions of the packages that computed a run's numbers, as one comparable line."""
    recorded = info.get("packages")
    return ", ".join(f"{k} {v}" for k, v in sorted(recorded.items())) if recorded else "unrecorded"


def hardware_of(env: dict) -> str:
    """What a run's timings and last bits depend on: the device by model and, on the CPU, ATen's kernel
    level and the thread count; on a GPU, its compute capability and CUDA version."""
    device = env.get("device") or "unrecorded"
    if env.get("device_type", "cpu") == "cpu":
        parts = [
            p for p in (env.get("cpu_capability"), env.get("torch_threads") and f"{env['torch_threads']} threads") if p
        ]
    else:
        parts = [
            p
            for p in (
                env.get("gpu_capability") and f"sm {env['gpu_capability']}",
                env.get("cuda") and f"CUDA {env['cuda']}",
            )
            if p
        ]
    return f"{device} ({', '.join(parts)})" if parts else device


def _curve(name: str, rows: list[dict], fine: Optional[list[dict]]) -> list[tuple]:
    """Evaluation points of a run: evals.csv's rows (every few steps) when the run wrote one and it is
    whole, else the epoch rows."""
    if fine:
        return [(name, r["step"], r["epoch"], r["train_seconds"], r["eval_acc"], True) for r in fine]
    seconds, out = 0.0, []
    for r in rows:
        seconds += r.get("train_time_s", r.get("epoch_time_s", math.nan))
        out.append((name, r["step"], r["epoch"], seconds, r["eval_acc"], False))
    return out


def _ordered(values, order) -> list:
    """Distinct values in ``order``; a name like ``adamw_lr=0.01`` sorts with its longest known prefix."""
    rank = {name: i for i, name in enumerate(order)}

    def key(v):
        prefixes = [n for n in order if v.startswith(n)]
        return (rank[max(prefixes, key=len)] if prefixes else len(order), v)

    return sorted(dict.fromkeys(values), key=key)
