"""The run folder's on-disk format, owned here and nowhere else.

::

    <results>/<protocol>/<dataset>/<optimizer>[_<overrides>][+<settings>]/seed<n>/
        LOCK           the owner (host, pid, token) while a process holds the run (runners.sweep.lock)
        run.json       config, identity, status, owner, progress, final metrics, environment
        metrics.csv    one row per finished epoch
        evals.csv      every evaluation point, with trainer.eval_every_steps
        checkpoint.pt  the last finished epoch's state, while the run is unfinished
        DONE           written last, holding the final status: its presence means the folder is complete

``run.json`` carries ``schema`` (``SCHEMA``); a file without one is schema 1, written before the
package versions were recorded, and reads as such. Every write is atomic (``runners.atomic``). The
sweep writes through these functions; the outcomes, the status and the report read through them.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Optional

from .atomic import write_csv, write_json, write_text

__all__ = [
    "RUN_JSON",
    "METRICS",
    "EVALS",
    "CHECKPOINT",
    "DONE",
    "LOCK",
    "SCHEMA",
    "METRIC_COLUMNS",
    "UnreadableRecord",
    "find_runs",
    "read_info",
    "write_info",
    "is_done",
    "mark_done",
    "unmark_done",
    "recorded_status",
    "read_rows",
    "read_metrics",
    "read_evals",
    "write_metrics",
    "write_evals",
    "metrics_complete",
    "remove",
]

RUN_JSON, METRICS, EVALS, CHECKPOINT = "run.json", "metrics.csv", "evals.csv", "checkpoint.pt"
DONE, LOCK = "DONE", "LOCK"
# 2: "schema" and "packages" (the versions of the packages that compute the run's numbers). Bump it when
# RunConfig.result_settings (runners/config.py, not hashed) changes what the fingerprint covers: the sweep
# compares fingerprints only between runs of one schema and code version.
SCHEMA = 2
METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "eval_loss", "eval_acc")  # every metrics.csv row has these
EVAL_COLUMNS = ("step", "epoch", "eval_acc", "train_seconds")


class UnreadableRecord(ValueError):
    """A run.json that exists but cannot be read or parsed."""


def find_runs(results_dir: Path) -> list[Path]:
    """Every run folder: one with a run.json, with a LOCK only (killed before its first write), or with
    DONE but no run.json (its record lost: listed, never counted). Hydra's own folders (``.hydra``,
    ``.submitit``) are not runs."""
    results_dir = Path(results_dir)
    found = {p.parent for name in (RUN_JSON, LOCK, DONE) for p in results_dir.rglob(name)}
    return sorted(d for d in found if not any(part.startswith(".") for part in d.relative_to(results_dir).parts))


def read_info(run_dir: Path) -> Optional[dict]:
    """The parsed run.json; None when there is none; ``UnreadableRecord`` when it cannot be read."""
    try:
        return json.loads((Path(run_dir) / RUN_JSON).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise UnreadableRecord(f"{RUN_JSON}: {err}") from None


def write_info(run_dir: Path, info: dict) -> None:
    write_json(Path(run_dir) / RUN_JSON, {**info, "schema": SCHEMA})


def is_done(run_dir: Path) -> bool:
    return (Path(run_dir) / DONE).exists()


def mark_done(run_dir: Path, status: str) -> None:
    write_text(Path(run_dir) / DONE, status + "\n")


def unmark_done(run_dir: Path) -> None:
    """A run about to be trained again must not look finished if it is killed midway."""
    (Path(run_dir) / DONE).unlink(missing_ok=True)


def recorded_status(run_dir: Path) -> Optional[str]:
    """ "done" when DONE exists, else the status run.json records, or None for a run never started."""
    if is_done(run_dir):
        return "done"
    try:
        return (read_info(run_dir) or {}).get("status")
    except UnreadableRecord:
        return None


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


def read_metrics(run_dir: Path) -> tuple[Optional[list[dict]], Optional[str]]:
    return read_rows(Path(run_dir) / METRICS, METRIC_COLUMNS)


def read_evals(run_dir: Path) -> tuple[Optional[list[dict]], Optional[str]]:
    return read_rows(Path(run_dir) / EVALS, EVAL_COLUMNS)


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    if rows:
        write_csv(Path(run_dir) / METRICS, rows)
    else:  # diverged in its first epoch: an empty file says so
        write_text(Path(run_dir) / METRICS, "")


def write_evals(run_dir: Path, rows: list[dict]) -> None:
    write_csv(Path(run_dir) / EVALS, rows)


def metrics_complete(run_dir: Path, info: dict) -> bool:
    """metrics.csv has every epoch run.json says was done, each row whole."""
    expected = info.get("epochs_done")
    if expected == 0:
        return True  # diverged in its first epoch: an empty metrics.csv is complete
    rows, problem = read_metrics(run_dir)
    return problem is None and len(rows) == (expected if expected is not None else len(rows))


def remove(run_dir: Path, *names: str) -> None:
    for name in names:
        (Path(run_dir) / name).unlink(missing_ok=True)
