"""ThermoLion's noise under FSDP2: step time and peak memory per rank, sharded on 2 gloo ranks against one
unsharded process, for each noise stream.

    python scripts/bench_fsdp_noise.py [--rows 4096] [--cols 4096] [--steps 7]

The model is one bias-free Linear(cols, rows) (16.8M elements by default). Each configuration runs in
fresh processes (1 torch thread each): unsharded, one process with plain parameters; sharded, 2 ranks,
``fully_shard`` (rows split in two). Only ``optimizer.step()`` is timed (median of ``--steps`` after 2
warm-up steps; the ranks meet at a barrier before each), on the foreach path, noise on and noise off;
the noise's cost is their difference. Peak memory is the rise of the process's peak resident set
(VmHWM, reset before the timed steps) over its size before them. The counter-based stream should halve
per rank (each rank computes its shard); torch's stream draws the whole tensor on every rank.
Writes results/noise_stream/fsdp_noise.csv.
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from thermolion import ThermoLion  # noqa: E402


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _measure(rank: int, world: int, rows: int, cols: int, steps: int, rng: str, noise: bool) -> dict:
    torch.manual_seed(0)
    model = torch.nn.Linear(cols, rows, bias=False)
    if world > 1:
        from torch.distributed.fsdp import fully_shard

        fully_shard(model)
    opt = ThermoLion(model.parameters(), noise=noise, noise_rng=rng, seed=1, fused=False)
    x = torch.randn(8, cols, generator=torch.Generator().manual_seed(rank))
    times = []
    for i in range(2 + steps):
        model(x).square().mean().backward()
        if i == 2:
            base = _rss_kib("VmRSS")
            _reset_peak()
        if world > 1:
            dist.barrier()
        start = time.perf_counter()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
        opt.zero_grad()
    return {"median_ms": 1e3 * statistics.median(times), "peak_extra_mib": (_rss_kib("VmHWM") - base) / 1024}


def _worker(rank: int, world: int, port: int, args, out: str) -> None:
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        row = _measure(rank, world, args.rows, args.cols, args.steps, args.rng, args.noise)
        torch.save(row, Path(out) / f"rank{rank}.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "results" / "noise_stream" / "fsdp_noise.csv"))
    args = ap.parse_args()
    rows = []
    for rng in ("philox", "torch"):
        for world in (1, 2):
            for noise in (True, False):
                args.rng, args.noise = rng, noise
                with tempfile.TemporaryDirectory() as out:
                    port = _free_port()
                    mp.start_processes(_worker, args=(world, port, args, out), nprocs=world, start_method="spawn")
                    ranks = [torch.load(Path(out) / f"rank{r}.pt") for r in range(world)]
                row = {
                    "noise_rng": rng,
                    "ranks": world,
                    "noise": noise,
                    "elements_per_rank": args.rows * args.cols // world,
                    "median_ms": max(r["median_ms"] for r in ranks),  # the slower rank sets the pace
                    "peak_extra_mib": max(r["peak_extra_mib"] for r in ranks),
                }
                rows.append(row)
                print({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    by = {(r["noise_rng"], r["ranks"], r["noise"]): r for r in rows}
    print(f"\n{'stream':8s} {'ranks':>5s} {'noise ms':>9s} {'x unsharded':>11s} {'peak+ MiB on':>12s} {'off':>6s}")
    for rng in ("philox", "torch"):
        alone = by[(rng, 1, True)]["median_ms"] - by[(rng, 1, False)]["median_ms"]
        for world in (1, 2):
            cost = by[(rng, world, True)]["median_ms"] - by[(rng, world, False)]["median_ms"]
            print(
                f"{rng:8s} {world:5d} {cost:9.1f} {cost / alone:11.2f} "
                f"{by[(rng, world, True)]['peak_extra_mib']:12.1f} {by[(rng, world, False)]['peak_extra_mib']:6.1f}"
            )
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()
