"""Datasets as ready tensors: torchvision reads the files once, we keep uint8 tensors cached.

One path for every dataset: torchvision parses the dataset's own files (with download when
allowed), the split is converted once into a uint8 tensor (N, C, S, S) at the protocol's image
size plus int64 labels, and saved atomically to ``<cache_dir>/<name>-<split>-<size>.pt``; later
runs load that in a fraction of a second. Resizing is one batched ``interpolate`` (GTSRB, whose
images differ in size, is resized per image with PIL while converting, as torchvision's Resize
would). Normalisation, splits and batches are ``runners.train.data``'s job.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ..atomic import torch_save

__all__ = [
    "DATASETS",
    "PAPER_DATASETS",
    "TRAIN_SIZES",
    "DataError",
    "DatasetNotFound",
    "DatasetCorrupt",
    "DatasetInfo",
    "get_info",
    "load_split",
    "resolve_root",
    "resolve_cache_dir",
]

CACHE_VERSION = 1


class DataError(RuntimeError):
    """A dataset could not be provided; the message says why and what to do."""


class DatasetNotFound(DataError):
    pass


class DatasetCorrupt(DataError):
    pass


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    num_classes: int
    has_test_split: bool
    files: dict[str, tuple[str, ...]]  # split -> paths under the root that torchvision reads
    build: Callable[[str, str, bool], object]  # (root, split, download) -> torchvision dataset


def _tv(cls_name: str, split_arg: Callable[[str], dict]) -> Callable[[str, str, bool], object]:
    def build(root: str, split: str, download: bool):
        import torchvision.datasets as tvd

        return getattr(tvd, cls_name)(root=root, download=download, **split_arg(split))

    return build


def _train_flag(split: str) -> dict:
    return {"train": split == "train"}


def _idx_files(folder: str, prefixes: dict[str, str], label_suffix: str = "labels-idx1-ubyte") -> dict:
    return {s: (f"{folder}/{p}-images-idx3-ubyte", f"{folder}/{p}-{label_suffix}") for s, p in prefixes.items()}


_MNIST_LIKE = {"train": "train", "test": "t10k"}

DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo(
            "gtsrb",
            3,
            43,
            True,
            {"train": ("gtsrb/GTSRB/Training",), "test": ("gtsrb/GTSRB/Final_Test/Images", "gtsrb/GT-final_test.csv")},
            _tv("GTSRB", lambda s: {"split": s}),
        ),
        DatasetInfo("semeion", 1, 10, False, {"all": ("semeion.data",)}, _tv("SEMEION", lambda s: {})),
        DatasetInfo("mnist", 1, 10, True, _idx_files("MNIST/raw", _MNIST_LIKE), _tv("MNIST", _train_flag)),
        DatasetInfo(
            "fashionmnist", 1, 10, True, _idx_files("FashionMNIST/raw", _MNIST_LIKE), _tv("FashionMNIST", _train_flag)
        ),
        DatasetInfo("kmnist", 1, 10, True, _idx_files("KMNIST/raw", _MNIST_LIKE), _tv("KMNIST", _train_flag)),
        DatasetInfo(
            "emnist",
            1,
            10,
            True,
            _idx_files("EMNIST/raw", {"train": "emnist-mnist-train", "test": "emnist-mnist-test"}),
            _tv("EMNIST", lambda s: {"split": "mnist", "train": s == "train"}),
        ),
        DatasetInfo(
            "qmnist",
            1,
            10,
            True,
            _idx_files("QMNIST/raw", {"train": "qmnist-train", "test": "qmnist-test"}, "labels-idx2-int"),
            _tv("QMNIST", lambda s: {"what": s, "compat": True}),
        ),
        DatasetInfo("usps", 1, 10, True, {"train": ("usps.bz2",), "test": ("usps.t.bz2",)}, _tv("USPS", _train_flag)),
        DatasetInfo(
            "cifar10",
            3,
            10,
            True,
            {
                "train": tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
                "test": ("cifar-10-batches-py/test_batch",),
            },
            _tv("CIFAR10", _train_flag),
        ),
        DatasetInfo(
            "cifar100",
            3,
            100,
            True,
            {"train": ("cifar-100-python/train",), "test": ("cifar-100-python/test",)},
            _tv("CIFAR100", _train_flag),
        ),
        DatasetInfo(
            "svhn",
            3,
            10,
            True,
            {"train": ("train_32x32.mat",), "test": ("test_32x32.mat",)},
            _tv("SVHN", lambda s: {"split": s}),
        ),
        DatasetInfo(
            "stl10",
            3,
            10,
            True,
            {
                "train": ("stl10_binary/train_X.bin", "stl10_binary/train_y.bin", "stl10_binary/unlabeled_X.bin"),
                "test": ("stl10_binary/test_X.bin", "stl10_binary/test_y.bin", "stl10_binary/unlabeled_X.bin"),
            },
            _tv("STL10", lambda s: {"split": s}),
        ),
        DatasetInfo("digits", 1, 10, False, {"all": ()}, lambda root, split, download: None),
    ]
}
# Training-split sizes (the whole set for those without a test split), to check settings such as
# warmup_steps against a run's length before any data is loaded.
TRAIN_SIZES = {
    "gtsrb": 26640,
    "semeion": 1593,
    "mnist": 60000,
    "fashionmnist": 60000,
    "kmnist": 60000,
    "emnist": 60000,
    "qmnist": 60000,
    "usps": 7291,
    "cifar10": 50000,
    "cifar100": 50000,
    "svhn": 73257,
    "stl10": 5000,
    "digits": 1797,
}
PAPER_DATASETS = (
    "gtsrb",
    "semeion",
    "mnist",
    "fashionmnist",
    "kmnist",
    "emnist",
    "qmnist",
    "usps",
    "cifar10",
    "cifar100",
    "svhn",
    "stl10",
)


def get_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None


def resolve_root(root: Optional[str] = None) -> Path:
    """The data root: ``root`` if given, else ``$DATA_ROOT``, else ``~/.cache/thermolion/data``."""
    return Path(root or os.environ.get("DATA_ROOT") or Path.home() / ".cache" / "thermolion" / "data").expanduser()


def resolve_cache_dir(cache_dir: Optional[str] = None) -> Path:
    """Where converted tensors go: ``cache_dir``, else ``$THERMOLION_CACHE``, else ``~/.cache/thermolion/tensors``."""
    default = Path.home() / ".cache" / "thermolion" / "tensors"
    return Path(cache_dir or os.environ.get("THERMOLION_CACHE") or default).expanduser()


# ----------------------------------------------------------------------------- conversion
def _resize_batch(images: Tensor, size: int) -> Tensor:
    if images.shape[-2:] == (size, size):
        return images.contiguous()
    out = []
    for chunk in images.split(8192):  # bounded float memory on big sets
        x = torch.nn.functional.interpolate(
            chunk.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _as_nchw(data) -> Tensor:
    x = torch.as_tensor(np.asarray(data))
    if x.ndim == 3:
        return x.unsqueeze(1)
    if x.shape[-1] == 3 and x.shape[1] != 3:  # CIFAR stores HWC
        return x.permute(0, 3, 1, 2)
    return x


def _convert(name: str, ds, size: int) -> tuple[Tensor, Tensor]:
    """torchvision dataset -> (uint8 N x C x size x size, int64 labels)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()  # shipped inside scikit-learn: no network
        images = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
        return _resize_batch(images, size), torch.from_numpy(bunch.target).long()
    if name == "gtsrb":  # images differ in size: decode and resize each one, once
        from PIL import Image

        images = np.empty((len(ds._samples), size, size, 3), dtype=np.uint8)
        for i, (path, _) in enumerate(ds._samples):
            with Image.open(path) as img:
                images[i] = np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR))
        labels = torch.tensor([label for _, label in ds._samples], dtype=torch.long)
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels
    images = _as_nchw(ds.data)
    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = ds.labels
    labels = torch.as_tensor(np.asarray(labels)).long()
    if name == "qmnist":
        labels = labels[:, 0]  # column 0 is the class; the rest is QMNIST's provenance
    if images.dtype != torch.uint8:
        raise DatasetCorrupt(f"{name}: expected uint8 images, got {images.dtype}")
    return _resize_batch(images, size), labels


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


