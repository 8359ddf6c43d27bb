"""Where a run's numbers came from, beyond its identity (``runners.identity``): the environment
recorded in run.json (Python, git commit, host, device, threads, CUDA driver)."""

from __future__ import annotations

import os
import platform
import subprocess

import torch

from ..identity import ROOT

__all__ = ["environment"]


def environment(device: torch.device) -> dict:
    import torchvision

    try:
        import hydra

        hydra_version = hydra.__version__
    except ImportError:
        hydra_version = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "hydra": hydra_version,
        "git_commit": commit,
        "git_dirty": dirty,
        "hostname": platform.node(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "device_type": device.type,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["driver"] = _driver_version()
    return env


def _driver_version():
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out.splitlines()[0] if out else None
    except (OSError, subprocess.SubprocessError):
        return None
