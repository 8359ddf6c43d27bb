"""``hydra/launcher=parallel``: a sweep's runs side by side on this machine, on long-lived workers.

    python run.py -m hydra/launcher=parallel optimizer=thermolion,adamw seed=0,1,2
    python run.py -m hydra/launcher=parallel hydra.launcher.workers=8 hydra.launcher.runs_per_gpu=4 ...

``workers`` processes live for the whole sweep (``runners.sweep.pool``): each imports torch and the
harness once and keeps its compiled kernels, then runs job after job from the sweep's queue, so a
run pays no process start-up. A worker that dies (SIGKILL, the OOM killer, a CUDA error) costs the
run it held only: that run is recorded interrupted (its run folder says so, and the same command
resumes it), a new worker takes the slot, and the queue goes on. Each worker has ``threads_per_run``
threads and, on a GPU machine, one GPU through ``CUDA_VISIBLE_DEVICES``, ``runs_per_gpu`` workers
per GPU, round-robin. ``workers`` defaults to GPUs x ``runs_per_gpu``, else CPU cores /
``threads_per_run``. A run still going after ``timeout_min`` is stopped (and resumable).

Everything the serial launcher promises holds, because it lives in the job itself: one owner per
run (the run's LOCK), skip, resume and stale, the per-job status records and the end-of-sweep summary
and report. Ctrl-C stops every job, records them as interrupted, and exits 130 with one line instead
of a traceback. Each worker's output is in ``<sweep dir>/.workers/worker<k>.log``; what a run
records (its status, error and warnings) reaches the launcher's lines and the summary.
"""

import os
import pickle
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import open_dict

from runners.sweep.hydra_glue import job_status, record_status
from runners.sweep.pool import START_METHODS, Ended, WorkerPool
from runners.sweep.progress import SweepProgress, show_progress

POLL_S = 0.2  # how often the launcher looks for ended jobs (a run takes a second at least)


@dataclass
class ParallelLauncherConf:
    _target_: str = "hydra_plugins.thermolion_launcher.parallel.ParallelLauncher"
    workers: Optional[int] = None  # runs at once; None: GPUs x runs_per_gpu, else CPU cores / threads_per_run
    threads_per_run: int = 1  # torch (and OpenMP) threads of each worker
    runs_per_gpu: int = 1  # workers sharing one GPU
    timeout_min: int = 24 * 60  # a run still going after this is stopped (then resumable)
    start_method: str = "forkserver"  # or spawn: a fresh interpreter per worker (slower to start and replace)
    pin_cores: bool = True  # each worker on its own threads_per_run cores, where workers x threads fit
    log_dir: str = "${hydra.sweep.dir}/.workers"


ConfigStore.instance().store(group="hydra/launcher", name="parallel", node=ParallelLauncherConf, provider="thermolion")


