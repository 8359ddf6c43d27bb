"""The serial launcher against hydra/launcher=parallel on one sweep, in one run: wall time and peak memory.

    python scripts/bench_parallel.py [--epochs 3] [--workers 2] [--repeats 1] [--dataset digits]

The sweep is the self-tuning experiment's digits slice (8 optimizers x 2 seeds, paper protocol, 16 px;
``--dataset mnist`` for longer runs), into a fresh results folder per launch. Serial: Hydra's basic
launcher, one process with torch's default threads (all cores). Parallel: ``workers`` runs at once,
``threads_per_run`` = cores / workers. Peak memory is the largest sum of the resident sets of the
launcher's process tree, sampled every 0.2 s from /proc. The launches alternate in order over
``repeats``; each figure is a median. Prints the ratios.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tree_rss_mib(pid: int) -> float:
    """The resident memory of ``pid`` and all its descendants, MiB (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total / 2**20


def sweep_args(dataset: str, epochs: int) -> list[str]:
    """The self-tuning experiment's slice of one dataset: 8 optimizers x 2 seeds, paper protocol, 16 px."""
    return [
        "-m",
        "+experiment=self_tuning",
        f"dataset={dataset}",
        "seed=0,1",
        f"trainer.epochs={epochs}",
        "data.image_size=16",
        "trainer.progress=off",
        "hydra.callbacks.sweep_summary.report=false",
    ]


def launch(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak MiB) of one run.py launch."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "run.py", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, tree_rss_mib(proc.pid))
        time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"bench_parallel: run.py {' '.join(args)} failed:\n{proc.stderr.read()[-2000:]}")
    return time.perf_counter() - t0, peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--dataset", default="digits", help="digits (as the issue asks), or e.g. mnist: longer runs")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    threads = max(1, cores // args.workers)
    sweep = sweep_args(args.dataset, args.epochs)
    parallel = ["hydra/launcher=parallel", f"hydra.launcher.workers={args.workers}"]
    parallel.append(f"hydra.launcher.threads_per_run={threads}")
    times: dict[str, list] = {"serial": [], "parallel": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            order = ("serial", "parallel") if r % 2 == 0 else ("parallel", "serial")
            for name in order:
                extra = parallel if name == "parallel" else []
                wall, peak = launch([*sweep, *extra, f"results_dir={tmp}/{name}{r}"])
                times[name].append((wall, peak))
                print(f"{name:8s} wall {wall:7.1f} s  peak {peak:7.0f} MiB", flush=True)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(p for _, p in v)) for k, v in times.items()}
    (sw, sp), (pw, pp) = med["serial"], med["parallel"]
    print(
        f"16 runs on {args.dataset}, {args.epochs} epochs, {cores} cores: "
        f"serial ({cores} threads) {sw:.1f} s, {sp:.0f} MiB; "
        f"parallel ({args.workers} workers x {threads} thread(s)) {pw:.1f} s, {pp:.0f} MiB; "
        f"wall ratio serial/parallel {sw / pw:.2f}, memory ratio parallel/serial {pp / sp:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
