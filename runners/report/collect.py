"""Reading a results folder: one row per complete run, one per (run, epoch), and the excluded rest."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from thermolion import OPTIMIZERS, PAPER_OPTIMIZERS

from ..data import DATASETS, PAPER_DATASETS

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
    runs, epochs, curves, excluded, records = [], [], [], [], []
    for info_path in sorted(Path(results_dir).rglob("run.json")):
        run_dir = info_path.parent
        if any(part.startswith(".") for part in run_dir.relative_to(results_dir).parts):
            continue  # Hydra's own folders
        try:
            info = json.loads(info_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            excluded.append({"run_dir": str(run_dir), "status": "unreadable", "reason": str(err)})
            records.append({"run_dir": str(run_dir), "status": "unreadable"})
            continue
        status = info.get("status", "unknown")
        record = {"run_dir": str(run_dir), "status": status, "info": info}
        records.append(record)
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
            record["status"] = "unreadable"
            continue
        last, best = metrics.iloc[-1], metrics.loc[metrics["eval_acc"].idxmax()]
        if "step" not in metrics:  # runs written before the step column: full batches per epoch
            sizes = info.get("sizes", {})
            per_epoch = -(-int(sizes.get("train", 0)) // int(cfg.get("trainer", {}).get("batch_size", 1)))
            metrics["step"] = metrics["epoch"] * per_epoch
        run = {**key, "run_dir": str(run_dir), "lr": float(cfg["optimizer"].get("lr", math.nan)),
               "tuned_from": cfg.get("tuned_from"), "trial": cfg.get("trial"), "search_space": cfg.get("search_space"),
               "optimizer_config": json.dumps({k: v for k, v in cfg["optimizer"].items() if k != "name"}, sort_keys=True),
               "code_version": info.get("code_version") or "unrecorded",
               "num_classes": DATASETS[cfg["data"]["name"]].num_classes,
               "final_eval_acc": float(last["eval_acc"]), "final_eval_loss": float(last["eval_loss"]),
               "final_train_loss": float(last["train_loss"]), "final_train_acc": float(last["train_acc"]),
               "best_eval_acc": float(best["eval_acc"]), "best_epoch": int(best["epoch"]), "epochs": len(metrics),
               "step_time_ms": float(metrics["step_time_ms"].median()) if "step_time_ms" in metrics else math.nan,
               "eval_split": info.get("sizes", {}).get("eval_split"), "notes": info.get("data_notes", [])}
        runs.append(run)
        record.update(run)
        epochs.append(metrics.assign(**key, run_dir=str(run_dir)))
        curves.append(_curve(run_dir, metrics).assign(run_dir=str(run_dir)))
    return Collected(pd.DataFrame(runs), pd.concat(epochs, ignore_index=True) if epochs else pd.DataFrame(),
                     pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(), excluded, records)


def _curve(run_dir: Path, metrics: pd.DataFrame) -> pd.DataFrame:
    """Evaluation points of a run: evals.csv (every few steps) when readable, else the epoch rows."""
    try:
        fine = pd.read_csv(run_dir / "evals.csv")
        if not fine.empty and not fine.isna().any().any():
            return fine.rename(columns={"train_seconds": "seconds"}).assign(fine=True)[
                ["step", "epoch", "seconds", "eval_acc", "fine"]]
    except (OSError, ValueError):
        pass
    seconds = metrics.get("train_time_s", metrics.get("epoch_time_s", pd.Series(math.nan, index=metrics.index)))
    return pd.DataFrame({"step": metrics["step"], "epoch": metrics["epoch"].astype(float),
                         "seconds": seconds.cumsum(), "eval_acc": metrics["eval_acc"], "fine": False})


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
