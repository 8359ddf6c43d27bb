"""Where a run's numbers came from: the code version and the environment, recorded in run.json.

``code_version()`` hashes the source files that determine a run's numbers: the optimizer package,
the models, and the trainer's own modules (data, trainer, schedules, augmentation). Files that only
read, lock or report results are left out, so editing the report does not make every finished run
stale. Configuration is not hashed, neither the YAML files nor runners/config.py, which turns them
into the resolved configuration: that is recorded in full and names the run's folder, so another
configuration is another run, not a stale one. A plug-in optimizer's
source file is hashed too when it lives outside the project (``extra``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Iterable

import torch

__all__ = ["ROOT", "code_files", "code_version", "environment"]

ROOT = Path(__file__).resolve().parents[1]
_PACKAGES = ("thermolion", "models", "runners")
# Modules of runners/ that never change a number: reading, reporting, tuning glue, locks, progress.
_NOT_NUMERIC = {"report", "tune", "hydra_glue", "lock", "progress", "provenance", "plugins", "search_space", "config",
                "io", "__init__"}


def code_files() -> list[Path]:
    files = []
    for package in _PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if package == "runners" and (path.stem in _NOT_NUMERIC or rel.parts[1] == "report"):
                continue
            files.append(path)
    return files


@functools.lru_cache(maxsize=None)
def _hash(paths: tuple[Path, ...]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
        digest.update(name.encode() + b"\0" + path.read_bytes().replace(b"\r\n", b"\n") + b"\0")
    return digest.hexdigest()[:12]


def code_version(extra: Iterable[Path] = ()) -> str:
    """12 hex digits naming the project's files that determine a run's numbers, then ``+`` and 8
    more for ``extra`` files (a plug-in's source) when there are any. Hashed once per process: the
    version names the code that was imported, even if the files change while a sweep runs."""
    extra = sorted({Path(p).resolve() for p in extra} - set(code_files()))
    project = _hash(tuple(code_files()))
    return f"{project}+{_hash(tuple(extra))[:8]}" if extra else project


def environment(device: torch.device) -> dict:
    import torchvision

    try:
        import hydra

        hydra_version = hydra.__version__
    except ImportError:
        hydra_version = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                                    text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {
        "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
        "hydra": hydra_version, "git_commit": commit, "git_dirty": dirty, "hostname": platform.node(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
    }
