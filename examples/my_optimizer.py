"""A user's own optimizer, run by the harness without touching the package: Signum.

Signum (signSGD with momentum; Bernstein et al. 2018) is Lion's plainer ancestor:
    m <- beta*m + (1-beta)*g
    theta <- theta*(1 - lr*weight_decay) - lr*sign(m)
It has torch.optim's constructor shape, which is all the harness needs. Its config is
examples/conf/optimizer/signum.yaml; put it next to ThermoLion, AdamW and Lion with

    python run.py -m optimizer=thermolion,adamw,lion,signum hydra.searchpath=[file://examples/conf] seed=0,1
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class Signum(Optimizer):
    def __init__(self, params, lr: float = 1e-4, momentum: float = 0.9, weight_decay: float = 0.0):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                m = state["momentum_buffer"]
                m.lerp_(p.grad, 1 - group["momentum"])
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(m), alpha=-group["lr"])
        return loss
