"""One owner per run folder at a time, across processes and nodes on a shared filesystem.

``RunLock(run_dir).acquire()`` creates ``<run_dir>/LOCK`` with ``O_CREAT | O_EXCL`` (atomic on
local filesystems and on NFSv3+, unlike ``flock``, which NFS does not reliably share between
nodes). The file names its owner: host, PID and a random token. While the lock is held a daemon
thread touches it every ``HEARTBEAT_S`` seconds, so its modification time is the owner's heartbeat
however long an epoch takes.

The owner of an existing lock is gone when
  * it ran where this process runs (the same machine, boot and PID namespace: ``outcomes.machine_id``,
    never the host name) and its PID no longer exists, or
  * its heartbeat is older than ``STALE_AFTER_S`` (10 missed beats; the only test for another
    host's owner, and on this host it covers a PID that was reused).
A gone owner's lock is taken over: the taker holds a short-lived ``LOCK.takeover`` guard (itself
``O_EXCL``), checks that the lock it judged stale is still the same file, and replaces it. The run
then resumes from its checkpoint like any killed run.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import threading
import time
from pathlib import Path
from typing import Optional

from ..outcomes import STALE_AFTER_S, lock_record, machine_id, owner_gone
from ..run_folder import LOCK

__all__ = ["RunLock", "LockLost", "HEARTBEAT_S", "STALE_AFTER_S"]

HEARTBEAT_S = 30.0
_GUARD_STALE_S = 60.0  # a take-over guard older than this was left by a taker that died


class LockLost(RuntimeError):
    """Another process took the run over: its owner must stop writing to the folder."""


class RunLock:
    def __init__(self, run_dir: Path, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S):
        self.path = Path(run_dir) / LOCK
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.owner = {
            "host": platform.node(),  # for people; machine_id decides
            "machine": machine_id(),
            "pid": os.getpid(),
            "token": secrets.token_hex(8),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.took_over: Optional[dict] = None  # the previous owner, when its lock was stale

    # ---------------------------------------------------------------- public
    def acquire(self) -> bool:
        """Take the lock; False when a live owner holds it (``holder()`` says who)."""
        if self._create(self.path):
            self._start_heartbeat()
            return True
        seen = self.holder()
        if seen is None or not self._stale(seen):
            return False
        if not self._create(self.path.with_name(LOCK + ".takeover")):
            self._clear_dead_guard()
            return False
        try:
            now = self.holder()  # still the lock judged stale? (someone may have taken it meanwhile)
            if now is None or now.get("token") != seen.get("token") or not self._stale(now):
                return False
            self.path.unlink(missing_ok=True)
            if not self._create(self.path):
                return False
            self.took_over = seen
        finally:
            self.path.with_name(LOCK + ".takeover").unlink(missing_ok=True)
        self._start_heartbeat()
        return True

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        current = self.holder()
        if current is not None and current.get("token") == self.owner["token"]:
            self.path.unlink(missing_ok=True)

    def holder(self) -> Optional[dict]:
        """The current owner record, with ``age_s`` since its last heartbeat; None when unlocked."""
        return lock_record(self.path)

    def held(self) -> bool:
        """Whether this owner still holds the lock (False once another process took it over)."""
        current = self.holder()
        return current is not None and current.get("token") == self.owner["token"]

    def check(self) -> None:
        """Raise :class:`LockLost` unless this owner still holds the lock: call before every write."""
        if not self.held():
            now = self.holder() or {}
            raise LockLost(
                f"{self.path.parent} was taken over by {now.get('host')} pid {now.get('pid')}; "
                "this process stopped writing to it"
            )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    # ---------------------------------------------------------------- internals
    def _create(self, path: Path) -> bool:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self.owner, f)
        return True

    def _stale(self, record: dict) -> bool:
        return owner_gone(record, self.stale_after_s)

    def _clear_dead_guard(self) -> None:
        guard = self.path.with_name(LOCK + ".takeover")
        try:
            if time.time() - guard.stat().st_mtime > _GUARD_STALE_S:
                guard.unlink(missing_ok=True)
        except FileNotFoundError:
            pass

    def _start_heartbeat(self) -> None:
        def beat():
            while not self._stop.wait(self.heartbeat_s):
                try:
                    if json.loads(self.path.read_text()).get("token") != self.owner["token"]:
                        return  # taken over: never refresh another owner's lock
                    os.utime(self.path)
                except FileNotFoundError:
                    return
                except (OSError, ValueError):
                    continue  # NFS ESTALE, EIO, a half-read file: a passing fault; the next beat tries again

        self._stop.clear()
        self._thread = threading.Thread(target=beat, name=f"heartbeat:{self.path}", daemon=True)
        self._thread.start()
