"""A run's identity beyond its settings: the numeric code and the packages that compute its numbers.

One rule: a finished run is reused only if running it again would give the same numbers. The
settings are the run's fingerprint and folder (``RunConfig.result_settings``). Here is the rest:

* ``code_version()`` hashes every source file of the folders that determine a run's numbers: the
  optimizer package (``thermolion/``), the models (``models/``) and the numeric core
  (``runners/train/``). Nothing else is hashed, so editing the report, the sweep machinery, a
  progress default or an error message does not make finished runs stale.
* ``installed(package)`` is the version of a package that computes numbers: torch, torchvision and
  numpy for every run, the package a registered optimizer comes from (its registry entry says
  which), a dataset's own reader, and a plug-in's top-level package (its version, or a hash of its
  source where it has none). run.json records them as ``packages``.
* the content of the data a run reads: ``data_sha`` in run.json, a sha256 of each split's source
  files (``runners.datafiles.data_digest``). ``data.root`` names where the files are, so it stays out;
  their content stands in for it, and other files under the same path or another root make a run stale.
* the device type (cpu or cuda) the run trained on.

The machine's floating-point order (``MACHINE_KEYS``: the CPU or GPU model, ATen's CPU kernel level,
the CPU thread count, the compute capability, CUDA and cuDNN) changes the last bits of a run and
nothing else: measured on the paper's ConvNet, 1 against 2 threads and AVX512 against the default
kernels move eval_loss in its 7th digit. By default these are recorded and shown
(``machine_notes``: ``runners.status``, the report's mix warnings), not compared, so that the serial
and parallel launchers, or a cluster's mixed nodes, never call each other's runs stale for that alone.
``exact_machine=true`` puts them in the comparison for bit-for-bit reproduction.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Optional

__all__ = [
    "ROOT",
    "NUMERIC_DIRS",
    "BASE_PACKAGES",
    "code_files",
    "code_version",
    "installed",
    "versions",
    "stale_reasons",
    "machine_notes",
    "MACHINE_KEYS",
]

ROOT = Path(__file__).resolve().parents[1]
# Whole folders, no exceptions: runners/train/ holds exactly the harness code that changes numbers.
NUMERIC_DIRS = ("thermolion", "models", "runners/train")
PROJECT_PACKAGES = ("thermolion", "models", "runners")  # hashed by code_version, never a package version
BASE_PACKAGES = ("torch", "torchvision", "numpy")
# environment keys whose differences change floating-point order only (see the module's docstring)
MACHINE_KEYS = ("device", "cpu_capability", "torch_threads", "gpu_capability", "cuda", "cudnn")


def code_files(root: Path = ROOT) -> list[Path]:
    return [path for folder in NUMERIC_DIRS for path in sorted((root / folder).rglob("*.py"))]


def _hash(paths: Iterable[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        name = str(path.relative_to(root)) if path.is_relative_to(root) else path.name
        digest.update(name.encode() + b"\0" + path.read_bytes().replace(b"\r\n", b"\n") + b"\0")
    return digest.hexdigest()[:12]


@functools.cache
def code_version(root: Path = ROOT) -> str:
    """12 hex digits naming the project's files that determine a run's numbers. Hashed once per
    process: the version names the code that was imported, even if the files change while a sweep
    runs. ``root`` is the checkout (another one in tests; ``code_version.cache_clear()`` forgets)."""
    return _hash(code_files(root), root)


@functools.cache
def installed(package: str) -> str:
    """The installed version of a distribution or top-level module (``"timm"``, ``"scikit-learn"``);
    for a module of no distribution (user code), ``source <hash>`` of its files; else ``not installed``."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        pass
    for dist in metadata.packages_distributions().get(package, []):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return "not installed"
    if spec.submodule_search_locations:  # a package, a namespace package (no __init__.py) included
        folders = sorted(Path(f) for f in spec.submodule_search_locations)
        return "source " + _hash(sorted(p for f in folders for p in f.rglob("*.py")), folders[0].parent)[:8]
    if spec.origin in (None, "built-in", "frozen"):
        return "built-in"
    origin = Path(spec.origin)
    return "source " + _hash([origin], origin.parent)[:8]


def plugin_package(target: str) -> Optional[str]:
    """The top-level package a plug-in's dotted path comes from, unless the project hashes it already."""
    top = str(target).split(".", 1)[0]
    return None if top in PROJECT_PACKAGES or top in BASE_PACKAGES else top


def versions(packages: Iterable[str]) -> dict[str, str]:
    """``{package: installed version}`` for torch, torchvision, numpy and ``packages``."""
    return {p: installed(p) for p in sorted({*BASE_PACKAGES, *packages})}


def stale_reasons(
    info: dict,
    code: str,
    device_type: Optional[str] = None,
    expected: Iterable[str] = (),
    machine: Optional[dict] = None,
    data: Optional[dict] = None,
    exact_machine: Optional[bool] = None,
) -> list[str]:
    """Why a finished run (its run.json, ``info``) would not give the same numbers now: one phrase per
    difference in code, package versions, the data's content, device type and, with ``exact_machine``,
    the machine; empty when it would.

    ``expected`` names packages the run needs now (a relaunch knows them from its config); a recorded
    package is compared whether expected or not, so reading folders needs no config. ``data`` is the
    current ``{split: digest}`` (``runners.datafiles.data_digest``); None skips the comparison (a reader
    without the files). ``machine`` is the current ``runners.sweep.provenance.machine``; compared when
    ``exact_machine`` (default: what the run's own config says)."""
    reasons = []
    old = info.get("code_version") or "unrecorded"
    if old != code:
        reasons.append(f"code {old}, the code is now {code}")
    recorded = info.get("packages")
    if recorded is None:
        reasons.append("no recorded package versions (written before they were recorded)")
        recorded = {}
    for package in sorted({*recorded, *expected}):
        was, now = recorded.get(package, "unrecorded"), installed(package)
        if was != now:
            reasons.append(f"{package} {was}, now {now}")
    if data is not None:
        reasons += _data_reasons(info.get("data_sha"), data)
    env = info.get("environment") or {}
    was_device = env.get("device_type")
    if device_type is not None and was_device is not None and was_device != device_type:
        reasons.append(f"device {was_device}, now {device_type}")
    elif machine is not None:
        if exact_machine is None:
            exact_machine = bool((info.get("config") or {}).get("exact_machine"))
        if exact_machine:
            reasons += machine_notes(env, machine)
    return reasons


def _data_reasons(was: Optional[dict], now: dict) -> list[str]:
    if was is None:
        return ["no recorded data hash (written before the data's content was recorded)"]
    out = []
    for split in sorted({*was, *now}):
        old, new = was.get(split), now.get(split)
        if None not in (old, new) and old != new:
            out.append(f"data {split} files {old}, now {new} (other content under data.root)")
    return out


def machine_notes(env: dict, machine: dict) -> list[str]:
    """The floating-point-order differences (``MACHINE_KEYS``) between a run's recorded environment and
    ``machine``, one phrase each: what ``exact_machine`` compares, and what status shows otherwise."""
    out = []
    for key in MACHINE_KEYS:
        was, now = env.get(key), machine.get(key)
        if key in env and key in machine and was != now:
            out.append(f"{_MACHINE_WORDS[key]} {was}, now {now}")
    return out


_MACHINE_WORDS = {
    "device": "on",
    "cpu_capability": "ATen CPU kernels",
    "torch_threads": "CPU threads",
    "gpu_capability": "compute capability",
    "cuda": "CUDA",
    "cudnn": "cuDNN",
}
