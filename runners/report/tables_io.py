"""A report's own tables, written and read back: everything a report needs, so it can be rebuilt.

* ``runs.parquet``: one row per run folder (``runs_table``), and in its ``record`` column what the report
  read of the folder (run.json, status, reason) as JSON;
* ``epochs.parquet``: one row per (run, epoch) of metrics.csv, as the run wrote it, keyed by ``run_dir``;
* ``evals.parquet``: one row per evaluation point of evals.csv (runs with ``trainer.eval_every_steps``),
  written only where a run has one.

``read_tables(report)`` gives back the records of ``collect.read_run``, so ``collect.assemble`` builds the
same frames from a report folder as from the run folders, and ``python -m runners.report <report>``
recomputes every table, statistic, figure and the page with the current code. Without pyarrow the
tables are CSV files of the same names.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import pandas as pd

from ..atomic import write_bytes, write_text
from .collect import ReportError
from .paths import REPO

__all__ = ["write_tables", "read_tables", "is_report", "TABLES"]

TABLES = ("runs", "epochs", "evals")
_ROWS = {"epochs": "metrics", "evals": "evals"}  # the table of each kind of rows a record holds


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def write_frame(frame: pd.DataFrame, out: Path, stem: str) -> Path:
    """``<stem>.parquet`` (atomically), or ``<stem>.csv`` without pyarrow; returns the path written."""
    if not _has_pyarrow():
        path = Path(out) / f"{stem}.csv"
        write_text(path, frame.to_csv(index=False))
        return path
    path = Path(out) / f"{stem}.parquet"
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    write_bytes(path, buf.getvalue())
    return path


def write_tables(runs: pd.DataFrame, read: list[dict], out: Path) -> Path:
    """runs (with each folder's record), epochs and evals tables; returns the runs table's path. An old
    evals table is removed where no run has evaluation points now."""
    rows = set(_ROWS.values())
    records = {
        r["run_dir"]: json.dumps(_paths({k: v for k, v in r.items() if k not in rows}, _to_repo), sort_keys=True)
        for r in read
    }
    runs = runs.assign(record=runs["run_dir"].map(records)) if len(runs) else runs
    path = write_frame(runs, out, "runs")
    for stem, key in _ROWS.items():
        rows = [{"run_dir": r["run_dir"], **row} for r in read for row in (r.get(key) or [])]
        if rows:
            write_frame(pd.DataFrame(rows), out, stem)
        else:
            for ext in ("parquet", "csv"):
                (Path(out) / f"{stem}.{ext}").unlink(missing_ok=True)
    return path


def is_report(folder: Path) -> bool:
    """A report folder: it has its runs table and summary.json (a results folder has run folders)."""
    folder = Path(folder)
    return (folder / "summary.json").is_file() and any((folder / f"runs.{e}").is_file() for e in ("parquet", "csv"))


def _read_frame(folder: Path, stem: str) -> pd.DataFrame:
    for ext, reader in (("parquet", pd.read_parquet), ("csv", pd.read_csv)):
        path = Path(folder) / f"{stem}.{ext}"
        if path.is_file():
            return reader(path)
    return pd.DataFrame()


def read_tables(folder: Path) -> list[dict]:
    """The records of ``collect.read_run`` from a report folder's tables (``write_tables``)."""
    runs = _read_frame(folder, "runs")
    if "record" not in runs:
        raise ReportError(
            f"{folder} was made before a report kept its runs in its own tables (runs.parquet has no `record` "
            "column), so it cannot be rebuilt from them; rebuild it from its results folder: "
            "python -m runners.report <results_dir> --out " + str(folder)
        )
    rows = {stem: _by_run(_read_frame(folder, stem), f"{folder}/{stem}") for stem in _ROWS}
    read = []
    for text in runs["record"]:
        record = _paths(json.loads(text), _from_repo)
        for stem, key in _ROWS.items():
            if record["run_dir"] in rows[stem]:
                record[key] = rows[stem][record["run_dir"]]
        read.append(record)
    return read


# An absolute path in a record (data.root, results_dir, ...) is kept relative to the checkout, so that no
# machine's layout is committed, and made absolute again on reading: a rebuild sees what the run recorded.
_REPO_PREFIX = "@checkout/"


def _to_repo(value: str) -> str:
    return _REPO_PREFIX + os.path.relpath(value, REPO) if os.path.isabs(value) else value


def _from_repo(value: str) -> str:
    if value.startswith(_REPO_PREFIX):
        return os.path.normpath(os.path.join(REPO, value[len(_REPO_PREFIX) :]))
    return value


def _paths(value, convert):
    """``value`` (a record without its rows) with every string path converted."""
    if isinstance(value, dict):
        return {k: _paths(v, convert) for k, v in value.items()}
    if isinstance(value, list):
        return [_paths(v, convert) for v in value]
    return convert(value) if isinstance(value, str) else value


def _by_run(frame: pd.DataFrame, where: str) -> dict[str, list[dict]]:
    """Per run_dir, its rows as the run wrote them: the columns it has (a column another run has is
    absent from its rows, not NaN) and floats, as run_folder.read_rows reads them."""
    out = {}
    if frame.empty:
        return out
    for name, g in frame.groupby("run_dir", sort=False):
        g = g.drop(columns="run_dir").dropna(axis=1, how="all")
        out[name] = [{k: float(v) for k, v in row.items()} for row in g.to_dict(orient="records")]
        if any(math.isnan(v) for row in out[name] for v in row.values()):  # a run writes whole rows only
            raise ReportError(f"{where}: the rows of {name} have missing values; rebuild from the run folders")
    return out
