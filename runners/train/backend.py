"""The backend settings a run's numbers depend on, set for the run and restored afterwards.

cuDNN autotuning is on except in deterministic mode (autotuning picks kernels by speed, and kernels
differ in rounding); ``trainer.matmul_precision`` ("high" lets float32 matmuls use TF32 on Ampere and
later); ``trainer.deterministic`` turns on torch's deterministic algorithms. ``cuda:N`` becomes the
current device, so that CUDA events and allocations go to it.
"""

from __future__ import annotations

import contextlib
import os

import torch

from .settings import TrainerConfig

__all__ = ["backend_settings", "prepare_deterministic"]


def prepare_deterministic(tc: TrainerConfig) -> None:
    """cuBLAS reads its workspace setting when CUDA initialises: set it before anything builds."""
    if tc.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@contextlib.contextmanager
def backend_settings(tc: TrainerConfig, device: torch.device):
    """Yields the settings in force (recorded in run.json); everything is restored on exit, so that a
    deterministic run does not leave the later runs of an in-process sweep deterministic."""
    before = (
        torch.backends.cudnn.benchmark,
        torch.get_float32_matmul_precision(),
        torch.are_deterministic_algorithms_enabled(),
    )
    prepare_deterministic(tc)
    torch.backends.cudnn.benchmark = not tc.deterministic
    torch.set_float32_matmul_precision(tc.matmul_precision)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True)
    settings = {
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "matmul_precision": tc.matmul_precision,
        "deterministic": tc.deterministic,
    }
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
        settings.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    try:
        yield settings
    finally:
        torch.backends.cudnn.benchmark = before[0]
        torch.set_float32_matmul_precision(before[1])
        torch.use_deterministic_algorithms(before[2])
