"""Run outcomes: what a run folder's files say happened, and how each outcome enters the numbers.

Every run folder has one status, read from its files alone (``run.json``, ``DONE`` and ``LOCK``):

* done: ``DONE`` written and ``run.json`` says done. Counts with its own numbers.
* diverged: ``DONE`` written and ``run.json`` says diverged (a non-finite loss, metric or
  diagnostic). Counts with chance (100 / classes) as its final and best accuracy, an infinite
  time-to-target, and chance for a tuning trial or a tuning seed.
* failed: ``run.json`` records the exception. No number; counted as attempted, named in its cell
  and listed with its error.
* interrupted: ``run.json`` says running (or was never written) but its owner is gone (SIGKILL,
  the OOM killer, a lost node). As failed; the same command resumes it from its last checkpoint.
* running: its owner is alive and its heartbeat fresh. As failed, until it ends.
* stale: done or diverged with other code, package versions or device type than would run now
  (only when a check is given: ``runners.identity.stale_reasons``). Counts as what it finished as;
  tables warn of mixed code and packages, and ``rerun=stale`` re-runs it.

A diverged run is a result: leaving it out would let the optimizer that diverges most look best
(survivorship). A failed, interrupted or running run is no result yet: it is never given a number,
but every cell says how many runs it covers, so a gap is never silent.

The owner test lives here too (``sweep.lock`` uses it): an owner is gone when its heartbeat (the
LOCK file's modification time) is older than ``STALE_AFTER_S``, or when it ran where this process
runs (the same ``machine_id``: machine, boot and PID namespace) and its PID no longer exists. A host
name is not enough for the second test: containers and cluster nodes share names (this machine's is
``vm``), and another namespace's live PID is invisible from here.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .run_folder import LOCK, is_done, read_metrics

__all__ = [
    "STATUSES",
    "COUNTED",
    "STALE_AFTER_S",
    "Outcome",
    "classify",
    "counted_accuracy",
    "chance",
    "lock_record",
    "owner_gone",
    "pid_alive",
    "machine_id",
    "recorded_warnings",
]

STATUSES = {
    "done": "its own numbers",
    "diverged": "chance (100 / classes) for final and best accuracy; time-to-target infinite",
    "failed": "no number; counted as attempted and named in its cell; a miss at chance across datasets",
    "interrupted": "no number; counted as attempted and named in its cell (the same command resumes it); "
    "a miss at chance across datasets",
    "running": "no number until it ends; counted as attempted; a miss at chance across datasets",
    "stale": "as done or diverged, with a mixed-version warning (rerun=stale re-runs it)",
    "unreadable": "no number: its files cannot be read (a truncated metrics.csv, DONE without run.json)",
}
COUNTED = ("done", "diverged")  # the outcomes that are results (stale ones count as what they finished as)

STALE_AFTER_S = 300.0  # an owner's lock without a heartbeat for this long is gone (10 missed beats)


@dataclass(frozen=True)
class Outcome:
    status: str  # a key of STATUSES
    reason: str  # one line: the error, the epoch it diverged at, the owner and its heartbeat age
    finished_as: Optional[str] = None  # for stale runs: done or diverged
    rows: Optional[list] = None  # a done run's metrics.csv rows, read once here for the caller


def chance(num_classes: int) -> float:
    """Chance-level accuracy in percent: what a diverged run scores."""
    return 100.0 / num_classes


def counted_accuracy(status: str, accuracy: float, num_classes: int) -> float:
    """The accuracy a run enters the statistics with: chance for a diverged run, else its own."""
    return chance(num_classes) if status == "diverged" else accuracy


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def owner_gone(record: dict, stale_after_s: float = STALE_AFTER_S) -> bool:
    """Whether a lock's owner (a record with machine, pid and ``age_s``) is gone."""
    if record["age_s"] > stale_after_s:  # also covers a reused PID here
        return True
    pid, here = record.get("pid"), machine_id()
    same_place = here is not None and record.get("machine") == here
    return same_place and isinstance(pid, int) and pid > 0 and not pid_alive(pid)


@functools.cache
def machine_id() -> Optional[str]:
    """Where PIDs mean the same process: /etc/machine-id, the kernel's boot id and this PID namespace.
    None where the OS tells none of them (then only heartbeats decide)."""
    parts = []
    for path in ("/etc/machine-id", "/proc/sys/kernel/random/boot_id"):
        try:
            parts.append(Path(path).read_text().strip())
        except OSError:
            parts.append("")
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        parts.append("")
    return ":".join(parts) if parts[1] and parts[2] else None


def lock_record(path: Path) -> Optional[dict]:
    """The owner record of a LOCK file with ``age_s`` since its last heartbeat; None when there is none."""
    try:
        record = json.loads(path.read_text())
        record["age_s"] = time.time() - path.stat().st_mtime
        return record
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # being written right now, or its creator died before writing it
        try:  # aged by the file itself, so an empty LOCK left by a dead creator goes stale too
            age = time.time() - path.stat().st_mtime
        except OSError:
            age = 0.0
        return {"host": "?", "pid": -1, "token": "?", "age_s": age}


def classify(run_dir: Path, info: Optional[dict], stale: Optional[Callable[[dict], list[str]]] = None) -> Outcome:
    """The status of one run folder from its files (``info`` is its parsed run.json, None if absent).

    ``stale(info)`` names why a finished run would not give the same numbers now (empty: it would);
    without it no run is called stale."""
    info = info or {}
    recorded = info.get("status")
    if is_done(run_dir) and not info:
        return Outcome(
            "unreadable", "DONE but no run.json: its numbers cannot be attributed; delete the folder to re-run"
        )
    rows = None
    if is_done(run_dir) and recorded == "done":
        rows, problem = read_metrics(run_dir)
        if problem is None and info.get("epochs_done") is not None and len(rows) != info["epochs_done"]:
            problem = f"truncated: {len(rows)} rows, run.json records {info['epochs_done']} epochs"
        if problem:
            return Outcome("unreadable", f"metrics.csv {problem}; the same command re-runs it")
    if is_done(run_dir) and recorded in COUNTED:
        why = f"diverged at epoch {info.get('diverged_at_epoch')}" if recorded == "diverged" else "finished"
        reasons = stale(info) if stale is not None else []
        if reasons:
            return Outcome("stale", f"{why} with {'; '.join(reasons)}", recorded, rows)
        return Outcome(recorded, why, rows=rows)
    if recorded == "failed":
        return Outcome("failed", (info.get("error") or "failed (no error recorded)").splitlines()[0])
    owner = lock_record(run_dir / LOCK)
    if owner is not None and not owner_gone(owner):
        return Outcome(
            "running",
            f"held by {owner.get('host')} pid {owner.get('pid')}, heartbeat {owner['age_s']:.0f} s ago, "
            f"{info.get('epochs_done', 0)} epoch(s) done",
        )
    who = info.get("owner") or owner or {}
    return Outcome(
        "interrupted",
        f"its owner {who.get('host', '?')} pid {who.get('pid', '?')} is gone after "
        f"{info.get('epochs_done', 0)} epoch(s); the same command resumes it",
    )


def recorded_warnings(info: Optional[dict]) -> list[str]:
    """What a run recorded that its numbers do not show: each tracker that failed or was off for it, with
    its error (run.json's ``trackers``). One list for the sweep summary, ``runners.status`` and the report."""
    trackers = (info or {}).get("trackers") or {}
    return [
        f"logger {name} failed: {state['error']}"
        for name, state in sorted(trackers.items())
        if isinstance(state, dict) and state.get("error")
    ]
