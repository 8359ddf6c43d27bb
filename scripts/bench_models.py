"""Each model's size and training-step time, as a ratio to the paper's convnet.

    python scripts/bench_models.py [--steps 5] [--out results/bench_models.csv]

One training step = forward, cross-entropy, backward and an AdamW step, at batch 128 on 3x32x32
inputs with 10 classes (CIFAR-10's shape), on this machine's CPU (or the GPU with --device cuda).
Medians over --steps timed steps after two warm-up steps. The rigorous CIFAR-10 epoch estimate is
391 steps (50000 / 128) at that median, evaluation excluded.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from models import MODELS, ModelConfig, build_model  # noqa: E402
from runners.train.build import keep_freed_memory  # noqa: E402

CIFAR10_STEPS = 391


def step_seconds(name: str, device: torch.device, steps: int, batch: int) -> tuple[int, float]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name), 3, 10, 32).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    times = []
    for i in range(steps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return sum(p.numel() for p in model.parameters()), statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench_models.csv")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_memory()  # as the trainer does on the CPU
    rows = []
    for name in args.models.split(","):
        params, seconds = step_seconds(name, device, args.steps, args.batch)
        rows.append(
            {
                "model": name,
                "params": params,
                "step_ms": round(1e3 * seconds, 2),
                "cifar10_epoch_min": round(CIFAR10_STEPS * seconds / 60, 2),
            }
        )
    base = next((r["step_ms"] for r in rows if r["model"] == "convnet"), rows[0]["step_ms"])
    for r in rows:
        r["ratio_to_convnet"] = round(r["step_ms"] / base, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) + ["device", "threads"])
        writer.writeheader()
        writer.writerows({**r, "device": str(device), "threads": torch.get_num_threads()} for r in rows)
    print(f"{'model':10s} {'params':>10s} {'step (ms)':>10s} {'x convnet':>10s} {'CIFAR-10 epoch':>15s}")
    for r in rows:
        print(
            f"{r['model']:10s} {r['params']:>10,d} {r['step_ms']:>10.1f} {r['ratio_to_convnet']:>9.2f}x "
            f"{r['cifar10_epoch_min']:>11.1f} min"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
