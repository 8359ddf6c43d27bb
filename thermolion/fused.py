"""ThermoLion's compiled path: the whole elementwise update as one ``torch.compile``d kernel per tensor.

One pass over memory instead of ~20. :func:`thermolion.functional.thermolion` picks it for buckets of
at least ``FUSED_MIN_ELEMENTS`` elements, where the one-off compile (a few seconds, cached on disk by
Inductor) pays for itself; if compiling fails it warns once and the step falls back to the foreach
path, redrawing the same noise.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import SimpleNamespace
from typing import Optional

import torch
from torch import Tensor

from .functional import _GAS_THRESHOLD, _multi_tensor_thermolion, _temperature

__all__ = ["fused_thermolion", "fused_kernel"]


def _fused_update(
    p,
    g,
    m,
    v,
    xi: Optional[Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    boost: float,
    scale: float,
    bc1: float,
    bc2: float,
    temperature: float,
    noise_floor: float,
    maximize: bool,
    with_stats: bool,
    unit_noise: bool,
) -> Optional[Tensor]:
    """One tensor's whole update; compiled, it is a single pass over p, g, m and v (flat views)."""
    g = (-g if maximize else g).to(m.dtype)
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    v_hat = v / bc2
    snr = (m / bc1) / (v_hat.sqrt() + eps)
    lam = torch.tanh(snr.abs())
    sign_m = torch.sign(m)
    aligned = (sign_m * torch.sign(g)).clamp_min(0)
    sign_branch = sign_m * (1 + boost * aligned)
    if xi is not None:
        variance = temperature if unit_noise else temperature * v_hat.mean()
        sign_branch = sign_branch + (variance + noise_floor) ** 0.5 * xi
    direction = (1 - lam) * sign_branch + scale * lam * snr
    p.copy_(p.to(m.dtype) * (1 - lr * weight_decay) - lr * direction)
    if not with_stats:
        return None
    return torch.stack(
        [
            lam.sum(dtype=torch.float64),
            (lam < _GAS_THRESHOLD).sum().to(torch.float64),
            aligned.sum(dtype=torch.float64),
            direction.abs().sum(dtype=torch.float64),
        ]
    )


_COMPILED: dict[str, Optional[Callable]] = {}
_VERIFIED: set = set()  # kernel variants that have run once without failing


def fused_kernel() -> Optional[Callable]:
    """The compiled update (built once per process), or None where torch.compile is unavailable."""
    if "kernel" not in _COMPILED:
        try:
            # dynamic=True: one graph serves every tensor size and every lr/temperature value.
            _COMPILED["kernel"] = torch.compile(_fused_update, dynamic=True)
        except Exception as err:  # noqa: BLE001 - any failure means "no fused path here"
            warnings.warn(f"ThermoLion: torch.compile unavailable ({err}); using the foreach path", stacklevel=3)
            _COMPILED["kernel"] = None
    return _COMPILED["kernel"]


def fused_thermolion(params, grads, exp_avgs, exp_avg_sqs, steps, **hyper) -> None:
    """The update as one compiled kernel per tensor; noise is drawn eagerly, in parameter order.

    ``hyper``: the keyword hyperparameters of :func:`thermolion.functional.thermolion`.
    """
    h = SimpleNamespace(**hyper)
    generator, stats = h.generator, h.stats
    kernel = fused_kernel()
    if kernel is None or not all(t.is_contiguous() for t in params):
        return _multi_tensor_thermolion(params, grads, exp_avgs, exp_avg_sqs, steps, **hyper)
    for i, (p, g, m, v, t) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs, steps)):
        temperature = _temperature(h.t0, h.temp_decay, t)
        bc1, bc2 = (1 - h.beta1**t, 1 - h.beta2**t) if h.bias_correction else (1.0, 1.0)
        generator_state = generator.get_state() if generator is not None and i == 0 else None
        xi = (
            torch.randn(v.numel(), generator=generator, device=v.device, dtype=v.dtype)
            if h.noise and temperature > h.t_min
            else None
        )
        variant = (p.dtype, p.device.type, xi is None, h.maximize, stats is not None, h.noise_scale)
        # A variant's first call compiles it; if that fails, Dynamo may already have run some of
        # the in-place updates eagerly, so keep tensor 0 to restore before falling back.
        backup = (p.clone(), m.clone(), v.clone()) if i == 0 and variant not in _VERIFIED else None
        try:
            sums = kernel(
                p.view(-1),
                g.contiguous().view(-1),
                m.view(-1),
                v.view(-1),
                xi,
                h.lr,
                h.beta1,
                h.beta2,
                h.eps,
                h.weight_decay,
                h.boost,
                h.scale,
                bc1,
                bc2,
                temperature,
                h.noise_floor,
                h.maximize,
                stats is not None,
                h.noise_scale == "unit",
            )
        except Exception as err:  # noqa: BLE001 - e.g. no working C++ compiler for Inductor
            if backup is None:  # some tensors were already updated: no silent half-step
                raise RuntimeError(f"ThermoLion's fused path failed midway: {err}; use fused=False") from err
            warnings.warn(f"ThermoLion: the fused path failed to compile ({err}); using foreach", stacklevel=3)
            _COMPILED["kernel"] = None
            for live, saved in zip((p, m, v), backup):
                live.copy_(saved)
            if generator_state is not None:
                generator.set_state(generator_state)  # redraw the same h.noise on the foreach path
            return _multi_tensor_thermolion(params, grads, exp_avgs, exp_avg_sqs, steps, **hyper)
        _VERIFIED.add(variant)
        if sums is not None:
            stats += sums
