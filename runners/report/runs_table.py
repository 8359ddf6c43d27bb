"""One table of all runs (benchopt's layout): ``runs.parquet``, or ``runs.csv`` without pyarrow.

One row per run folder, complete or not: ``status`` (``runners.outcomes``) and its ``reason``;
every config field as a dotted column (``config.optimizer.lr``, ``config.trainer.epochs``, ...); final
and best-epoch metrics; the
time-to-target of its section; ``code_version``; the environment (``env.torch``, ``env.device``, ...).
Values that are lists or mappings (e.g. betas) are stored as JSON text. Read it back with
``pd.read_parquet`` or DuckDB (``SELECT * FROM 'runs.parquet'``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .collect import hardware_of, packages_of
from .paths import PATH_COLUMNS, shown_path
from .tables_io import write_frame

__all__ = ["runs_frame", "write_runs_table"]

_RUN_FIELDS = (
    "protocol",
    "dataset",
    "optimizer",
    "seed",
    "final_eval_acc",
    "final_eval_loss",
    "final_train_loss",
    "final_train_acc",
    "best_eval_acc",
    "best_epoch",
    "epochs",
    "step_time_ms",
    "code_version",
)


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, (list, tuple)) else value


def runs_frame(records: list[dict], times: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for rec in records:
        info = rec.get("info", {})
        row = {
            "run_dir": rec["run_dir"],
            "status": rec["status"],
            "reason": rec.get("reason"),
            "error": info.get("error"),
            "code_version": info.get("code_version") or "unrecorded",
            "packages": packages_of(info),
            "hardware": hardware_of(info.get("environment") or {}),
            "fingerprint": info.get("fingerprint"),
            "started": info.get("started"),
            "finished": info.get("finished"),
            "wall_time_s": info.get("wall_time_s"),
        }
        row.update({k: rec[k] for k in _RUN_FIELDS if k in rec})
        _flatten("config", info.get("config", {}), row)
        _flatten("env", info.get("environment", {}), row)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not times.empty and not frame.empty:
        ttt = times.set_index("run_dir")[["target", "steps", "epochs", "seconds"]].add_prefix("ttt_")
        frame = frame.join(ttt, on="run_dir")
    for col in PATH_COLUMNS:
        if col in frame:
            frame[col] = frame[col].map(lambda v: shown_path(v) if isinstance(v, str) else v)
    for col in frame.columns:  # one type per column, as parquet needs
        kinds = {type(v) for v in frame[col].dropna()}
        if len(kinds) > 1 and not kinds <= {int, float}:
            frame[col] = frame[col].map(lambda v: v if v is None or (isinstance(v, float) and v != v) else str(v))
    return frame


def write_runs_table(frame: pd.DataFrame, out: Path) -> Path:
    """runs.parquet (atomically), or runs.csv when pyarrow is missing; returns the path written."""
    return write_frame(frame, out, "runs")
