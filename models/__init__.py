"""Models of the benchmark, built by name from a plain ``ModelConfig``.

``MODELS`` holds each model's defaults, written once: conf/model/<name>.yaml is generated from it
(and ``MODEL_DOCS``) by scripts/write_configs.py.
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

__all__ = ["ConvNet", "CifarResNet18", "SmallViT", "ModelConfig", "MODELS", "MODEL_DOCS", "build_model"]

MODELS: dict[str, dict] = {
    "convnet": dict(width=32, decay_norm_and_bias=True),
    "resnet18": dict(width=64, decay_norm_and_bias=False),
    "vit_tiny": dict(width=192, depth=12, heads=3, mlp_ratio=4, decay_norm_and_bias=False),
}
MODEL_DOCS = {
    "convnet": "The paper's ConvNet: channels width, 2*width; hidden units 8*width (the paper: 32).\n"
    "Channels, size and classes come from the dataset. Weight decay on every tensor, as the paper.",
    "resnet18": "CIFAR-style ResNet-18 (3x3 stride-1 stem, no max-pool) from torchvision's ResNet pieces; 11.2M\n"
    "parameters at width 64 (stage widths w, 2w, 4w, 8w). Biases and BatchNorm weights get no weight decay.",
    "vit_tiny": "ViT-Tiny (Touvron et al. 2021) for 32x32 inputs: torchvision's VisionTransformer, 4x4 patches\n"
    "(64 tokens + class token), embedding width 192, depth 12, 3 heads, MLP 4 x 192; 5.4M parameters.\n"
    "Input channels and classes come from the dataset. Biases, LayerNorm weights, the class token and\n"
    "the position embedding get no weight decay.",
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
        given = {
            k: getattr(self, k)
            for k in ("width", "depth", "heads", "mlp_ratio", "decay_norm_and_bias")
            if getattr(self, k) is not None
        }
        extra = sorted(set(given) - set(known))
        if extra:
            raise ValueError(f"model {self.name!r} has no setting(s) {extra}; it has {sorted(known)}")
        out = {"name": self.name, **known, **given}
        for key in ("width", "depth", "heads", "mlp_ratio"):
            if key in out and not (isinstance(out[key], int) and out[key] >= 1):
                raise ValueError(f"model.{key} must be an integer >= 1, got {out[key]!r}")
        if out["name"] == "vit_tiny" and out["width"] % out["heads"]:
            raise ValueError(
                f"vit_tiny's model.width ({out['width']}) must be divisible by model.heads "
                f"({out['heads']}); e.g. width 12, 24 or 192 with 3 heads"
            )
        return out


def build_model(cfg: ModelConfig, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    s = cfg.resolved()
    if s["name"] == "convnet":
        return ConvNet(in_channels, num_classes, image_size, width=s["width"])
    if s["name"] == "resnet18":
        return CifarResNet18(in_channels, num_classes, width=s["width"])
    return SmallViT(
        in_channels,
        num_classes,
        image_size,
        width=s["width"],
        depth=s["depth"],
        heads=s["heads"],
        mlp_ratio=s["mlp_ratio"],
    )
