"""The paper's ConvNet: two 3x3 conv + max-pool stages, then 256 hidden units; PyTorch's default init."""

from torch import nn


class ConvNet(nn.Sequential):
    """Conv(C->w,3x3,p1)-ReLU-MaxPool2 -> Conv(w->2w,3x3,p1)-ReLU-MaxPool2 -> FC(2w*(S/4)^2->8w)-ReLU -> FC(8w->K).

    The paper's model is width 32 (32 and 64 channels, 256 hidden units); with 32x32 inputs its
    first linear layer is 4096 -> 256.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int = 32, width: int = 32):
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4 (two 2x2 poolings), got {image_size}")
        side = image_size // 4
        super().__init__(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * side * side, 8 * width),
            nn.ReLU(),
            nn.Linear(8 * width, num_classes),
        )
