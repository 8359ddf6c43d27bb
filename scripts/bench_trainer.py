"""The trainer's epoch time against a bare-loop floor and the notebook's DataLoader loop.

    DATA_ROOT=../shared/data python scripts/bench_trainer.py [--table]

For the paper protocol on MNIST (5000 samples, batch 1024) and the rigorous protocol on MNIST
(60000 samples, batch 128), one epoch each with AdamW:
  floor     the same model's forward + backward + AdamW step over pre-made tensors in a bare loop;
  harness   the trainer's training-loop time (metrics.csv train_time_s; evaluation excluded);
  notebook  torchvision MNIST + Resize/ToTensor/Normalize + shuffling DataLoader, same model/step.
All three share this process (and its allocator settings). ``--table`` also times the paper's
nine optimizers on MNIST under the paper protocol and extrapolates to the twelve datasets.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import ConvNet  # noqa: E402
from runners.config import PROTOCOLS, RunConfig  # noqa: E402
from runners.datafiles import resolve_root  # noqa: E402
from runners.sweep import job as T  # noqa: E402
from runners.sweep.compose import compose_run  # noqa: E402
from runners.train import build as B  # noqa: E402
from thermolion import PAPER_OPTIMIZERS  # noqa: E402


def run_config(results: str, cache: str, protocol: str, optimizer: str, epochs: int) -> RunConfig:
    return compose_run(
        f"optimizer={optimizer}",
        "dataset=mnist",
        f"protocol={protocol}",
        f"results_dir={results}",
        f"data.cache_dir={cache}",
        "data.download=false",
        f"trainer.epochs={epochs}",
        "trainer.progress=off",
        "trainer.checkpoint=false",
    )


def floor_epoch(n: int, batch: int) -> float:
    torch.manual_seed(0)
    model = ConvNet(1, 10, 32)
    opt = torch.optim.AdamW(model.parameters())
    x, y = torch.randn(n, 1, 32, 32), torch.randint(10, (n,))
    start = time.perf_counter()
    for i in range(0, n, batch):
        loss = F.cross_entropy(model(x[i : i + batch]), y[i : i + batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    loss.item()
    return time.perf_counter() - start


def notebook_epoch(n: int, batch: int) -> float:
    import torchvision
    import torchvision.transforms as tr

    tf = tr.Compose([tr.Resize((32, 32)), tr.ToTensor(), tr.Normalize((0.5,), (0.5,))])
    ds = torchvision.datasets.MNIST(str(resolve_root()), train=True, download=False, transform=tf)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(n)), batch_size=batch, shuffle=True)
    torch.manual_seed(0)
    model = ConvNet(1, 10, 32)
    opt = torch.optim.AdamW(model.parameters())
    start = time.perf_counter()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()  # the notebook accumulates loss.item() every step
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="epochs timed per variant (median)")
    ap.add_argument("--table", action="store_true", help="also time the 9-optimizer paper table on MNIST")
    args = ap.parse_args()
    B.keep_freed_memory()  # the trainer does this on the CPU; give the other loops the same
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        for protocol, n in (("paper", 5000), ("rigorous", 60000)):
            batch = PROTOCOLS[protocol]["batch_size"]
            # One extra epoch each, dropped: the first pays for growing the heap and warming caches.
            cfg = run_config(tmp, f"{tmp}/cache", protocol, "adamw", args.repeats + 1)
            result = T.train(cfg)
            harness = statistics.median(float(r) for r in _column(result.run_dir, "train_time_s")[1:])
            floor = statistics.median([floor_epoch(n, batch) for _ in range(args.repeats + 1)][1:])
            notebook = notebook_epoch(n, batch)
            print(
                f"{protocol:9s} ({n} samples, batch {batch}): floor {floor:6.2f} s  harness {harness:6.2f} s "
                f"({harness / floor:.2f}x floor)  notebook loop {notebook:6.2f} s "
                f"(harness {notebook / harness:.2f}x faster)"
            )
        if args.table:
            total = 0.0
            for name in PAPER_OPTIMIZERS:
                t0 = time.perf_counter()
                res = T.train(run_config(f"{tmp}/table", f"{tmp}/cache", "paper", name, 12))
                dt = time.perf_counter() - t0
                total += dt
                acc = res.final.get("eval_acc", float("nan"))
                print(f"  paper/mnist/{name:10s} {dt:6.1f} s  {res.status}  eval_acc {acc:.2f}%")
            print(
                f"paper_table on MNIST (9 optimizers): {total / 60:.1f} min; x12 datasets ~ {12 * total / 3600:.2f} h "
                "on this machine (the other sets are also 5000 images at 32x32; SEMEION is smaller)"
            )


def _column(run_dir: Path, name: str) -> list[str]:
    import csv

    with (run_dir / "metrics.csv").open() as f:
        return [row[name] for row in csv.DictReader(f)]


if __name__ == "__main__":
    main()
