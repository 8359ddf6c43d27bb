"""Hydra-specific glue (the config boundary): per-job status records and the end-of-sweep summary.

Basic and submitit launchers alike report a job that caught its own failure as finished; each
job therefore leaves ``<sweep dir>/status/<job num>.json``, and ``SweepSummary`` reads them when
the sweep ends, prints one line per failed run and exits non-zero if any failed.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

from hydra.experimental.callback import Callback

from ..atomic import write_json
from .progress import SweepProgress, show_progress, sweep_size
from .sweeps import command_of


def job_status(job_return) -> str:
    """The run's status string; "failed" for a job that raised (return_value would re-raise it)."""
    from hydra.core.utils import JobStatus

    if job_return.status != JobStatus.COMPLETED:
        return "failed"
    value = job_return.return_value
    return value if isinstance(value, str) else "failed"


def record_status(sweep_dir: str, job_num: int, record: dict) -> None:
    write_json(Path(sweep_dir) / "status" / f"{job_num}.json", record)


def print_final_tables(out: Path, summary: dict) -> None:
    """Each section's final table as ``table_final.md`` has it: mean ± std per optimizer and dataset, with
    the counts (done / attempted)."""
    from ..report.paths import section_title

    for section in sorted(summary.get("protocols", {})):
        path = out / section / "table_final.md"
        if not path.exists():
            continue
        rows = [line for line in path.read_text().splitlines() if line.startswith("|")]
        print(f"\nfinal table, {section_title(section)} ({path}):")
        print("\n".join(rows))


def sweep_command(config) -> str:
    """``python run.py -m`` with the launcher's and sweeper's overrides, then the task's: the command that
    re-runs the sweep as it ran (``hydra/launcher=parallel hydra.launcher.workers=2`` included)."""
    return command_of(list(config.hydra.overrides.hydra), list(config.hydra.overrides.task))


class SweepSummary(Callback):
    """Summarise the sweep's jobs, write the report of its results folder, fail if any job failed.

    ``report=false`` (hydra.callbacks.sweep_summary.report=false) skips the report.
    """

    def __init__(self, report: bool = True) -> None:
        self.report = report
        self.progress = None
        self._job_start = None

    def on_multirun_start(self, config, **kwargs) -> None:
        from ..tracking.fanout import forget_failures

        forget_failures()  # a tracker that failed in an earlier sweep of this process is tried again
        target = str(config.hydra.launcher.get("_target_", ""))
        # Only Hydra's basic launcher ends jobs in this process, so only then does this callback draw
        # the sweep bar; the submitit launchers draw it themselves as results arrive.
        if target.endswith("BasicLauncher"):
            self.progress = SweepProgress(sweep_size(config), show_progress(config.trainer.get("progress", "auto")))
        if target.endswith("SlurmLauncher") and shutil.which("sbatch") is None:
            print(
                "Slurm launcher requested (hydra/launcher=slurm) but `sbatch` is not on PATH. Install Slurm "
                "(Debian: apt-get install slurm-wlm munge; for a local test cluster: "
                'eval "$(scripts/slurm_local.sh start)"), or pick another launcher: '
                "hydra/launcher=local (submitit on this machine) or drop the option (in-process).",
                file=sys.stderr,
            )
            sys.exit(2)

    def on_job_start(self, config, **kwargs) -> None:
        self._job_start = time.monotonic()

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if self.progress is not None:
            self.progress.update(
                job_status(job_return), time.monotonic() - self._job_start if self._job_start else None
            )

    def on_multirun_end(self, config, **kwargs) -> None:
        if self.progress is not None:
            self.progress.close()
        status_dir = Path(config.hydra.sweep.dir) / "status"
        records = [json.loads(p.read_text()) for p in sorted(status_dir.glob("*.json"))]
        counts = Counter(r["status"] for r in records)
        print(f"sweep finished: {len(records)} run(s): " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        warned = Counter(w.split(": ", 1)[0] for r in records for w in r.get("warnings") or [])
        for what, n in sorted(warned.items()):  # e.g. "logger mlflow failed": once, with the first error
            first = next(w for r in records for w in r.get("warnings") or [] if w.startswith(what + ": "))
            print(
                f"  WARNING {what} in {n} run(s) ({first.split(': ', 1)[1][:200]}); each run.json records it",
                file=sys.stderr,
            )
        failed = [r for r in records if r["status"] in ("failed", "interrupted")]
        for r in failed:
            print(f"  {r['status'].upper()} {r['run_dir']}: {r.get('error')}", file=sys.stderr)
        for kind in ("diverged", "running elsewhere", "taken over", "stale"):
            for r in records:
                if r["status"] == kind:
                    print(f"  {kind} {r['run_dir']}" + (f": {r['error']}" if r.get("error") else ""), file=sys.stderr)
        if counts["stale"]:
            print(
                f"{counts['stale']} finished run(s) came from other code, package versions, data or hardware and were "
                "kept, not re-run; add rerun=stale to the same command to re-run them",
                file=sys.stderr,
            )
        if self.report:
            from ..report import ReportError, build_report

            out = Path(config.results_dir) / "report"
            try:
                command = sweep_command(config)
                summary = build_report(Path(config.results_dir), out, command=command)
                print_final_tables(out, summary)
                print(f"report written to {out} (its README.md lists every file)")
            except ReportError as err:
                print(f"no report: {err}", file=sys.stderr)
        if failed:
            print(
                f"{len(failed)} run(s) failed or were interrupted; re-launch the same sweep to retry or resume "
                "them (finished runs are skipped)",
                file=sys.stderr,
            )
            sys.exit(1)
