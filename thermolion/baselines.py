"""The paper's baselines that torch.optim does not provide, with the semantics of the benchmark
notebook the paper's author published with the optimizer ("the notebook" below).

Adam, AdamW, RMSprop and SGD (+ ``torch.optim.swa_utils`` for SWA) come from torch.optim; what
is here is what no maintained library matches exactly: Lion (written here so that it has a
multi-tensor path and the textbook weight-decay order), MuAdam, the notebook's simplified SWATS
and the Lookahead wrapper (with the notebook's snapshot quirk available as an option).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Optional

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import ParamsT

__all__ = ["Lion", "MuAdam", "SWATS", "Lookahead"]


def _check_common(lr: float, betas: Any, eps: Optional[float], weight_decay: float) -> None:
    if not (math.isfinite(lr) and lr >= 0.0):
        raise ValueError(f"lr must be a finite number >= 0, got {lr}")
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"betas[{i}] must be in [0, 1), got {beta}")
    if eps is not None and not eps > 0.0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0.0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay}")


def refuse_complex(optimizer: Optimizer) -> None:
    """A one-line ValueError for complex parameters: sign(), the SNR and the noise are defined for real
    numbers here, and a silent cast would drop the imaginary part."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.is_complex():
                raise ValueError(
                    f"{type(optimizer).__name__} does not support complex parameters (got {p.dtype}, shape "
                    f"{tuple(p.shape)}); keep the parameter real (torch.view_as_real) and view it as complex "
                    "in the forward pass"
                )


def evaluate_closure(closure: Optional[Callable[[], Any]]) -> Any:
    """torch.optim's convention: re-evaluate the model (with gradients) when a closure is given."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _params_with_grad(group: dict[str, Any], name: str) -> list[Tensor]:
    params = [p for p in group["params"] if p.grad is not None]
    for p in params:
        if p.grad.is_sparse:
            raise RuntimeError(f"{name} does not support sparse gradients")
    return params


def _grad(p: Tensor) -> Tensor:
    assert p.grad is not None  # _params_with_grad kept only these
    return p.grad


class Lion(Optimizer):
    r"""Lion (Chen et al., 2023), multi-tensor.

    ::

        c     = sign(b1*m + (1-b1)*g)
        theta = theta*(1 - lr*wd) - lr*c          (decoupled decay on the pre-update weights)
        m     = b2*m + (1-b2)*g

    The notebook applies the decay after the sign step, ``(theta - lr*c)*(1 - lr*wd)``; the two
    differ by ``lr^2*wd``, and the paper runs Lion with wd = 0, where they coincide.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        maximize: bool = False,
    ) -> None:
        _check_common(lr, betas, None, weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, maximize=maximize))
        refuse_complex(self)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            params = _params_with_grad(group, "Lion")
            if not params:
                continue
            beta1, beta2 = group["betas"]
            grads = [_grad(p) for p in params]
            if group["maximize"]:
                grads = list(torch._foreach_neg(grads))
            exp_avgs = []
            for p in params:
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                exp_avgs.append(state["exp_avg"])
            update = torch._foreach_lerp(exp_avgs, grads, 1 - beta1)
            torch._foreach_sign_(update)
            if group["weight_decay"] != 0:
                torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
            torch._foreach_add_(params, update, alpha=-group["lr"])
            torch._foreach_lerp_(exp_avgs, grads, 1 - beta2)
        return loss


class MuAdam(Optimizer):
    r"""The notebook's MuAdam: Adam moments without bias correction, Nesterov-style step.

    ::

        theta = theta*(1 - lr*wd)
        m = b1*m + (1-b1)*g ;  v = b2*v + (1-b2)*g^2
        theta = theta - lr * (b1*m + (1-b1)*g) / (sqrt(v) + eps)
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        _check_common(lr, betas, eps, weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in _params_with_grad(group, "MuAdam"):
                g, state = _grad(p), self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                if group["weight_decay"] != 0:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                nesterov = torch.lerp(m, g, 1 - beta1)
                p.addcdiv_(nesterov, v.sqrt().add_(group["eps"]), value=-group["lr"])
        return loss


class SWATS(Optimizer):
    r"""The notebook's simplified SWATS: Adam for a parameter's first ``switch_step`` steps, then SGD.

    Adam phase: bias-corrected step size ``lr*sqrt(1-b2^t)/(1-b1^t)`` on ``m/(sqrt(v)+eps)``.
    SGD phase (step > switch_step): ``theta -= lr*g``. Weight decay, if any, is applied after the
    step as ``theta *= 1 - lr*wd``. (The original SWATS of Keskar & Socher estimates the SGD rate
    from the Adam steps; the notebook switches at a fixed step with the same lr, reproduced here.
    With the paper's 60 steps the switch is never reached.)
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        switch_step: int = 300,
    ) -> None:
        _check_common(lr, betas, eps, weight_decay)
        if not (isinstance(switch_step, int) and switch_step >= 0):
            raise ValueError(f"switch_step must be an int >= 0, got {switch_step!r}")
        super().__init__(
            params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, switch_step=switch_step)
        )

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr = group["lr"]
            for p in _params_with_grad(group, "SWATS"):
                g, state = _grad(p), self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                if t > group["switch_step"]:
                    p.add_(g, alpha=-lr)
                else:
                    m, v = state["exp_avg"], state["exp_avg_sq"]
                    m.lerp_(g, 1 - beta1)
                    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    step_size = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                    p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-step_size)
                if group["weight_decay"] != 0:
                    p.mul_(1 - lr * group["weight_decay"])
        return loss


