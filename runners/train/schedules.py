"""Per-step learning-rate schedules from torch.optim.lr_scheduler, for every optimizer.

With base rate lr, T total steps and W warmup steps, the rate used by step s (0-based) is
  constant        lr
  cosine          lr * (1 + cos(pi * s / T)) / 2                          (CosineAnnealingLR)
  warmup_cosine   lr * (1/W + (1 - 1/W) * s / W)              for s < W   (LinearLR from lr/W)
                  lr * (1 + cos(pi * (s - W) / (T - W))) / 2  for s >= W  (CosineAnnealingLR)
"""

from __future__ import annotations

from typing import Optional

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

__all__ = ["build_schedule"]


def build_schedule(
    optimizer: Optimizer, schedule: str, total_steps: int, warmup_steps: int = 0
) -> Optional[LRScheduler]:
    """The scheduler to ``step()`` after every optimizer step, or None for a constant rate."""
    if schedule == "constant":
        return None
    if schedule == "cosine":
        return CosineAnnealingLR(optimizer, T_max=total_steps)
    if schedule == "warmup_cosine":
        if not 0 < warmup_steps < total_steps:
            raise ValueError(
                f"trainer.warmup_steps={warmup_steps} must be between 1 and the run's {total_steps} steps - 1"
            )
        warmup = LinearLR(optimizer, start_factor=1.0 / warmup_steps, end_factor=1.0, total_iters=warmup_steps)
        decay = CosineAnnealingLR(optimizer, T_max=total_steps - warmup_steps)
        return SequentialLR(optimizer, [warmup, decay], milestones=[warmup_steps])
    raise ValueError(f"unknown schedule {schedule!r}")
