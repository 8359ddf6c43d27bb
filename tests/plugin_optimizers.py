"""Plug-in optimizer classes for the plug-in checks (importable as ``tests.plugin_optimizers.X``)."""

import torch


class NoScalars(torch.optim.SGD):
    """Rejects single-element parameters (as shape-restricted methods do), accepts any real layer."""

    def __init__(self, params, lr: float, **kwargs):
        params = list(params)
        tensors = [t for g in params for t in (g["params"] if isinstance(g, dict) else [g])]
        if any(t.numel() < 2 for t in tensors):
            raise ValueError("NoScalars needs tensors of two or more elements")
        super().__init__(params, lr=lr, **kwargs)
