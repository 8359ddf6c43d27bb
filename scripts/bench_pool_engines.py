"""What each process-pool engine costs the parallel launcher: start-up, and what one worker's death does.

    python scripts/bench_pool_engines.py

Start-up: seconds until 2 workers have imported torch and the harness (spawn: a fresh interpreter each;
forkserver: forked from a server that imported them once), and until a replacement worker is ready.
A death: two jobs in flight on one shared pool of 2 (concurrent.futures' ProcessPoolExecutor, then loky's,
joblib's engine), the first job's worker SIGKILLed: what the job on the other worker gets, 3 times.
hydra/launcher=parallel uses one single-process executor per worker from a forkserver (runners/sweep/pool.py).
"""

import multiprocessing
import os
import signal
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
from runners.sweep.pool import PRELOAD  # noqa: E402 - after the path set-up above


def warm() -> int:
    """What a worker imports before its first job (the forkserver has it already)."""
    import importlib

    for module in PRELOAD:
        importlib.import_module(module)
    return os.getpid()


def nap(seconds: float, pid_file: Optional[str] = None) -> int:
    if pid_file:
        Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


def start_cost(method: str, workers: int = 2) -> tuple[float, float]:
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(list(PRELOAD))
    t = time.perf_counter()
    pools = [ProcessPoolExecutor(1, mp_context=ctx) for _ in range(workers)]
    for f in [p.submit(warm) for p in pools]:
        f.result()
    ready = time.perf_counter() - t
    t = time.perf_counter()
    pools.append(ProcessPoolExecutor(1, mp_context=ctx))
    pools[-1].submit(warm).result()
    again = time.perf_counter() - t
    for p in pools:
        p.shutdown()
    return ready, again


def one_death(executor) -> str:
    """Two jobs in flight on two workers, the first job's worker killed: what the other job's future gives."""
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(tmp) / "a", Path(tmp) / "b"]
        jobs = [executor.submit(nap, 10, str(f)) for f in files]
        deadline = time.monotonic() + 60
        while not all(f.exists() for f in files) and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = [int(f.read_text()) for f in files]
    assert pids[0] != pids[1], "both jobs ran in one worker"
    os.kill(pids[0], signal.SIGKILL)
    try:
        other = f"finished (pid {jobs[1].result()})"
    except Exception as err:  # noqa: BLE001 - what the engine raises is the finding
        other = type(err).__name__
    executor.shutdown()
    return other


def main() -> int:
    for method in ("spawn", "forkserver"):
        ready, again = start_cost(method)
        print(f"{method:10s}: 2 workers with torch and the harness in {ready:.2f} s; a replacement in {again:.2f} s")
    from joblib.externals.loky import get_reusable_executor

    for name, make in (
        ("concurrent.futures", lambda: ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))),
        ("loky", lambda: get_reusable_executor(2)),
    ):
        seen = [one_death(make()) for _ in range(3)]
        print(f"one {name} pool of 2, one worker SIGKILLed mid-job, 3 times: the other worker's job -> {seen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
