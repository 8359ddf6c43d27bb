"""``hydra/launcher=parallel``: a sweep's runs side by side on this machine, at most ``workers`` at once.

    python run.py -m hydra/launcher=parallel optimizer=thermolion,adamw seed=0,1,2
    python run.py -m hydra/launcher=parallel hydra.launcher.workers=8 hydra.launcher.runs_per_gpu=4 ...

Built on submitit's local executor (the engine of ``hydra/launcher=local``), with a cap: each run is a
job in its own process, so a crash, an out-of-memory kill or a CUDA error takes down that run only;
the launcher starts the next job when one ends. Chosen over Hydra's joblib launcher (loky), whose
workers are reused across runs and whose pool breaks when one is killed, and over a process pool for
the same reasons. Each job sets its thread count (``threads_per_run``) before the run builds anything,
and on a GPU machine gets one GPU through ``CUDA_VISIBLE_DEVICES``, ``runs_per_gpu`` jobs per GPU,
round-robin. ``workers`` defaults to GPUs x ``runs_per_gpu``, else CPU cores / ``threads_per_run``.

Everything the serial launcher promises holds, because it lives in the job itself: one owner per
run (the run's LOCK), skip, resume and stale, the per-job status records and the end-of-sweep summary
and report. A job whose process was killed is recorded as interrupted (its run folder says so, and
the same command resumes it). Ctrl-C stops every job, records them as interrupted, and exits 130
with one line instead of a traceback.
"""

import os
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides

from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from runners.sweep.hydra_glue import job_status, record_status
from runners.sweep.progress import SweepProgress, show_progress

POLL_S = 0.2  # how often the launcher looks for ended jobs (a run takes seconds at least)


@dataclass
class ParallelLauncherConf(LocalQueueConf):
    _target_: str = "hydra_plugins.thermolion_launcher.parallel.ParallelLauncher"
    workers: Optional[int] = None  # runs at once; None: GPUs x runs_per_gpu, else CPU cores / threads_per_run
    threads_per_run: int = 1  # torch (and OpenMP) threads of each run
    runs_per_gpu: int = 1  # runs sharing one GPU
    timeout_min: int = 24 * 60  # a run still going after this is stopped (then resumable)
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"


ConfigStore.instance().store(group="hydra/launcher", name="parallel", node=ParallelLauncherConf, provider="thermolion")