def default_workers(threads_per_run: int, runs_per_gpu: int, gpus: int, cores: Optional[int]) -> int:
    """GPUs x runs_per_gpu on a GPU machine, else the CPU cores / threads_per_run (at least 1)."""
    return gpus * runs_per_gpu if gpus else max(1, (cores or 1) // threads_per_run)


def run_pickled(launcher_and_state: bytes, overrides: list, job_num: int) -> bytes:
    """In a worker: one job. The launcher (with Hydra's state) comes as cloudpickle, made once per sweep, and
    the result goes back as cloudpickle, as submitit does: the task function lives in run.py's ``__main__``,
    and Hydra's plugin scan re-imports the config classes a result refers to. A job's exception that does
    not pickle comes back as its text."""
    import cloudpickle

    launcher, state = cloudpickle.loads(launcher_and_state)
    ret = launcher(overrides, job_num, state)
    try:
        return cloudpickle.dumps(ret)
    except Exception:  # noqa: BLE001 - e.g. an exception holding a lock or an open file
        ret.return_value = RuntimeError(repr(ret._return_value))
        return cloudpickle.dumps(ret)


class ParallelLauncher(Launcher):
    def __init__(
        self,
        workers: Optional[int] = None,
        threads_per_run: int = 1,
        runs_per_gpu: int = 1,
        timeout_min: int = 24 * 60,
        start_method: str = "forkserver",
        pin_cores: bool = True,
        log_dir: str = ".workers",
    ) -> None:
        checks = (("threads_per_run", threads_per_run), ("runs_per_gpu", runs_per_gpu), ("workers", workers))
        for name, value in (*checks, ("timeout_min", timeout_min)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                sys.exit(f"error: hydra.launcher.{name} must be an integer >= 1, got {value!r}")
        if start_method not in START_METHODS:
            methods = ", ".join(START_METHODS)
            sys.exit(f"error: hydra.launcher.start_method must be one of {methods}, got {start_method!r}")
        self.workers, self.threads_per_run, self.runs_per_gpu = workers, threads_per_run, runs_per_gpu
        self.timeout_s, self.start_method, self.log_dir = timeout_min * 60, start_method, log_dir
        self.pin_cores = bool(pin_cores)
        self.config = self.hydra_context = self.task_function = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def __call__(self, sweep_overrides: list, job_num: int, singleton_state) -> JobReturn:
        """In a worker: the run as Hydra's launchers run a job."""
        Singleton.set_state(singleton_state)
        setup_globals()
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(sweep_overrides))
        with open_dict(sweep_config.hydra.job) as job:
            job.id, job.num = f"{os.getpid()}_{job_num}", job_num
        return run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import cloudpickle
        import torch

        gpus = torch.cuda.device_count()
        workers = self.workers or default_workers(self.threads_per_run, self.runs_per_gpu, gpus, os.cpu_count())
        workers = min(workers, len(job_overrides)) or 1
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        print(
            f"[parallel] {len(job_overrides)} run(s), at most {workers} at once, {self.threads_per_run} thread(s) each"
            + (f", {self.runs_per_gpu} per GPU on {gpus} GPU(s)" if gpus else ""),
            flush=True,
        )
        pool = WorkerPool(
            workers,
            self.threads_per_run,
            [k % gpus for k in range(workers)] if gpus else [],
            Path(str(self.log_dir)),
            self.start_method,
            self.pin_cores,
        )
        todo = deque(enumerate(job_overrides))
        returns: list = [None] * len(job_overrides)
        progress = SweepProgress(
            len(job_overrides), show_progress(str(self.config.trainer.get("progress", "auto"))), parallel=workers
        )
        launcher_and_state = cloudpickle.dumps((self, Singleton.get_state()))  # the same for every job
        try:
            _start(pool)
            while todo or pool.busy():
                for worker in pool.idle():
                    if not todo:
                        break
                    i, overrides = todo.popleft()
                    job = (launcher_and_state, list(overrides), initial_job_idx + i)
                    pool.submit(worker, (i, overrides), run_pickled, *job)
                progress.running = len(pool.busy())
                progress.refresh()
                for ended in pool.wait(POLL_S):
                    i, overrides = ended.job
                    returns[i] = self._outcome(ended, sweep_dir, initial_job_idx + i, overrides)
                    progress.running = len(pool.busy())
                    progress.update(job_status(returns[i]), time.monotonic() - ended.worker.since)
                for worker in pool.busy():
                    if time.monotonic() - worker.since > self.timeout_s:
                        i, overrides = worker.job
                        pool.stop(worker)
                        why = f"stopped after timeout_min={self.timeout_s // 60}"
                        returns[i] = _interrupted(sweep_dir, initial_job_idx + i, overrides, why)
                        progress.update("interrupted", None)
        except KeyboardInterrupt:
            self._stop(pool, sweep_dir, initial_job_idx, progress)
        pool.close()
        progress.close()
        return returns

    @staticmethod
    def _outcome(ended: Ended, sweep_dir: Path, job_num: int, overrides) -> JobReturn:
        """The job's JobReturn; a job whose worker died (killed, out of memory) becomes an interrupted record."""
        if ended.died:
            return _interrupted(sweep_dir, job_num, overrides, ended.error)
        if ended.error is not None:  # the job machinery itself raised: a failed record naming it
            print(_line(_record(sweep_dir, job_num, overrides, "failed", ended.error)), flush=True)
            return _returned(overrides, "failed")
        record = _status_record(sweep_dir, job_num)
        if record:
            print(_line(record), flush=True)
        try:
            return pickle.loads(ended.value)
        except Exception as err:  # noqa: BLE001 - its run folder and status record say how the run ended
            return _returned(overrides, (record or {}).get("status") or f"failed ({type(err).__name__}: {err})")

    @staticmethod
    def _stop(pool: WorkerPool, sweep_dir: Path, initial_job_idx: int, progress) -> None:
        """Ctrl-C: stop every job (each run keeps its last checkpoint), record them, one line, exit 130."""
        running = [w.job for w in pool.busy()]
        for worker in pool.slots:
            pool.stop(worker)
        for i, overrides in running:
            _interrupted(sweep_dir, initial_job_idx + i, overrides, "stopped by Ctrl-C")
        progress.close()
        print(
            f"interrupted: {len(running)} running run(s) stopped, each at its last finished epoch; "
            "run the same command to resume them (finished runs are skipped)",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(130)


def _start(pool: WorkerPool) -> None:
    """Start the workers; if they cannot start, one line naming their logs and exit 1, nothing run."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        pool.start()
    except (BrokenProcessPool, OSError) as err:
        for worker in pool.slots:
            pool.stop(worker)
        sys.exit(
            f"error: the parallel launcher's workers did not start ({type(err).__name__}: {err}); their output is "
            f"in {pool.log_dir}; hydra.launcher.start_method=spawn starts them without the forkserver"
        )


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


def _record(sweep_dir: Path, job_num: int, overrides, status: str, error: str) -> dict:
    record = {
        "status": status,
        "run_dir": f"job {job_num} ({' '.join(filter_overrides(overrides))})",
        "error": error,
        "final": {},
    }
    record_status(str(sweep_dir), job_num, record)
    return record


def _interrupted(sweep_dir: Path, job_num: int, overrides, error: str) -> JobReturn:
    record = _record(sweep_dir, job_num, overrides, "interrupted", f"{error}; the same command resumes it")
    print(_line(record), flush=True)
    return _returned(overrides, "interrupted")


def _returned(overrides, status: str) -> JobReturn:
    """A job's return for a run the launcher accounts for itself (its status is the sweep summary's)."""
    ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
    ret.return_value = status
    return ret
