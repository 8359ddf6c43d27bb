"""The dataset files on disk: where they are, reading them through torchvision, the tensor cache,
and the errors that say what is missing or broken and how to fix it.

One path for every dataset: torchvision parses the dataset's own files (with download when
allowed), the split is converted once (``runners.train.convert``) into a uint8 tensor (N, C, S, S)
at the protocol's image size plus int64 labels, and saved atomically to
``<cache_dir>/<name>-<split>-<size>.pt``; later runs load that in a fraction of a second. A cached
tensor is trusted only when it was made by the same conversion code, with the same torch,
torchvision and dataset-reader versions, from files of the same content.

The content is a sha256 of the split's source files (every file under a folder entry, such as
GTSRB's), ``source_digest``. It is the data's part of a run's identity (run.json's ``data_sha``) and
the cache's key. Hashing is memoised per split in ``<cache_dir>/sources/<name>-<split>.json`` against
each file's full stat, ctime and inode included: ``cp -p``, ``rsync -a`` and ``shutil.copytree`` keep
mtimes but cannot set a ctime, so a replaced file is hashed again; mtimes alone are never trusted.
None of this module decides a number, so it lies outside the hashed core: editing a message here
neither stales runs nor rebuilds caches.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import struct
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .atomic import torch_save, write_text
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
    "source_digest",
    "data_digest",
    "used_splits",
]

CACHE_VERSION = 2  # 2: keyed on the sources' content (sources_sha), not their (size, mtime)


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
    before = _existing(root, info, split) if download else None
    try:
        return info.build(str(root), split, download)
    except Exception as err:  # noqa: BLE001 - torchvision raises many kinds; we say which case it is
        if before is not None:  # a failed download leaves the data root as it was
            _remove_new(root, info, split, before)
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


def _tops(root: Path, info: DatasetInfo, split: str) -> set[Path]:
    """The first folder (or file) under ``root`` of each of the split's entries: what a download writes."""
    return {root / Path(rel).parts[0] for rel in info.files[split]}


def _existing(root: Path, info: DatasetInfo, split: str) -> set[Path]:
    found = {root} if root.exists() else set()
    for top in _tops(root, info, split):
        if top.exists():
            found |= {top, *top.rglob("*")} if top.is_dir() else {top}
    return found


def _remove_new(root: Path, info: DatasetInfo, split: str, before: set[Path]) -> None:
    """Remove what a failed download created under ``root`` (files, then folders deepest first); what was
    there before stays."""
    new = [p for p in _existing(root, info, split) if p not in before]
    for path in sorted(new, key=lambda p: len(p.parts), reverse=True):
        try:
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
        except OSError:
            pass  # not empty (a file we did not make) or already gone: left alone


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


def _source_files(info: DatasetInfo, root: Path, split: str) -> Optional[list[str]]:
    """The split's source files as sorted paths relative to ``root``, a folder entry expanded to every
    file under it; None when any entry is absent (nothing to compare). Plain strings and os.walk: on
    GTSRB's 26,640 files pathlib's objects cost more than the stats."""
    files: list[str] = []
    for rel in info.files[split]:
        path = root / rel
        if path.is_dir():
            found = []
            for folder, _, names in os.walk(path):
                base = Path(folder).relative_to(root).as_posix()
                found += [f"{base}/{n}" for n in names]
            files += sorted(found)
        elif path.is_file():
            files.append(rel)
        else:
            return None
    return files


def _stats_sha(root: Path, files: list[str]) -> str:
    """One hash of every file's full stat (size, mtime, ctime, inode, device)."""
    digest = hashlib.sha256()
    for rel in files:
        st = os.stat(os.path.join(root, rel))
        digest.update(f"{rel}\0{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino} {st.st_dev}\0".encode())
    return digest.hexdigest()


def _hash_files(root: Path, files: list[str]) -> str:
    digest = hashlib.sha256()
    for rel in files:
        digest.update(rel.encode() + b"\0")
        with open(os.path.join(root, rel), "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def source_digest(name: str, split: str, root: Optional[str] = None, cache_dir: Optional[str] = None) -> Optional[str]:
    """sha256 (16 hex) of one split's source files by content, or None when they are not all there.

    Memoised in ``<cache_dir>/sources/<name>-<split>.json`` against a hash of every file's full stat
    (size, mtime, ctime, inode, device): any write, replacement or copy changes a ctime or an inode, and
    the files are read again. A set that ships inside a package (digits) has no files: its digest is
    that of nothing, and the package's version stands for it in the identity."""
    info, root_path = get_info(name), resolve_root(root)
    files = _source_files(info, root_path, split)
    if files is None:
        return None
    memo = resolve_cache_dir(cache_dir) / "sources" / f"{info.name}-{split}.json"
    stats = _stats_sha(root_path, files)
    try:
        seen = json.loads(memo.read_text())
        if seen.get("stats") == stats:
            return seen["sha"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    sha = _hash_files(root_path, files)
    try:
        write_text(memo, json.dumps({"sha": sha, "stats": stats, "files": len(files)}))
    except OSError:  # a read-only cache: hash again next time rather than fail
        pass
    return sha


def used_splits(name: str, eval_split: str) -> tuple[str, ...]:
    """The splits a run reads (``runners.train.data.prepare``): train, plus test when it evaluates on it;
    "all" for a set without an official split."""
    info = get_info(name)
    if not info.has_test_split:
        return ("all",)
    return ("train", "test") if eval_split == "test" else ("train",)


def data_digest(data) -> dict[str, Optional[str]]:
    """``{split: source digest}`` of what a run with ``data`` (a DataConfig) trains and evaluates on:
    run.json's ``data_sha``. A split whose files are absent reads the digest its cached tensor was made
    from (a cache prefetched elsewhere), else None."""
    out = {}
    for split in used_splits(data.name, data.eval_split):
        sha = source_digest(data.name, split, data.root, data.cache_dir)
        if sha is None:
            sha = _cached_sources_sha(cache_file(data.name, split, data.image_size, data.cache_dir))
        out[split] = sha
    return out


def _cached_sources_sha(cache: Path) -> Optional[str]:
    try:
        return torch.load(cache, weights_only=True, mmap=True).get("sources_sha")
    except Exception:  # noqa: BLE001 - no cache, or an unreadable one: nothing to compare
        return None


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
    sources = source_digest(info.name, split, root, cache_dir)
    if cache.exists():
        try:
            blob = torch.load(cache, weights_only=True)
            # Trusted only when made by this conversion code from files of this content (when they are
            # here to compare: a cache prefetched elsewhere still serves a machine without the raw files).
            if (
                blob.get("version") == CACHE_VERSION
                and blob.get("code") == conversion_key(info)
                and (sources is None or blob.get("sources_sha") == sources)
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
        sources = source_digest(info.name, split, root, cache_dir)
    blob = {"version": CACHE_VERSION, "code": conversion_key(info), "sources_sha": sources}
    torch_save({**blob, "images": images, "labels": labels}, cache)
    return images, labels
