"""Datasets as ready tensors: torchvision reads the files once, we keep uint8 tensors cached.

One path for every dataset: torchvision parses the dataset's own files (with download when
allowed), the split is converted once into a uint8 tensor (N, C, S, S) at the protocol's image
size plus int64 labels, and saved atomically to ``<cache_dir>/<name>-<split>-<size>.pt``; later
runs load that in a fraction of a second. Resizing is one batched ``interpolate`` (GTSRB, whose
images differ in size, is resized per image with PIL while converting, as torchvision's Resize
would). Normalisation to [-1, 1] (mean 0.5, std 0.5) happens once, in :func:`prepare`.
Batches are drawn by :class:`TensorLoader` from tensors resident on the device: a seeded
permutation per epoch and index slicing, no DataLoader workers and no per-sample Python.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from .io import torch_save

__all__ = ["DATASETS", "PAPER_DATASETS", "DataConfig", "DataError", "DatasetNotFound", "DatasetCorrupt",
           "Prepared", "TensorLoader", "load_split", "prepare", "resolve_root", "resolve_cache_dir",
           "stratified_split", "corrupt_labels"]

CACHE_VERSION = 1
HOLDOUT_SEED = 0  # the fixed seed of the stratified test split of sets that have none


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

DATASETS: dict[str, DatasetInfo] = {d.name: d for d in [
    DatasetInfo("gtsrb", 3, 43, True,
                {"train": ("gtsrb/GTSRB/Training",),
                 "test": ("gtsrb/GTSRB/Final_Test/Images", "gtsrb/GT-final_test.csv")},
                _tv("GTSRB", lambda s: {"split": s})),
    DatasetInfo("semeion", 1, 10, False, {"all": ("semeion.data",)}, _tv("SEMEION", lambda s: {})),
    DatasetInfo("mnist", 1, 10, True, _idx_files("MNIST/raw", _MNIST_LIKE), _tv("MNIST", _train_flag)),
    DatasetInfo("fashionmnist", 1, 10, True, _idx_files("FashionMNIST/raw", _MNIST_LIKE),
                _tv("FashionMNIST", _train_flag)),
    DatasetInfo("kmnist", 1, 10, True, _idx_files("KMNIST/raw", _MNIST_LIKE), _tv("KMNIST", _train_flag)),
    DatasetInfo("emnist", 1, 10, True,
                _idx_files("EMNIST/raw", {"train": "emnist-mnist-train", "test": "emnist-mnist-test"}),
                _tv("EMNIST", lambda s: {"split": "mnist", "train": s == "train"})),
    DatasetInfo("qmnist", 1, 10, True,
                _idx_files("QMNIST/raw", {"train": "qmnist-train", "test": "qmnist-test"}, "labels-idx2-int"),
                _tv("QMNIST", lambda s: {"what": s, "compat": True})),
    DatasetInfo("usps", 1, 10, True, {"train": ("usps.bz2",), "test": ("usps.t.bz2",)},
                _tv("USPS", _train_flag)),
    DatasetInfo("cifar10", 3, 10, True,
                {"train": tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
                 "test": ("cifar-10-batches-py/test_batch",)},
                _tv("CIFAR10", _train_flag)),
    DatasetInfo("cifar100", 3, 100, True,
                {"train": ("cifar-100-python/train",), "test": ("cifar-100-python/test",)},
                _tv("CIFAR100", _train_flag)),
    DatasetInfo("svhn", 3, 10, True, {"train": ("train_32x32.mat",), "test": ("test_32x32.mat",)},
                _tv("SVHN", lambda s: {"split": s})),
    DatasetInfo("stl10", 3, 10, True,
                {"train": ("stl10_binary/train_X.bin", "stl10_binary/train_y.bin", "stl10_binary/unlabeled_X.bin"),
                 "test": ("stl10_binary/test_X.bin", "stl10_binary/test_y.bin", "stl10_binary/unlabeled_X.bin")},
                _tv("STL10", lambda s: {"split": s})),
    DatasetInfo("digits", 1, 10, False, {"all": ()}, lambda root, split, download: None),
]}
PAPER_DATASETS = ("gtsrb", "semeion", "mnist", "fashionmnist", "kmnist", "emnist", "qmnist", "usps",
                  "cifar10", "cifar100", "svhn", "stl10")


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
        x = torch.nn.functional.interpolate(chunk.float(), size=(size, size), mode="bilinear",
                                            align_corners=False, antialias=True)
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


def load_split(name: str, split: str, *, root: Optional[str] = None, download: bool = True,
               image_size: int = 32, cache_dir: Optional[str] = None) -> tuple[Tensor, Tensor]:
    """One split of a dataset as (uint8 N x C x S x S, int64 labels), from the cache when present.

    ``split`` is "train" or "test", or "all" for sets without an official split (semeion, digits).
    """
    info = get_info(name)
    if split not in info.files:
        raise ValueError(f"dataset '{info.name}' has splits {sorted(info.files)}, not {split!r}")
    cache = resolve_cache_dir(cache_dir) / f"{info.name}-{split}-{image_size}.pt"
    if cache.exists():
        try:
            blob = torch.load(cache, weights_only=True)
            if blob.get("version") == CACHE_VERSION:
                return blob["images"], blob["labels"]
        except Exception:  # noqa: BLE001 - an unreadable cache is rebuilt, not trusted
            pass
    root_path = resolve_root(root)
    ds = _open(info, root_path, split, download)
    try:
        images, labels = _convert(info.name, ds, image_size)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001
        raise DatasetCorrupt(f"dataset '{info.name}' ({split}) under {root_path} could not be converted: "
                             f"{type(err).__name__}: {err}") from None
    torch_save({"version": CACHE_VERSION, "images": images, "labels": labels}, cache)
    return images, labels


# ----------------------------------------------------------------------------- protocol
def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (kept, held_out): ``fraction`` of every class held out, chosen by a seeded shuffle."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"a held-out fraction must be in (0, 1), got {fraction}")
    gen = torch.Generator().manual_seed(seed)
    held = []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        held.append(idx[: int(round(len(idx) * fraction))])
    held_idx = torch.cat(held).sort().values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[held_idx] = False
    return mask.nonzero().flatten(), held_idx


def corrupt_labels(labels: Tensor, fraction: float, num_classes: int, seed: int) -> Tensor:
    """A copy of ``labels`` with a seeded ``fraction`` replaced by uniformly drawn classes."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"label_noise must be in [0, 1], got {fraction}")
    gen = torch.Generator().manual_seed(seed)
    out = labels.clone()
    chosen = torch.randperm(len(labels), generator=gen)[: int(round(fraction * len(labels)))]
    out[chosen] = torch.randint(num_classes, (len(chosen),), generator=gen)
    return out


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"
    root: Optional[str] = None
    cache_dir: Optional[str] = None
    download: bool = True
    image_size: int = 32
    train_subset: Optional[int] = None  # paper protocol: the first N training samples
    eval_split: str = "test"  # "train": accuracy on the training set (paper); "test"; "val"
    val_fraction: float = 0.1  # held out of the training split when eval_split == "val"
    test_fraction: float = 0.2  # held-out test share for sets without an official test split
    label_noise: float = 0.0
    augment: str = "none"  # none | crop | crop_flip | auto (runners.augment; training batches only)


