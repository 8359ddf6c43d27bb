"""Where a run's numbers came from, beyond its identity (``runners.identity``): the environment
recorded in run.json (Python, git commit, host, the machine: CPU model, ATen's CPU capability,
threads, GPU name, compute capability, CUDA, cuDNN and driver).

The machine's floating-point-order inputs (``runners.identity.MACHINE_KEYS``) are recorded here and
compared only under ``exact_machine=true``; by default they are shown, not enforced."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

from ..identity import ROOT

__all__ = ["environment", "machine", "cpu_model"]


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
        **machine(device),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        env["driver"] = _driver_version()
    return env


def machine(device: torch.device) -> dict:
    """The machine as it can change a number's last bits: ``device`` names the model (the GPU, or the
    CPU's model from the OS: ``platform.processor()`` is empty on Linux), plus ATen's CPU kernel level,
    the thread count and, on CUDA, the compute capability and the CUDA and cuDNN versions."""
    out = {
        "device": cpu_model() if device.type != "cuda" else torch.cuda.get_device_name(device),
        "device_type": device.type,
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        out.update(gpu_capability=f"{major}.{minor}", cuda=torch.version.cuda, cudnn=cudnn)
    return out


def cpu_model() -> str:
    """The CPU's model name: /proc/cpuinfo on Linux, sysctl on macOS, else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            if out:
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "cpu"


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
