"""Long-lived worker processes for a sweep, each replaced when it dies, a death costing only its job.

Each worker is a ``concurrent.futures.ProcessPoolExecutor`` of one process, not one executor of N:
when any worker of a shared pool dies, the standard library's executor (and loky's, joblib's engine)
fails every job in flight with ``BrokenProcessPool`` (``TerminatedWorkerError``) and the survivors'
runs are lost with it (``scripts/bench_pool_engines.py`` shows both). One executor per worker
confines a death to the job that worker held; the supervisor (the launcher) starts a new one.

Workers come from a forkserver that has imported torch and the harness once (``PRELOAD``, through
``set_forkserver_preload``): a worker is ready in about the time of that import, a replacement in
milliseconds, and workers share the imported pages until they write them. The forkserver runs no torch
op (so no OpenMP pool is forked) and never touches CUDA; each worker sets its thread count, its cores
and its GPU (``CUDA_VISIBLE_DEVICES``) before any run initialises them. Workers start with SIGINT ignored:
Ctrl-C is the launcher's to handle. Each writes its stdout and stderr, C libraries' included, to
its own log file.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

# What a worker imports before its first job, once in the forkserver (under spawn, in each worker): torch,
# the harness, the launcher's job code, and timm's optimizers (the registry imports timm when it first
# builds Muon: a second in every process). Not ThermoLion's compiled noise generator: compiling it in the
# forkserver delayed every worker's start by its ~4 s (sweeps without ThermoLion included) and saved no
# wall time on 2 cores, where the workers compile it side by side.
PRELOAD = ("torch", "runners.sweep.job", "hydra_plugins.thermolion_launcher.parallel", "timm.optim")
START_METHODS = ("forkserver", "spawn")
WATCH_S = 1.0  # how often a worker checks that its launcher is still there


@dataclass
class Worker:
    """One slot of the pool: its executor and process, and the job it holds (the caller's tag)."""

    index: int
    gpu: Optional[int]
    cores: Optional[set]  # the CPU cores it runs on (None: any)
    log: Path
    executor: Optional[ProcessPoolExecutor] = None
    pid: Optional[int] = None
    future: Optional[Future] = None
    job: Any = None
    since: float = 0.0  # when it took its job (time.monotonic)
    jobs_run: int = 0
    starts: int = 0


@dataclass
class Ended:
    """A job's end: its value, or why it has none (``died``: the worker process was lost with it)."""

    worker: Worker
    job: Any
    value: Any = None
    error: Optional[str] = None
    died: bool = False


@dataclass
class WorkerPool:
    workers: int
    threads: int
    gpus: list = field(default_factory=list)  # one per worker (None: no GPU), e.g. round-robin
    log_dir: Path = Path(".")
    start_method: str = "forkserver"
    pin_cores: bool = True  # each worker on its own cores where they fit (core_sets)

    def __post_init__(self) -> None:
        if self.start_method not in START_METHODS:
            raise ValueError(f"start_method must be one of {START_METHODS}, got {self.start_method!r}")
        self.context = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            self.context.set_forkserver_preload(list(PRELOAD))
        gpus = self.gpus or [None] * self.workers
        available = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ()
        cores = core_sets(self.workers, self.threads, available) if self.pin_cores else [None] * self.workers
        self.slots = [Worker(k, gpus[k], cores[k], self.log_dir / f"worker{k}.log") for k in range(self.workers)]

    def start(self) -> None:
        """Start every worker and wait until each has imported what it needs (in parallel)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        pending = [(w, self._launch(w)) for w in self.slots]
        for w, ready in pending:
            w.pid = ready.result()

    def idle(self) -> list[Worker]:
        return [w for w in self.slots if w.future is None]

    def busy(self) -> list[Worker]:
        return [w for w in self.slots if w.future is not None]

    def submit(self, worker: Worker, job: Any, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` (standard-picklable) on ``worker``; ``job`` tags the result."""
        if worker.executor is None:  # replaced after a death
            worker.pid = self._launch(worker).result()
        worker.future, worker.job, worker.since = worker.executor.submit(fn, *args), job, time.monotonic()

    def wait(self, timeout: float) -> list[Ended]:
        """The jobs that ended within ``timeout`` seconds; a dead worker's slot is left for a new one."""
        futures = {w.future: w for w in self.busy()}
        if not futures:
            return []
        done, _ = wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
        return [self._ended(futures[f]) for f in done]

    def stop(self, worker: Worker) -> None:
        """Kill ``worker``'s process tree now (its job is lost: the caller records it); a new process
        takes the slot at its next job."""
        if worker.pid is not None:
            kill_tree(worker.pid)
        if worker.executor is not None:
            worker.executor.shutdown(wait=False, cancel_futures=True)
        worker.executor = worker.pid = worker.future = None

    def close(self) -> None:
        for w in self.slots:
            if w.executor is not None:
                w.executor.shutdown(wait=True)
            w.executor = None

    def _launch(self, worker: Worker) -> Future:
        worker.executor = ProcessPoolExecutor(
            max_workers=1,
            mp_context=self.context,
            initializer=_init_worker,
            initargs=(self.threads, worker.gpu, worker.cores, str(worker.log), self.start_method, _me()),
        )
        worker.starts += 1
        with sigint_ignored():  # the process (and the forkserver, when it starts) inherit SIG_IGN
            return worker.executor.submit(os.getpid)

    def _ended(self, worker: Worker) -> Ended:
        future, job = worker.future, worker.job
        worker.future = worker.job = None
        try:
            value = future.result()
        except BrokenProcessPool:
            pid = worker.pid
            self.stop(worker)
            return Ended(worker, job, died=True, error=f"its worker process (pid {pid}) died")
        except Exception as err:  # noqa: BLE001 - raised by the job, or its result would not pickle
            return Ended(worker, job, error=f"{type(err).__name__}: {err}")
        worker.jobs_run += 1
        return Ended(worker, job, value=value)


def start_forkserver() -> None:
    """Start the forkserver and its imports now, without waiting: called by run.py before its own
    checks, so the imports overlap the launcher's start-up instead of following it."""
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(list(PRELOAD))
    with sigint_ignored():
        forkserver.ensure_running()


def core_sets(workers: int, threads: int, available: Sequence[int]) -> list[Optional[set[int]]]:
    """Each worker's own ``threads`` cores out of ``available`` (the launcher's affinity, e.g. a Slurm
    allocation's), or no pinning (None) where they do not fit side by side. Pinned, two 1-thread workers on
    2 cores ran the digits slice's runs ~8% faster than left to the scheduler (one measurement)."""
    cores = sorted(available)
    if workers * threads > len(cores):
        return [None] * workers
    return [set(cores[k * threads : (k + 1) * threads]) for k in range(workers)]


def _me() -> tuple[int, Optional[str]]:
    return os.getpid(), started_at(os.getpid())


def started_at(pid: int) -> Optional[str]:
    """A process's start time (Linux: clock ticks since boot), which with the pid names it even after the
    pid is reused; None when there is no such process (or it is a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def _exit_when_gone(pid: int, started: Optional[str]) -> None:
    """A worker's watch on its launcher: once the launcher is gone (SIGKILLed, say), the worker exits, its run
    interrupted and resumable, instead of waiting for jobs forever (it holds its own queue's write end, so it
    never reads an end of file) and keeping the forkserver alive with it."""
    if started is None:  # no /proc to read it from: no watch
        return
    while started_at(pid) == started:
        time.sleep(WATCH_S)
    os._exit(3)


def _init_worker(
    threads: int, gpu: Optional[int], cores: Optional[set], log: str, start_method: str, launcher: tuple
) -> None:
    """In the worker, before its first job: its log, its threads, its GPU and cores, a watch on the launcher,
    then the imports."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    import threading

    import torch
    from tqdm import tqdm

    threading.Thread(target=_exit_when_gone, args=launcher, daemon=True, name="launcher-watch").start()

    torch.set_num_threads(threads)
    # tqdm's default lock is a multiprocessing one, a semaphore the resource tracker would report as leaked
    # when the worker is killed; a worker's bars are its own, so a thread lock is all they need.
    tqdm.set_lock(threading.RLock())
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    if start_method != "forkserver":  # the forkserver imported them already
        import importlib

        for module in PRELOAD:
            with contextlib.suppress(ImportError):  # timm is optional
                importlib.import_module(module)
    where = (f", cores {sorted(cores)}" if cores else "") + (f", GPU {gpu}" if gpu is not None else "")
    print(f"worker pid {os.getpid()}: {threads} thread(s){where}")


@contextmanager
def sigint_ignored() -> Iterator[None]:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def kill_tree(pid: int) -> None:
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
    for p in reversed(tree):  # the children first, then their parent
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