@dataclass
class Prepared:
    name: str
    train_x: Tensor
    train_y: Tensor
    eval_x: Tensor
    eval_y: Tensor
    num_classes: int
    channels: int
    image_size: int
    eval_split: str
    notes: list[str] = field(default_factory=list)


def _normalise(images: Tensor, device) -> Tensor:
    # ToTensor + Normalize(0.5, 0.5) in one batched op: x/255*2 - 1, in [-1, 1]
    return images.to(device).float().mul_(2.0 / 255.0).sub_(1.0)


def prepare(cfg: DataConfig, *, seed: int = 0, device="cpu") -> Prepared:
    """Train and evaluation tensors for a protocol, normalised and resident on ``device``."""
    info = get_info(cfg.name)
    if cfg.eval_split not in ("train", "test", "val"):
        raise ValueError(f"eval_split must be 'train', 'test' or 'val', got {cfg.eval_split!r}")
    kw = dict(root=cfg.root, download=cfg.download, image_size=cfg.image_size, cache_dir=cfg.cache_dir)
    notes = []
    if info.has_test_split:
        train_x, train_y = load_split(info.name, "train", **kw)
        test = (lambda: load_split(info.name, "test", **kw))
    else:
        all_x, all_y = load_split(info.name, "all", **kw)
        if cfg.eval_split == "train":  # paper protocol: the whole set is the training set
            train_x, train_y = all_x, all_y
            test = None
        else:
            keep, held = stratified_split(all_y, cfg.test_fraction, HOLDOUT_SEED)
            train_x, train_y = all_x[keep], all_y[keep]
            test = (lambda: (all_x[held], all_y[held]))
            notes.append(f"{info.name} has no official test split: a fixed stratified "
                         f"{cfg.test_fraction:.0%} was held out (seed {HOLDOUT_SEED})")
    if cfg.train_subset is not None and len(train_x) > cfg.train_subset:
        train_x, train_y = train_x[: cfg.train_subset], train_y[: cfg.train_subset]
        if info.name == "gtsrb":
            notes.append(f"GTSRB's files are sorted by class: its first {cfg.train_subset} samples cover "
                         f"{train_y.unique().numel()} of 43 classes (reproduced as in the paper)")
    if cfg.eval_split == "val":
        keep, held = stratified_split(train_y, cfg.val_fraction, seed)
        eval_x, eval_y = train_x[held], train_y[held]
        train_x, train_y = train_x[keep], train_y[keep]
    elif cfg.eval_split == "test":
        if test is None:
            raise ValueError(f"{info.name} in the paper protocol has no test split; use eval_split=train")
        eval_x, eval_y = test()
    else:
        eval_x, eval_y = train_x, train_y
    if cfg.label_noise > 0:
        train_y = corrupt_labels(train_y, cfg.label_noise, info.num_classes, seed)
        notes.append(f"label noise: {cfg.label_noise:.0%} of training labels replaced uniformly (seed {seed})")
        if cfg.eval_split == "train":
            eval_y = train_y  # accuracy on the (noisy) labels the model was trained on
    train = _normalise(train_x, device)
    evaluation = train if eval_x is train_x else _normalise(eval_x, device)  # paper: the same tensor
    return Prepared(info.name, train, train_y.to(device), evaluation, eval_y.to(device), info.num_classes,
                    info.channels, cfg.image_size, cfg.eval_split, notes)


class TensorLoader:
    """Batches from device-resident tensors: a seeded permutation per epoch, then index slicing.

    The order of epoch ``e`` depends only on ``(seed, e)``, so every optimizer run with the same
    seed sees the same batches, and a resumed run continues the same sequence.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, augmenter=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.augmenter = augmenter  # runners.augment.EpochAugmenter, or None

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> Tensor:
        if not self.shuffle:
            return torch.arange(len(self.x))
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
        return torch.randperm(len(self.x), generator=gen)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.order(epoch).to(self.x.device)
        draws = self.augmenter.draws(epoch, len(order), self.x.device) if self.augmenter else None
        for i in range(len(self)):
            batch = slice(i * self.batch_size, (i + 1) * self.batch_size)
            idx = order[batch]
            if draws is None:
                yield self.x[idx], self.y[idx]
            else:
                offsets, flips = draws
                yield self.augmenter.apply(self.x[idx], offsets[batch], flips[batch] if flips is not None else None), self.y[idx]
