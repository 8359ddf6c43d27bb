"""Models of the benchmark."""

from .convnet import ConvNet

__all__ = ["ConvNet"]
