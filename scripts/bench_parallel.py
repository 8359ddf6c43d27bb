"""The serial launcher against hydra/launcher=parallel on one sweep: wall time, start-up per run, peak memory.

    python scripts/bench_parallel.py [--epochs 3] [--workers 2] [--repeats 1] [--dataset digits]
        [--checkout DIR] [--csv FILE]

The sweep is the self-tuning experiment's digits slice (8 optimizers x 2 seeds, paper protocol, 16 px;
``--dataset mnist`` for longer runs), into a fresh results folder per launch. Serial: Hydra's basic
launcher, one process with torch's default threads (all cores). Parallel: ``workers`` runs at once,
``threads_per_run`` = cores / workers. ``--checkout`` runs another tree's run.py (an older commit's
``git worktree``) with this venv: the before of a before-and-after. An untimed one-epoch sweep first
fills the dataset's tensor cache and Inductor's disk cache, which the first timed launch would pay.

Start-up per run: seconds from the job's start to its first step. A job starts when its process starts
or, in a process that runs job after job (the serial launcher, the parallel launcher's workers), when
that process's previous run finished; its first step is run.json's ``fit_started_at`` (data and model
built), or ``started_at`` (the run took its folder) in trees that predate it. Process start times come
from /proc, sampled every 0.2 s with the memory. Peak memory is the largest sum over the launcher's
process tree of resident sets (RSS) and of proportional sets (PSS: a shared page split among its
sharers, so forked workers are not counted twice). The launches alternate in order over ``repeats``;
each figure is a median.
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


BOOT = next(float(ln.split()[1]) for ln in Path("/proc/stat").read_text().splitlines() if ln.startswith("btime"))
TICKS = os.sysconf("SC_CLK_TCK")


def tree_sample(pid: int, started: dict) -> tuple[float, float]:
    """(RSS, PSS) of ``pid`` and all its descendants, MiB (Linux /proc); records each one's start time
    (seconds since the epoch) in ``started``. RSS counts a page shared by forked workers once per process;
    PSS splits it among them, so the PSS sum is the memory the tree really holds."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    begun: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            begun[int(entry.name)] = BOOT + int(fields[19]) / TICKS
        except (OSError, IndexError, ValueError):
            continue
    total_rss, total_pss, todo = 0, 0, [pid]
    while todo:
        p = todo.pop()
        total_rss += rss.get(p, 0)
        total_pss += _pss_bytes(p)
        started.setdefault(p, begun.get(p))
        todo += children.get(p, [])
    return total_rss / 2**20, total_pss / 2**20


def _pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def startup_seconds(results: Path, started: dict) -> list[float]:
    """Each run's seconds from its job's start to its first step (see the module's docstring)."""
    infos = [json.loads(p.read_text()) for p in results.rglob("run.json") if ".hydra" not in p.parts]
    by_pid: dict[int, list[dict]] = {}
    for info in infos:
        by_pid.setdefault(info["owner"]["pid"], []).append(info)
    out = []
    for pid, runs in by_pid.items():
        previous = started.get(pid)
        if previous is None:
            raise SystemExit(f"bench_parallel: never saw process {pid} start (a run shorter than 0.2 s?)")
        for info in sorted(runs, key=lambda i: i["started_at"]):
            out.append(info.get("fit_started_at", info["started_at"]) - previous)
            previous = info["finished_at"]
    return out


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


def launch(args: list[str], results: Path, checkout: Path) -> tuple[float, float, float, float]:
    """(wall seconds, peak RSS MiB, peak PSS MiB, median start-up seconds per run) of one run.py launch."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "run.py", *args, f"results_dir={results}"],
        cwd=checkout,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak, peak_pss, started = 0.0, 0.0, {}
    while proc.poll() is None:
        rss, pss = tree_sample(proc.pid, started)
        peak, peak_pss = max(peak, rss), max(peak_pss, pss)
        time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"bench_parallel: run.py {' '.join(args)} failed:\n{proc.stderr.read()[-2000:]}")
    return time.perf_counter() - t0, peak, peak_pss, statistics.median(startup_seconds(results, started))


COLUMNS = ["tree", "dataset", "epochs", "launcher", "repeat", "wall_s", "peak_rss_mib", "peak_pss_mib", "startup_s"]


def append_row(path: Path, row: list) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        out = csv.writer(f)
        if new:
            out.writerow(COLUMNS)
        out.writerow(row)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--dataset", default="digits", help="digits (as the issue asks), or e.g. mnist: longer runs")
    ap.add_argument("--checkout", type=Path, default=ROOT, help="the tree whose run.py runs (default: this one)")
    ap.add_argument("--csv", type=Path, help="append one row per launch to this CSV")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    threads = max(1, cores // args.workers)
    sweep = sweep_args(args.dataset, args.epochs)
    parallel = ["hydra/launcher=parallel", f"hydra.launcher.workers={args.workers}"]
    parallel.append(f"hydra.launcher.threads_per_run={threads}")
    times: dict[str, list] = {"serial": [], "parallel": []}
    tree = "this tree" if args.checkout == ROOT else str(args.checkout)
    with tempfile.TemporaryDirectory() as tmp:
        # untimed: the dataset's tensor cache, Inductor's disk cache and the page cache, for both launchers
        warm = [a if not a.startswith("seed=") else "seed=0" for a in sweep_args(args.dataset, 1)]
        launch(warm, Path(tmp) / "warm-up", args.checkout)
        for r in range(args.repeats):
            order = ("serial", "parallel") if r % 2 == 0 else ("parallel", "serial")
            for name in order:
                extra = parallel if name == "parallel" else []
                wall, peak, pss, startup = launch([*sweep, *extra], Path(tmp) / f"{name}{r}", args.checkout)
                times[name].append((wall, pss, startup))
                print(f"{name:8s} wall {wall:6.1f} s  RSS {peak:5.0f}, PSS {pss:5.0f} MiB  start-up {startup:.2f} s")
                if args.csv:
                    row = [f"{wall:.1f}", f"{peak:.0f}", f"{pss:.0f}", f"{startup:.2f}"]
                    append_row(args.csv, [tree, args.dataset, args.epochs, name, r, *row])
    med = {k: [statistics.median(x[j] for x in v) for j in range(3)] for k, v in times.items()}
    (sw, sp, ss), (pw, pp, ps) = med["serial"], med["parallel"]
    print(
        f"16 runs on {args.dataset}, {args.epochs} epochs, {cores} cores ({tree}): "
        f"serial ({cores} threads) {sw:.1f} s, {sp:.0f} MiB PSS, start-up {ss:.2f} s a run; "
        f"parallel ({args.workers} workers x {threads} thread(s)) {pw:.1f} s, {pp:.0f} MiB PSS, "
        f"start-up {ps:.2f} s a run; "
        f"wall ratio serial/parallel {sw / pw:.2f}, memory (PSS) ratio parallel/serial {pp / sp:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
