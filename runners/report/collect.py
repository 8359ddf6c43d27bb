"""Reading a results folder: one row per complete run, one per (run, epoch), and the excluded rest."""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from thermolion import OPTIMIZERS, PAPER_OPTIMIZERS

from ..train.datasets import DATASETS, PAPER_DATASETS

__all__ = ["ReportError", "Collected", "collect", "collect_runs", "DATASET_ORDER", "OPTIMIZER_ORDER", "_ordered"]

DATASET_ORDER = list(PAPER_DATASETS) + [d for d in DATASETS if d not in PAPER_DATASETS]


OPTIMIZER_ORDER = list(PAPER_OPTIMIZERS) + [o for o in OPTIMIZERS if o not in PAPER_OPTIMIZERS]


class ReportError(RuntimeError):
    pass


@dataclass
class Collected:
    runs: pd.DataFrame  # one row per complete run
    epochs: pd.DataFrame  # one row per (complete run, epoch)
    curves: pd.DataFrame  # evaluation points per complete run: step, epoch, seconds, eval_acc (fine if evals.csv)
    excluded: list[dict]  # incomplete, failed, diverged and unreadable runs, with the reason
    records: list[dict] = field(default_factory=list)  # every run folder, flattened (the runs table)


def collect_runs(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(runs, epochs, excluded): one row per complete run, one per (run, epoch), and the rest."""
    c = collect(results_dir)
    return c.runs, c.epochs, c.excluded


def collect(results_dir: Path) -> Collected:
    # Plain csv parsing and one DataFrame per kind at the end: per-file pandas calls cost ~10x more
    # and dominate on large folders (scripts/bench_report.py).
    runs, epochs, curves, excluded, records = [], [], [], [], []
    for info_path in sorted(Path(results_dir).rglob("run.json")):
        run_dir = info_path.parent
        rel = run_dir.relative_to(results_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue  # Hydra's own folders
        name = rel.as_posix()  # reports name runs relative to the results folder, never by machine path
        try:
            info = json.loads(info_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            excluded.append({"run_dir": name, "status": "unreadable", "reason": str(err)})
            records.append({"run_dir": name, "status": "unreadable"})
            continue
        status = info.get("status", "unknown")
        record = {"run_dir": name, "status": status, "info": info}
        records.append(record)
        if status != "done" or not (run_dir / "DONE").exists():
            reason = info.get("error") or (
                f"diverged at epoch {info.get('diverged_at_epoch')}"
                if status == "diverged"
                else "no DONE marker (running or killed)"
            )
            excluded.append({"run_dir": name, "status": status, "reason": reason})
            continue
        cfg = info["config"]
        rows, problem = read_rows(run_dir / "metrics.csv", _NEEDED)
        if problem is None and info.get("epochs_done") is not None and len(rows) != info["epochs_done"]:
            problem = f"truncated: {len(rows)} rows, run.json records {info['epochs_done']} epochs"
        if problem:
            excluded.append({"run_dir": name, "status": "unreadable", "reason": f"metrics.csv {problem}"})
            record["status"] = "unreadable"
            continue
        # Folder "<optimizer>[_<overrides>][+<settings>]": runs with other settings (epochs, label
        # noise, ...) form their own section "<protocol>+<settings>", never mixed with the defaults.
        optimizer, _, settings = run_dir.parent.name.partition("+")
        key = {
            "protocol": cfg["protocol"] + (f"+{settings}" if settings else ""),
            "dataset": cfg["data"]["name"],
            "optimizer": optimizer,
            "optimizer_name": cfg["optimizer"]["name"],
            "seed": int(cfg["seed"]),
            "run_dir": name,
        }
        if "step" not in rows[0]:  # runs written before the step column: full batches per epoch
            per_epoch = -(
                -int(info.get("sizes", {}).get("train", 0)) // int(cfg.get("trainer", {}).get("batch_size", 1))
            )
            for r in rows:
                r["step"] = r["epoch"] * per_epoch
        last, best = rows[-1], max(rows, key=lambda r: r["eval_acc"])
        run = {
            **key,
            "lr": float(cfg["optimizer"].get("lr", math.nan)),
            "tuned_from": cfg.get("tuned_from"),
            "trial": cfg.get("trial"),
            "search_space": cfg.get("search_space"),
            "optimizer_config": json.dumps({k: v for k, v in cfg["optimizer"].items() if k != "name"}, sort_keys=True),
            "code_version": info.get("code_version") or "unrecorded",
            "hardware": hardware_of(info.get("environment") or {}),
            "num_classes": DATASETS[cfg["data"]["name"]].num_classes,
            "final_eval_acc": last["eval_acc"],
            "final_eval_loss": last["eval_loss"],
            "final_train_loss": last["train_loss"],
            "final_train_acc": last["train_acc"],
            "best_eval_acc": best["eval_acc"],
            "best_epoch": int(best["epoch"]),
            "epochs": len(rows),
            "step_time_ms": statistics.median(r["step_time_ms"] for r in rows) if "step_time_ms" in last else math.nan,
            "eval_split": info.get("sizes", {}).get("eval_split"),
            "notes": info.get("data_notes", []),
        }
        runs.append(run)
        record.update(run)
        epochs += [{**key, **r} for r in rows]
        curves += _curve(run_dir, name, rows)
    return Collected(
        pd.DataFrame(runs),
        pd.DataFrame(epochs),
        pd.DataFrame(curves, columns=["run_dir", "step", "epoch", "seconds", "eval_acc", "fine"]),
        excluded,
        records,
    )


_NEEDED = ("epoch", "train_loss", "train_acc", "eval_loss", "eval_acc")


def read_rows(path: Path, needed) -> tuple[Optional[list[dict]], Optional[str]]:
    """(rows of floats, None), or (None, why) when the file is missing, unparsable or truncated."""
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            raw = list(reader)
    except (OSError, csv.Error) as err:
        return None, f"unreadable ({type(err).__name__}: {err})"
    missing = [c for c in needed if c not in (header or [])]
    if missing or not raw:
        return None, f"truncated: no {missing or 'rows'}"
    rows = []
    for line in raw:  # the trainer writes every column of every row, all numbers
        try:
            values = [float(v) for v in line]
        except ValueError:
            return None, "truncated: a value is not a number"
        if len(values) != len(header) or any(math.isnan(v) for v in values):
            return None, "truncated: a row has missing values"
        rows.append(dict(zip(header, values)))
    return rows, None


def hardware_of(env: dict) -> str:
    """What a run's timings depend on: the device and, on the CPU, the thread count."""
    device = env.get("device") or "unrecorded"
    threads = env.get("torch_threads")
    return f"{device} ({threads} threads)" if threads and env.get("device_type", "cpu") == "cpu" else device


def _curve(run_dir: Path, name: str, rows: list[dict]) -> list[tuple]:
    """Evaluation points of a run: evals.csv (every few steps) when present and whole, else the epoch rows."""
    if (run_dir / "evals.csv").exists():
        fine, problem = read_rows(run_dir / "evals.csv", ("step", "epoch", "eval_acc", "train_seconds"))
        if problem is None:
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
