"""Where a run's numbers came from: the code version and the environment, recorded in run.json.

``code_version()`` hashes every source file of the folders that determine a run's numbers: the
optimizer package (``thermolion/``), the models (``models/``) and the numeric core
(``runners/train/``). Nothing else is hashed, so editing the report, the sweep machinery or the
tuning glue does not make finished runs stale. Configuration is not hashed, neither the YAML files
nor runners/config.py, which turns them into the resolved configuration: that is recorded in full
and names the run's folder, so another configuration is another run, not a stale one. A plug-in
optimizer's source file is hashed too when it lives outside the project (``extra``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path

import torch

__all__ = ["ROOT", "NUMERIC_DIRS", "code_files", "code_version", "environment"]

ROOT = Path(__file__).resolve().parents[2]
# Whole folders, no exceptions: runners/train/ holds exactly the harness code that changes numbers.
NUMERIC_DIRS = ("thermolion", "models", "runners/train")


def code_files(root: Path = ROOT) -> list[Path]:
    return [path for folder in NUMERIC_DIRS for path in sorted((root / folder).rglob("*.py"))]


@functools.cache
def _hash(paths: tuple[Path, ...], root: Path = ROOT) -> str:
    digest = hashlib.sha256()
    for path in paths:
        name = str(path.relative_to(root)) if path.is_relative_to(root) else path.name
        digest.update(name.encode() + b"\0" + path.read_bytes().replace(b"\r\n", b"\n") + b"\0")
    return digest.hexdigest()[:12]


def code_version(extra: Iterable[Path] = (), root: Path = ROOT) -> str:
    """12 hex digits naming the project's files that determine a run's numbers, then ``+`` and 8
    more for ``extra`` files (a plug-in's source) when there are any. Hashed once per process: the
    version names the code that was imported, even if the files change while a sweep runs.
    ``root`` is the checkout (another one in tests)."""
    files = code_files(root)
    extra = sorted({Path(p).resolve() for p in extra} - set(files))
    project = _hash(tuple(files), root)
    return f"{project}+{_hash(tuple(extra), root)[:8]}" if extra else project


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
    return {
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
