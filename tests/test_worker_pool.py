"""The parallel launcher's worker pool with real processes: a death costs its job only, a worker outlives
its jobs (and their exceptions), and each worker has its threads, its GPU, its log and no SIGINT."""

import os
import signal
import time
from concurrent.futures.process import BrokenProcessPool

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runners.sweep.pool import START_METHODS, WorkerPool, core_sets


def _nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _raise(message: str) -> None:
    raise ValueError(message)


def _setting() -> dict:
    import torch

    print("said by a job")
    return {
        "threads": torch.get_num_threads(),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "sigint_ignored": signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
        "cores": os.sched_getaffinity(0),
    }


def _all_ended(pool: WorkerPool, timeout: float = 60.0) -> list:
    ended, deadline = [], time.monotonic() + timeout
    while pool.busy() and time.monotonic() < deadline:
        ended += pool.wait(0.2)
    assert not pool.busy(), "jobs still running after the timeout"
    return ended


# spawn: a fresh interpreter per worker, each importing torch and compiling (~10 s a test on 2 cores)
@pytest.fixture(params=[pytest.param(m, marks=pytest.mark.slow) if m == "spawn" else m for m in START_METHODS])
def pool(request, tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    pool = WorkerPool(2, 1, [3, None], tmp_path / "logs", request.param)
    pool.start()
    yield pool
    for worker in pool.slots:
        pool.stop(worker)


def test_a_killed_worker_costs_its_job_only_and_its_slot_gets_a_new_process(pool):
    a, b = pool.slots
    first_pids = (a.pid, b.pid)
    pool.submit(a, "long", _nap, 30)
    pool.submit(b, "short", _nap, 1)
    time.sleep(0.5)
    os.kill(a.pid, signal.SIGKILL)
    ended = {e.job: e for e in _all_ended(pool)}
    assert ended["long"].died and f"pid {first_pids[0]}" in ended["long"].error
    assert not ended["short"].died and ended["short"].value == first_pids[1]
    pool.submit(a, "after", _nap, 0)  # a new process takes the dead worker's slot
    pool.submit(b, "again", _nap, 0)  # the survivor runs its next job in the same process
    ended = {e.job: e for e in _all_ended(pool)}
    assert ended["after"].value not in first_pids and a.starts == 2
    assert ended["again"].value == first_pids[1] and b.jobs_run == 2 and b.starts == 1


def test_a_job_that_raises_is_an_error_and_its_worker_lives_on(pool):
    a = pool.slots[0]
    pid = a.pid
    pool.submit(a, "bad", _raise, "no such thing")
    (ended,) = _all_ended(pool)
    assert not ended.died and ended.error == "ValueError: no such thing"
    pool.submit(a, "next", _nap, 0)
    (ended,) = _all_ended(pool)
    assert ended.value == pid


def test_each_worker_has_its_threads_gpu_log_and_no_sigint(pool):
    for worker in pool.slots:
        pool.submit(worker, worker.index, _setting)
    got = {e.job: e.value for e in _all_ended(pool)}
    anywhere = os.sched_getaffinity(0)
    assert got[0] == {
        "threads": 1,
        "omp": "1",
        "gpu": "3",
        "sigint_ignored": True,
        "cores": pool.slots[0].cores or anywhere,
    }
    assert got[1] == {
        "threads": 1,
        "omp": "1",
        "gpu": None,
        "sigint_ignored": True,
        "cores": pool.slots[1].cores or anywhere,
    }
    if len(anywhere) >= 2:  # two 1-thread workers fit side by side: each on its own core
        assert pool.slots[0].cores | pool.slots[1].cores <= anywhere
        assert len(pool.slots[0].cores) == 1 and pool.slots[0].cores != pool.slots[1].cores
    for worker in pool.slots:
        assert "said by a job" in worker.log.read_text()


@given(
    workers=st.integers(1, 16),
    threads=st.integers(1, 8),
    available=st.sets(st.integers(0, 63), min_size=1, max_size=64),
)
def test_core_sets_are_disjoint_sets_of_the_available_cores_or_none(workers, threads, available):
    sets = core_sets(workers, threads, available)
    assert len(sets) == workers
    if workers * threads > len(available):
        assert sets == [None] * workers
    else:
        assert all(len(c) == threads and c <= available for c in sets)
        assert len(set().union(*sets)) == workers * threads  # no core twice


def test_an_unknown_start_method_is_refused(tmp_path):
    with pytest.raises(ValueError, match="start_method must be one of"):
        WorkerPool(1, 1, [], tmp_path, "fork")


def test_a_worker_that_cannot_start_breaks_start_not_the_caller(tmp_path):
    (tmp_path / "logs" / "worker0.log").mkdir(parents=True)  # its log cannot be opened
    pool = WorkerPool(1, 1, [], tmp_path / "logs", "forkserver")
    with pytest.raises(BrokenProcessPool):
        pool.start()
    pool.stop(pool.slots[0])


ORPHAN = """
import os, sys, time
from pathlib import Path
from runners.sweep.pool import WorkerPool
if __name__ == "__main__":
    pool = WorkerPool(2, 1, [], Path(sys.argv[1]) / "logs", "forkserver")
    pool.start()
    pool.submit(pool.slots[0], "long", time.sleep, 60)
    Path(sys.argv[1], "pids").write_text(" ".join(str(w.pid) for w in pool.slots))
    os.kill(os.getpid(), 9)
"""


def test_workers_exit_when_their_launcher_is_killed(tmp_path):
    """A SIGKILLed launcher leaves no worker behind, busy or idle (each would wait for jobs forever, and keep
    the forkserver alive with it)."""
    import subprocess
    import sys

    from runners.sweep.pool import WATCH_S, started_at

    from .test_harness import ROOT

    script = tmp_path / "launcher.py"
    script.write_text(ORPHAN)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    deadline = time.monotonic() + 10 * WATCH_S + 5
    while any(started_at(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if started_at(p)], "workers outlived their launcher"
