"""The dataset files on disk: where they are, reading them through torchvision, the tensor cache,
and the errors that say what is missing or broken and how to fix it.

One path for every dataset: torchvision parses the dataset's own files (with download when
allowed), the split is converted once (``runners.train.convert``) into a uint8 tensor (N, C, S, S)
at the protocol's image size plus int64 labels, and saved atomically to
``<cache_dir>/<name>-<split>-<size>.pt``; later runs load that in a fraction of a second. A cached
tensor is trusted only when it was made by the same conversion code, with the same torch,
torchvision and dataset-reader versions, from the same files. None of this module decides a number,
so it lies outside the hashed core: editing a message here neither stales runs nor rebuilds caches.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import struct
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .atomic import torch_save
from .identity import installed
from .train import convert as conversion
from .train.datasets import DatasetInfo, get_info

__all__ = [
    "DataError",
    "DatasetNotFound",
    "DatasetCorrupt",
    "load_split",
    "resolve_root",
    "resolve_cache_dir",
    "conversion_key",
]

CACHE_VERSION = 1


class DataError(RuntimeError):
    """A dataset could not be provided; the message says why and what to do."""


class DatasetNotFound(DataError):
    pass


class DatasetCorrupt(DataError):
    pass


def resolve_root(root: Optional[str] = None) -> Path:
    """The data root: ``root`` if given, else ``$DATA_ROOT``, else ``~/.cache/thermolion/data``."""
    return Path(root or os.environ.get("DATA_ROOT") or Path.home() / ".cache" / "thermolion" / "data").expanduser()


def resolve_cache_dir(cache_dir: Optional[str] = None) -> Path:
    """Where converted tensors go: ``cache_dir``, else ``$THERMOLION_CACHE``, else ``~/.cache/thermolion/tensors``."""
    default = Path.home() / ".cache" / "thermolion" / "tensors"
    return Path(cache_dir or os.environ.get("THERMOLION_CACHE") or default).expanduser()


def cache_file(name: str, split: str, image_size: int, cache_dir: Optional[str] = None) -> Path:
    """Where the converted tensors of one split at one size are cached."""
    return resolve_cache_dir(cache_dir) / f"{name}-{split}-{image_size}.pt"


def _bad_idx_file(paths: list[Path]) -> Optional[Path]:
    """The first idx file whose size disagrees with its header (truncated or corrupt), if any."""
    for path in paths:
        try:
            with path.open("rb") as f:
                head = f.read(4)
                if len(head) < 4:
                    return path
                itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(head[2])
                dims = struct.unpack(f">{head[3]}I", f.read(4 * head[3]))
            if itemsize is None or path.stat().st_size != 4 + 4 * len(dims) + itemsize * int(np.prod(dims)):
                return path
        except (OSError, struct.error):
            return path
    return None


def _open(info: DatasetInfo, root: Path, split: str, download: bool):
    files = [root / f for f in info.files[split]]
    missing = [f for f in files if not f.exists()]
    prefetch = f"python scripts/prefetch_data.py {info.name} --root {root}"
    if missing and not download:
        raise DatasetNotFound(
            f"dataset '{info.name}' ({split} split) is not in {root}: missing {', '.join(map(str, missing))}. "
            f"Download it on a machine with internet ({prefetch}), or point data.root / DATA_ROOT at a "
            "folder that has it, or allow downloading with data.download=true."
        )
    try:
        return info.build(str(root), split, download)
    except Exception as err:  # noqa: BLE001 - torchvision raises many kinds; we say which case it is
        missing = [f for f in files if not f.exists()]
        if missing:
            raise DatasetNotFound(
                f"dataset '{info.name}' ({split} split) is not in {root} and could not be downloaded "
                f"({type(err).__name__}: {err}). Missing: {', '.join(map(str, missing))}. "
                f"On a machine with internet run: {prefetch} (then copy the folder), or set DATA_ROOT."
            ) from None
        bad = _bad_idx_file([f for f in files if "idx" in f.name])
        where = f"the file {bad}" if bad else "one of " + ", ".join(map(str, files))
        raise DatasetCorrupt(
            f"dataset '{info.name}' ({split} split): {where} is truncated or corrupt "
            f"({type(err).__name__}: {err}). Delete it and download again ({prefetch})."
        ) from None


def conversion_key(info: DatasetInfo) -> str:
    """What a cached tensor of ``info`` was made by: the conversion code, and the versions of torch,
    torchvision and the dataset's own reader (any of them can change a pixel)."""
    return _conversion_key(info.packages)


@functools.cache
def _conversion_key(packages: tuple[str, ...]) -> str:
    import torchvision

    parts = [inspect.getsource(conversion), torch.__version__, torchvision.__version__]
    parts += [f"{p} {installed(p)}" for p in packages]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _source_stats(info: DatasetInfo, root: Path, split: str) -> Optional[list]:
    """(path, size, mtime) of the split's source files, or None when any is absent (nothing to compare)."""
    stats = []
    for rel in info.files[split]:
        try:
            st = (root / rel).stat()
        except OSError:
            return None
        stats.append([rel, st.st_size, st.st_mtime_ns])
    return stats


def load_split(
    name: str,
    split: str,
    *,
    root: Optional[str] = None,
    download: bool = True,
    image_size: int = 32,
    cache_dir: Optional[str] = None,
) -> tuple[Tensor, Tensor]:
    """One split of a dataset as (uint8 N x C x S x S, int64 labels), from the cache when present.

    ``split`` is "train" or "test", or "all" for sets without an official split (semeion, digits).
    """
    info = get_info(name)
    if split not in info.files:
        raise ValueError(f"dataset '{info.name}' has splits {sorted(info.files)}, not {split!r}")
    cache = cache_file(info.name, split, image_size, cache_dir)
    root_path = resolve_root(root)
    sources = _source_stats(info, root_path, split)
    if cache.exists():
        try:
            blob = torch.load(cache, weights_only=True)
            # Trusted only when made by this conversion code from these very files (when they are here
            # to compare: a cache prefetched elsewhere still serves a machine without the raw files).
            if (
                blob.get("version") == CACHE_VERSION
                and blob.get("code") == conversion_key(info)
                and (sources is None or blob.get("sources") == sources)
            ):
                return blob["images"], blob["labels"]
        except Exception:  # noqa: BLE001 - an unreadable cache is rebuilt, not trusted
            pass
    ds = _open(info, root_path, split, download)
    try:
        images, labels = conversion.convert(info.name, ds, image_size)
    except Exception as err:  # noqa: BLE001 - torchvision's readers raise many kinds
        raise DatasetCorrupt(
            f"dataset '{info.name}' ({split}) under {root_path} could not be converted: {type(err).__name__}: {err}"
        ) from None
    if sources is None:  # a download just brought the files
        sources = _source_stats(info, root_path, split)
    blob = {"version": CACHE_VERSION, "code": conversion_key(info), "sources": sources}
    torch_save({**blob, "images": images, "labels": labels}, cache)
    return images, labels
