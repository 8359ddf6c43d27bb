"""The paper's ConvNet (SPEC section 4), with PyTorch's default initialisation."""

from torch import nn


class ConvNet(nn.Sequential):
    """Conv(C->32,3x3,p1)-ReLU-MaxPool2 -> Conv(32->64,3x3,p1)-ReLU-MaxPool2 -> FC(64*(S/4)^2->256)-ReLU -> FC(256->K).

    With 32x32 inputs the first linear layer is the paper's 4096 -> 256.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int = 32):
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4 (two 2x2 poolings), got {image_size}")
        side = image_size // 4
        super().__init__(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * side * side, 256), nn.ReLU(),
            nn.Linear(256, num_classes),
        )