@functools.lru_cache(maxsize=1)
def _conversion_code() -> str:
    """A hash of this module, which reads and converts the files: editing it invalidates every cache."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


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
    cache = resolve_cache_dir(cache_dir) / f"{info.name}-{split}-{image_size}.pt"
    root_path = resolve_root(root)
    sources = _source_stats(info, root_path, split)
    if cache.exists():
        try:
            blob = torch.load(cache, weights_only=True)
            # Trusted only when made by this conversion code from these very files (when they are here
            # to compare: a cache prefetched elsewhere still serves a machine without the raw files).
            if (
                blob.get("version") == CACHE_VERSION
                and blob.get("code") == _conversion_code()
                and (sources is None or blob.get("sources") == sources)
            ):
                return blob["images"], blob["labels"]
        except Exception:  # noqa: BLE001 - an unreadable cache is rebuilt, not trusted
            pass
    ds = _open(info, root_path, split, download)
    try:
        images, labels = _convert(info.name, ds, image_size)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001
        raise DatasetCorrupt(
            f"dataset '{info.name}' ({split}) under {root_path} could not be converted: {type(err).__name__}: {err}"
        ) from None
    if sources is None:  # a download just brought the files
        sources = _source_stats(info, root_path, split)
    blob = {"version": CACHE_VERSION, "code": _conversion_code(), "sources": sources}
    torch_save({**blob, "images": images, "labels": labels}, cache)
    return images, labels
