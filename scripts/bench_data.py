"""Epochs/second of batch iteration: our tensor loader vs the notebook's per-sample pipeline.

    DATA_ROOT=../shared/data python scripts/bench_data.py [--epochs 3]

Paper protocol on MNIST (first 5000 samples, 32x32, batch 1024) and full MNIST (batch 128). The
notebook pipeline is torchvision's MNIST with Resize((32,32)) + ToTensor + Normalize and a
shuffling DataLoader (no workers, as the notebook). Also times the first, uncached conversion of
full MNIST (a fresh cache folder) and a cached load. Both loops only touch each batch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runners.datafiles import load_split, resolve_root  # noqa: E402
from runners.train.data import TensorLoader, prepare  # noqa: E402
from runners.train.settings import DataConfig  # noqa: E402


def epochs_per_s(make_iter, epochs: int) -> float:
    start = time.perf_counter()
    for e in range(epochs):
        for x, _ in make_iter(e):
            x.sum()  # touch the batch, as a training step would
    return epochs / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    import torchvision
    import torchvision.transforms as T

    root = resolve_root()
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        load_split("mnist", "train", root=str(root), download=False, cache_dir=cache)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_split("mnist", "train", root=str(root), download=False, cache_dir=cache)
        warm = time.perf_counter() - t0
        print(f"full MNIST train split: first (uncached) load {cold:.2f} s, cached load {warm * 1e3:.0f} ms")

        tf = T.Compose([T.Resize((32, 32)), T.ToTensor(), T.Normalize((0.5,), (0.5,))])
        ds = torchvision.datasets.MNIST(root=str(root), train=True, download=False, transform=tf)
        for label, subset, batch in (
            ("paper protocol (5000, batch 1024)", 5000, 1024),
            ("full MNIST (60000, batch 128)", None, 128),
        ):
            data = prepare(
                DataConfig(
                    name="mnist",
                    root=str(root),
                    download=False,
                    cache_dir=cache,
                    train_subset=subset,
                    eval_split="train",
                )
            )
            ours = TensorLoader(data.train_x, data.train_y, batch, seed=0)
            ours_eps = epochs_per_s(ours.epoch, args.epochs)
            src = torch.utils.data.Subset(ds, range(subset)) if subset else ds
            loader = torch.utils.data.DataLoader(src, batch_size=batch, shuffle=True)
            theirs_eps = epochs_per_s(lambda e, loader=loader: loader, max(1, args.epochs // 3))
            print(
                f"{label:36s} ours {ours_eps:9.1f} epochs/s   notebook {theirs_eps:6.2f} epochs/s   "
                f"ratio {ours_eps / theirs_eps:7.0f}x"
            )


if __name__ == "__main__":
    main()