def default_workers(threads_per_run: int, runs_per_gpu: int, gpus: int, cores: Optional[int]) -> int:
    """GPUs x runs_per_gpu on a GPU machine, else the CPU cores / threads_per_run (at least 1)."""
    return gpus * runs_per_gpu if gpus else max(1, (cores or 1) // threads_per_run)


class ParallelLauncher(BaseSubmititLauncher):
    _EXECUTOR = "local"

    def __init__(self, workers: Optional[int] = None, threads_per_run: int = 1, runs_per_gpu: int = 1, **params):
        super().__init__(**params)
        for name, value in (("threads_per_run", threads_per_run), ("runs_per_gpu", runs_per_gpu), ("workers", workers)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                sys.exit(f"error: hydra.launcher.{name} must be an integer >= 1, got {value!r}")
        self.workers, self.threads_per_run, self.runs_per_gpu = workers, threads_per_run, runs_per_gpu

    def __call__(self, sweep_overrides, job_dir_key, job_num, job_id, singleton_state, threads: int = 1):
        """Runs in the job's own process: its thread count first, then the run as Hydra's launchers run it."""
        import torch

        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
        return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit
        import torch

        gpus = torch.cuda.device_count()
        workers = self.workers or default_workers(self.threads_per_run, self.runs_per_gpu, gpus, os.cpu_count())
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        executor = submitit.LocalExecutor(folder=self.params["submitit_folder"])
        executor.update_parameters(timeout_min=self.params["timeout_min"])
        free_gpus = [g for _ in range(self.runs_per_gpu) for g in range(gpus)]  # round-robin over GPUs
        todo = deque(enumerate(job_overrides))
        running: dict = {}  # job -> (position, overrides, gpu, started)
        returns: list = [None] * len(job_overrides)
        print(
            f"[parallel] {len(job_overrides)} run(s), at most {workers} at once, {self.threads_per_run} thread(s) each"
            + (f", {self.runs_per_gpu} per GPU on {gpus} GPU(s)" if gpus else ""),
            flush=True,
        )
        progress = SweepProgress(
            len(job_overrides), show_progress(str(self.config.trainer.get("progress", "auto"))), parallel=workers
        )
        try:
            while todo or running:
                while todo and len(running) < workers:
                    i, overrides = todo.popleft()
                    gpu = free_gpus.pop(0) if free_gpus else None
                    executor.update_parameters(
                        gpus_per_node=0 if gpu is None else 1, visible_gpus=() if gpu is None else (gpu,)
                    )
                    idx = initial_job_idx + i
                    job = _submit_ignoring_sigint(
                        executor,
                        self,
                        list(overrides),
                        "hydra.sweep.dir",
                        idx,
                        f"job_id_for_{idx}",
                        Singleton.get_state(),
                        self.threads_per_run,
                    )
                    running[job] = (i, overrides, gpu, time.monotonic())
                progress.running = len(running)
                progress.refresh()
                time.sleep(POLL_S)
                for job in [j for j in running if j.done()]:
                    i, overrides, gpu, started = running.pop(job)
                    if gpu is not None:
                        free_gpus.append(gpu)
                    returns[i] = self._outcome(job, sweep_dir, initial_job_idx + i, overrides)
                    progress.running = len(running)
                    progress.update(job_status(returns[i]), time.monotonic() - started)
        except KeyboardInterrupt:
            self._stop(running, sweep_dir, initial_job_idx, progress)
        progress.close()
        return returns

    @staticmethod
    def _outcome(job, sweep_dir: Path, job_num: int, overrides) -> JobReturn:
        """The job's JobReturn; a job whose process died (killed, out of memory) becomes an interrupted record."""
        try:
            ret = job.results()[0]
            record = _status_record(sweep_dir, job_num)
            if record:
                print(_line(record), flush=True)
            return ret
        except Exception as err:  # noqa: BLE001 - its run folder says interrupted; the same command resumes it
            lines = str(err).strip().splitlines()
            return _interrupted(sweep_dir, job_num, overrides, f"{type(err).__name__}: {lines[0] if lines else ''}")

    @staticmethod
    def _stop(running: dict, sweep_dir: Path, initial_job_idx: int, progress) -> None:
        """Ctrl-C: stop every job (each run keeps its last checkpoint), record them, one line, exit 130."""
        for job in running:
            _kill_tree(int(job.job_id))  # the local executor's job id is its controller's PID
        deadline = time.monotonic() + 30
        while any(not j.done() for j in running) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        for _, (i, overrides, _, _) in running.items():
            _interrupted(sweep_dir, initial_job_idx + i, overrides, "stopped by Ctrl-C")
        progress.close()
        print(
            f"interrupted: {len(running)} running run(s) stopped, each at its last finished epoch; "
            "run the same command to resume them (finished runs are skipped)",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(130)


def _submit_ignoring_sigint(executor, *args):
    """submit, with the job's processes started with SIGINT ignored (inherited through exec, and Python
    then installs no KeyboardInterrupt handler): Ctrl-C is the launcher's to handle."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return executor.submit(*args)
    finally:
        signal.signal(signal.SIGINT, previous)


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its descendants (Linux /proc; elsewhere ``pid`` alone)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    todo, tree = [pid], []
    while todo:
        tree.append(todo.pop())
        todo += parents.get(tree[-1], [])
    for p in reversed(tree):  # the runs first, then their controllers
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def _status_record(sweep_dir: Path, job_num: int) -> Optional[dict]:
    import json

    try:
        return json.loads((sweep_dir / "status" / f"{job_num}.json").read_text())
    except (OSError, ValueError):
        return None


def _line(record: dict) -> str:
    final = record.get("final") or {}
    parts = [f"{record['status']:8s}", str(record["run_dir"])]
    if "eval_acc" in final:
        parts.append(f"eval_acc {final['eval_acc']:.2f}%  train_loss {final['train_loss']:.4f}")
    if record.get("error"):
        parts.append(str(record["error"]))
    return "  ".join(parts)


def _interrupted(sweep_dir: Path, job_num: int, overrides, error: str) -> JobReturn:
    record = {
        "status": "interrupted",
        "run_dir": f"job {job_num} ({' '.join(filter_overrides(overrides))})",
        "error": f"{error}; the same command resumes it",
        "final": {},
    }
    record_status(str(sweep_dir), job_num, record)
    print(_line(record), flush=True)
    ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
    ret.return_value = "interrupted"
    return ret