class Lookahead(Optimizer):
    r"""Lookahead (Zhang et al., 2019) around any inner optimizer.

    Every ``k`` inner steps: ``slow += alpha*(fast - slow)``, then ``fast = slow``.

    ``late_snapshot=False`` (textbook): the slow weights are the weights at the last
    synchronisation. ``late_snapshot=True`` reproduces the benchmark notebook, which takes the
    slow copy *after* the first inner step of each cycle, so every interpolation is between the
    weights after steps 1 and k of the cycle.

    ``param_groups``, ``defaults`` and ``state`` are the inner optimizer's, read through on every access
    (as ``torch.optim.swa_utils`` and timm's Lookahead share them), so an lr scheduler writes into the
    dicts the inner optimizer trains with, also after ``load_state_dict`` replaced them.
    """

    def __init__(self, optimizer: Optimizer, k: int = 5, alpha: float = 0.5, late_snapshot: bool = False):
        if not isinstance(optimizer, Optimizer):
            raise ValueError(f"Lookahead wraps a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not (isinstance(k, int) and k >= 1):
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        # Deliberately no super().__init__: the groups and defaults are the inner optimizer's.
        self.optimizer = optimizer
        self.k, self.alpha, self.late_snapshot = k, alpha, late_snapshot
        self._optimizer_step_pre_hooks, self._optimizer_step_post_hooks = {}, {}
        self._counter = 0
        self._slow: list[Tensor] = []
        if not late_snapshot:
            self._snapshot()

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def _snapshot(self) -> None:
        self._slow = [p.detach().clone() for p in self._params()]

    # Properties, not copies: the inner load_state_dict replaces its param_groups list, and a copy
    # kept here would leave an lr scheduler writing into dicts that nothing reads.
    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, groups: list[dict]) -> None:
        self.optimizer.param_groups = groups

    @property
    def defaults(self) -> dict:
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, defaults: dict) -> None:
        self.optimizer.defaults = defaults

    @property
    def state(self) -> Any:  # the inner optimizer's per-parameter state (what tools inspect)
        return self.optimizer.state

    @state.setter
    def state(self, state: Any) -> None:
        self.optimizer.state = state

    def add_param_group(self, param_group: dict) -> None:
        self.optimizer.add_param_group(param_group)
        if self._slow or not self.late_snapshot:  # the new parameters' slow copies start at their weights
            self._slow += [p.detach().clone() for p in self.param_groups[-1]["params"]]

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = self.optimizer.step(closure)
        if self.late_snapshot and self._counter == 0:
            self._snapshot()
        self._counter += 1
        if self._counter >= self.k:
            self._counter = 0
            params = self._params()
            torch._foreach_lerp_(self._slow, params, self.alpha)
            torch._foreach_copy_(params, self._slow)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"inner": self.optimizer.state_dict(), "counter": self._counter, "slow": [s.clone() for s in self._slow]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict["inner"])
        self._counter = state_dict["counter"]
        params = self._params()
        if state_dict["slow"] and len(state_dict["slow"]) != len(params):
            raise ValueError("Lookahead state has a different number of parameters than this model")
        self._slow = [s.to(device=p.device, dtype=p.dtype).clone() for s, p in zip(state_dict["slow"], params)]

    def __repr__(self) -> str:
        return f"Lookahead(k={self.k}, alpha={self.alpha}, late_snapshot={self.late_snapshot}, {self.optimizer!r})"
