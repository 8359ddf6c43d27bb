"""A Vision Transformer for small images: torchvision's VisionTransformer with 4x4 patches.

Defaults are ViT-Tiny's (Touvron et al. 2021): embedding 192, depth 12, 3 heads, MLP 4x192. With
32x32 inputs and patch 4 there are 64 tokens plus the class token. The patch projection is rebuilt
for the dataset's channel count (torchvision's takes RGB) and initialised as torchvision does.
"""

from __future__ import annotations

import math

from torch import nn
from torchvision.models.vision_transformer import VisionTransformer


class SmallViT(VisionTransformer):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int = 32,
        width: int = 192,
        depth: int = 12,
        heads: int = 3,
        mlp_ratio: int = 4,
        patch_size: int = 4,
    ):
        if width % heads:
            raise ValueError(f"the ViT's width ({width}) must be divisible by its heads ({heads})")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be divisible by the patch size {patch_size}")
        super().__init__(
            image_size=image_size,
            patch_size=patch_size,
            num_layers=depth,
            num_heads=heads,
            hidden_dim=width,
            mlp_dim=mlp_ratio * width,
            num_classes=num_classes,
        )
        self.conv_proj = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)
        fan_in = in_channels * patch_size * patch_size
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)

    def no_weight_decay(self) -> set[str]:
        """Parameter names kept out of weight decay besides 1-D ones (timm's convention)."""
        return {"class_token", "encoder.pos_embedding"}
