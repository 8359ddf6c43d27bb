"""Models of the benchmark, built by name from a plain ``ModelConfig``.

``MODELS`` holds each model's defaults (conf/model/<name>.yaml must match them; a test checks).
``decay_norm_and_bias`` is the param-group policy (thermolion.param_groups): the paper's convnet
decays every tensor; resnet18 and vit_tiny keep biases, norm weights (and the ViT's class token
and position embedding) out of weight decay, as is usual for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import nn

from .convnet import ConvNet
from .resnet import CifarResNet18
from .vit import SmallViT

__all__ = ["ConvNet", "CifarResNet18", "SmallViT", "ModelConfig", "MODELS", "build_model"]

MODELS: dict[str, dict] = {
    "convnet": dict(width=32, decay_norm_and_bias=True),
    "resnet18": dict(width=64, decay_norm_and_bias=False),
    "vit_tiny": dict(width=192, depth=12, heads=3, mlp_ratio=4, decay_norm_and_bias=False),
}


@dataclass(frozen=True)
class ModelConfig:
    name: str = "convnet"
    width: Optional[int] = None  # None: the model's default (MODELS)
    depth: Optional[int] = None  # vit_tiny only
    heads: Optional[int] = None  # vit_tiny only
    mlp_ratio: Optional[int] = None  # vit_tiny only
    decay_norm_and_bias: Optional[bool] = None

    def resolved(self) -> dict:
        """Every setting of this model, defaults filled in (unknown names raise ValueError)."""
        if self.name not in MODELS:
            raise ValueError(f"unknown model {self.name!r}; choose one of: {', '.join(MODELS)}")
        known = MODELS[self.name]
        given = {k: getattr(self, k) for k in ("width", "depth", "heads", "mlp_ratio", "decay_norm_and_bias")
                 if getattr(self, k) is not None}
        extra = sorted(set(given) - set(known))
        if extra:
            raise ValueError(f"model {self.name!r} has no setting(s) {extra}; it has {sorted(known)}")
        out = {"name": self.name, **known, **given}
        if out["name"] == "vit_tiny" and out["width"] % out["heads"]:
            raise ValueError(f"vit_tiny's model.width ({out['width']}) must be divisible by model.heads "
                             f"({out['heads']}); e.g. width 12, 24 or 192 with 3 heads")
        return out


def build_model(cfg: ModelConfig, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    s = cfg.resolved()
    if s["name"] == "convnet":
        return ConvNet(in_channels, num_classes, image_size, width=s["width"])
    if s["name"] == "resnet18":
        return CifarResNet18(in_channels, num_classes, width=s["width"])
    return SmallViT(in_channels, num_classes, image_size, width=s["width"], depth=s["depth"], heads=s["heads"],
                    mlp_ratio=s["mlp_ratio"])
