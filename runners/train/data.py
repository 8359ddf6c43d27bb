"""A protocol's tensors and batches: splits, label noise, normalisation, and the tensor loader.

:func:`prepare` turns a :class:`DataConfig` into normalised train and evaluation tensors resident
on the device (the paper protocol evaluates on the very training tensor). :class:`TensorLoader`
draws batches from them: a seeded permutation per epoch and index slicing, no DataLoader workers
and no per-sample Python.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor

from ..datafiles import load_split
from .datasets import get_info
from .settings import DataConfig

__all__ = ["DataConfig", "Prepared", "TensorLoader", "prepare", "stratified_split", "corrupt_labels", "HOLDOUT_SEED"]

HOLDOUT_SEED = 0  # the fixed seed of the stratified test split of sets that have none


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
        test = partial(load_split, info.name, "test", **kw)
    else:
        all_x, all_y = load_split(info.name, "all", **kw)
        if cfg.eval_split == "train":  # paper protocol: the whole set is the training set
            train_x, train_y = all_x, all_y
            test = None
        else:
            keep, held = stratified_split(all_y, cfg.test_fraction, HOLDOUT_SEED)
            train_x, train_y = all_x[keep], all_y[keep]

            def test():
                return all_x[held], all_y[held]

            notes.append(
                f"{info.name} has no official test split: a fixed stratified "
                f"{cfg.test_fraction:.0%} was held out (seed {HOLDOUT_SEED})"
            )
    if cfg.train_subset is not None and len(train_x) > cfg.train_subset:
        train_x, train_y = train_x[: cfg.train_subset], train_y[: cfg.train_subset]
        if info.name == "gtsrb":
            notes.append(
                f"GTSRB's files are sorted by class: its first {cfg.train_subset} samples cover "
                f"{train_y.unique().numel()} of 43 classes (reproduced as in the paper)"
            )
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
    return Prepared(
        info.name,
        train,
        train_y.to(device),
        evaluation,
        eval_y.to(device),
        info.num_classes,
        info.channels,
        cfg.image_size,
        cfg.eval_split,
        notes,
    )


class TensorLoader:
    """Batches from device-resident tensors: a seeded permutation per epoch, then index slicing.

    The order of epoch ``e`` depends only on ``(seed, e)``, so every optimizer run with the same
    seed sees the same batches, and a resumed run continues the same sequence.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        augmenter=None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.augmenter = augmenter  # runners.train.augment.EpochAugmenter, or None

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
                yield (
                    self.augmenter.apply(self.x[idx], offsets[batch], flips[batch] if flips is not None else None),
                    self.y[idx],
                )
