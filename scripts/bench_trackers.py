"""What watching a run costs: a paper-protocol MNIST run with each tracker against none, in one process.

    python scripts/bench_trackers.py [--dataset mnist] [--rounds 3] [--folder /tmp/bench_trackers]

Each round runs the same configuration (ThermoLion, paper protocol: 5000 samples, batch 1024, 60 steps,
every step's loss logged) with logger=none, tensorboard, mlflow, wandb and all three, interleaved, each
in a fresh results folder. Round 0 also pays each library's import and first store set-up and is
reported apart. Two measures: the median wall time of the later rounds over none's (a 2-core CPU's run to
run noise is about 10% of a run, more than the trackers cost), and the seconds the run spent inside its
trackers' calls (run.json's ``trackers.seconds``) as a share of its wall time, which the noise does not
blur. Prints a table and writes it as CSV (--csv) when asked.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from runners import run_folder as rf  # noqa: E402
from runners.sweep import job  # noqa: E402
from runners.sweep.compose import compose_run  # noqa: E402

LOGGERS = ["none", "tensorboard", "mlflow", "wandb", "[tensorboard,mlflow,wandb]"]


def one_run(logger: str, dataset: str, folder: Path) -> tuple[float, float]:
    """(the run's wall seconds, the seconds spent inside its trackers' calls)"""
    shutil.rmtree(folder, ignore_errors=True)
    cfg = compose_run(
        f"logger={logger}", "protocol=paper", f"dataset={dataset}", "trainer.progress=off", f"results_dir={folder}"
    )
    t0 = time.perf_counter()
    result = job.train(cfg)
    seconds = time.perf_counter() - t0
    if result.status != "done":
        raise SystemExit(f"{logger}: {result.status} {result.error}")
    trackers = rf.read_info(result.run_dir).get("trackers", {})
    failed = {k: v["error"] for k, v in trackers.items() if isinstance(v, dict) and "error" in v}
    if failed:
        raise SystemExit(f"{logger}: a tracker failed: {failed}")
    return seconds, float(trackers.get("seconds", 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--rounds", type=int, default=3, help="rounds after the first (imports) round")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/bench_trackers"))
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in LOGGERS}
    inside: dict[str, list[float]] = {name: [] for name in LOGGERS}
    for round_ in range(args.rounds + 1):
        for i, logger in enumerate(LOGGERS):
            wall, tracked = one_run(logger, args.dataset, args.folder / f"r{round_}-{i}")
            times[logger].append(wall)
            inside[logger].append(tracked)
        print(f"round {round_}: " + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    base = statistics.median(times["none"][1:])
    lines = [
        "logger,first_run_s,first_run_in_trackers_s,median_run_s,median_in_trackers_s,ratio_to_none,in_trackers_share"
    ]
    for logger, seconds in times.items():
        median, tracked = statistics.median(seconds[1:]), statistics.median(inside[logger][1:])
        lines.append(
            f"{logger},{seconds[0]:.2f},{inside[logger][0]:.3f},{median:.2f},{tracked:.3f},"
            f"{median / base:.3f},{tracked / median:.4f}"
        )
    print("\n".join(lines))
    if args.csv:
        args.csv.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
