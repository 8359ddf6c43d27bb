"""Remove the folders of failed runs, so that a report no longer lists them and a relaunch starts them anew.

    python -m runners.sweep.clean RESULTS [--dry-run]

A failed run is one whose ``run.json`` says ``failed`` and that has no ``DONE``: a bad value or a
crash, never a finished or diverged run (those are results). A folder whose run is live (its lock
is held) is left alone. Prints one line per folder and exits 0.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from .. import run_folder as rf
from .lock import RunLock

__all__ = ["failed_runs", "main"]


def failed_runs(results: Path) -> list[tuple[Path, str]]:
    """(run folder, its error) for every failed run under ``results``."""
    out = []
    for run_dir in rf.find_runs(results):
        if rf.is_done(run_dir):
            continue
        try:
            info = rf.read_info(run_dir) or {}
        except rf.UnreadableRecord:
            continue
        if info.get("status") == "failed":
            out.append((run_dir, str(info.get("error", ""))))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runners.sweep.clean", description=__doc__.splitlines()[0])
    ap.add_argument("results_dir", type=Path)
    ap.add_argument("--dry-run", action="store_true", help="list the folders, remove nothing")
    args = ap.parse_args(argv)
    if not args.results_dir.is_dir():
        print(f"clean: {args.results_dir} is not a folder; pass a sweep's results_dir", file=sys.stderr)
        return 2
    removed = 0
    for run_dir, error in failed_runs(args.results_dir):
        lock = RunLock(run_dir)
        if not args.dry_run and not lock.acquire():
            print(f"kept      {run_dir}  (a live process holds its lock)")
            continue
        try:
            if not args.dry_run:
                shutil.rmtree(run_dir)
                removed += 1
        finally:
            if not args.dry_run:
                lock.release()
        first = (error.splitlines() or [""])[0][:100]
        print(f"{'would remove' if args.dry_run else 'removed':9s} {run_dir}  ({first})")
    print(f"{removed} failed run folder(s) removed" if not args.dry_run else "dry run: nothing removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
