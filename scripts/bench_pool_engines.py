"""What each process-pool engine costs the parallel launcher: start-up, and what one worker's death does.

    python scripts/bench_pool_engines.py

Start-up: seconds until 2 workers have imported torch and the harness (spawn: a fresh interpreter each;
forkserver: forked from a server that imported them once), and until a replacement worker is ready.
A death: two jobs in flight on one shared pool (concurrent.futures' ProcessPoolExecutor, then loky's,
joblib's engine), one worker SIGKILLed: what the other job gets. hydra/launcher=parallel uses one
single-process executor per worker from a forkserver (runners/sweep/pool.py).
"""

import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
PRELOAD = ["torch", "runners.sweep.job"]


def warm() -> int:
    import torch  # noqa: F401

    import runners.sweep.job  # noqa: F401

    return os.getpid()


def nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def start_cost(method: str, workers: int = 2) -> tuple[float, float]:
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
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


def one_death(executor) -> list[str]:
    """Two jobs in flight, the worker of the second one killed: what each job's future gives."""
    first = executor.submit(nap, 4)
    victim = executor.submit(nap, 4)
    time.sleep(1.5)  # both running
    pids = list(executor._processes)  # noqa: SLF001 - the pool's worker PIDs, to kill one
    os.kill(pids[-1], signal.SIGKILL)
    out = []
    for f in (first, victim):
        try:
            out.append(f"finished (pid {f.result()})")
        except Exception as err:  # noqa: BLE001 - what the engine raises is the finding
            out.append(type(err).__name__)
    executor.shutdown()
    return out


def main() -> int:
    for method in ("spawn", "forkserver"):
        ready, again = start_cost(method)
        print(f"{method:10s}: 2 workers with torch and the harness in {ready:.2f} s; a replacement in {again:.2f} s")
    shared = one_death(ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")))
    print(f"one concurrent.futures pool of 2, one worker killed: the jobs in flight -> {shared}")
    from joblib.externals.loky import get_reusable_executor

    print(f"one loky pool of 2, one worker killed: the jobs in flight -> {one_death(get_reusable_executor(2))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
