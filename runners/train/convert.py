"""A dataset split converted from torchvision's reading into the tensors a run trains on.

Everything that decides the pixel values and labels lives here, and only that: its source (with the
versions of torch and torchvision, and a dataset's own reader) is the tensor cache's key
(``runners.datafiles``), so an edit here rebuilds the cache and an edit to an error message does not.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["convert", "ConversionError"]


class ConversionError(RuntimeError):
    """The files were read but hold something other than what the dataset's format promises."""


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


def convert(name: str, ds, size: int) -> tuple[Tensor, Tensor]:
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
        raise ConversionError(f"{name}: expected uint8 images, got {images.dtype}")
    return _resize_batch(images, size), labels
