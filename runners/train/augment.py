"""Training-batch augmentation as batched tensor ops on the device, seeded by (seed, epoch).

``crop``: a 4-pixel padded random crop (padding with the image minimum, -1, i.e. black, as
torchvision's RandomCrop(padding=4) does before normalisation); ``crop_flip`` adds a horizontal
flip with probability 1/2; ``auto`` is crop_flip, except crop alone on digit, character and sign
sets, where a mirror image is another symbol. The random draws of an epoch depend only on
(seed, dataset, epoch) and are made for the whole epoch in sample order, so every optimizer of a
seed sees the same augmented batches, and a resumed run continues the same stream. Evaluation
tensors are never augmented (only the training loader calls this).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AUGMENTATIONS", "NO_FLIP_DATASETS", "resolve_augment", "EpochAugmenter"]

AUGMENTATIONS = ("none", "crop", "crop_flip", "auto")
# Mirroring changes the class or the meaning: digits, characters, and traffic signs (turn left/right).
NO_FLIP_DATASETS = frozenset({"digits", "mnist", "kmnist", "emnist", "qmnist", "usps", "semeion", "svhn", "gtsrb"})
PAD = 4


def resolve_augment(augment: str, dataset: str) -> tuple[str, Optional[str]]:
    """(the augmentation to apply, a warning or None) for ``augment`` on ``dataset``."""
    if augment == "auto":
        return ("crop" if dataset in NO_FLIP_DATASETS else "crop_flip"), None
    if augment == "crop_flip" and dataset in NO_FLIP_DATASETS:
        return augment, (
            f"data.augment=crop_flip on {dataset}: horizontal flips turn digits, characters or "
            "signs into other symbols; data.augment=crop (or auto) avoids that"
        )
    return augment, None


class EpochAugmenter:
    """Draws one epoch's crop offsets and flips up front; ``__call__`` augments one batch."""

    def __init__(self, mode: str, seed: int):
        if mode not in ("crop", "crop_flip"):
            raise ValueError(f"EpochAugmenter mode must be crop or crop_flip, got {mode!r}")
        self.mode, self.seed = mode, seed

    def draws(self, epoch: int, n: int, device) -> tuple[Tensor, Optional[Tensor]]:
        """Per-sample (dy, dx) offsets in [0, 2*PAD] and flip flags, for the n samples in loader order."""
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
        offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=gen)
        flips = torch.rand(n, generator=gen) < 0.5 if self.mode == "crop_flip" else None
        return offsets.to(device), (flips.to(device) if flips is not None else None)

    @staticmethod
    def apply(x: Tensor, offsets: Tensor, flips: Optional[Tensor]) -> Tensor:
        """A new tensor: each image padded by PAD with -1 and cropped back at its offset (then flipped)."""
        b, _, h, w = x.shape
        padded = F.pad(x, (PAD, PAD, PAD, PAD), value=-1.0)
        rows = (offsets[:, 0, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B,1,H,1)
        cols = (offsets[:, 1, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B,1,1,W)
        out = padded[
            torch.arange(b, device=x.device)[:, None, None, None],
            torch.arange(x.shape[1], device=x.device)[None, :, None, None],
            rows,
            cols,
        ]
        if flips is not None:
            out = torch.where(flips[:, None, None, None], out.flip(3), out)
        return out
