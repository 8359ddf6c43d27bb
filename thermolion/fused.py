"""ThermoLion's compiled path: the whole update of a (device, dtype) bucket as one ``torch.compile``d call.

The bucket's tensors are traced together (horizontal fusion), so a model of many small tensors pays
one compiled call per step rather than one per tensor, and each tensor's update is one pass over
memory instead of ~20. Tensors keep their own strides (``channels_last`` parameters included). The
noise is drawn eagerly from the optimizer's generator, tensor by tensor in parameter order, exactly
as the other paths draw it, and passed in: so the three paths agree to rounding.

The step counts and the lr enter the graph as float64 tensors on the device, and the bias
corrections, temperatures and the temperature gate (a ``torch.where`` on T > t_min) are computed
there, so a new step or a scheduled lr never recompiles. With ``capturable`` the step counts already
live on the device and the noise is drawn on every step: no step reads anything back to the host,
and the graph is the same before and after the noise turns off (step 459 with the defaults).
Without it, steps are copied to the device (a few bytes) and no noise is drawn once it is off, which
is a second graph, compiled once.

:func:`thermolion.functional.thermolion` picks this path for buckets of at least
``FUSED_MIN_ELEMENTS`` elements (or with ``fused=True``); if compiling fails it warns once and the step
falls back to the foreach path, redrawing the same noise.
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


def _fused_bucket(
    ps: list[Tensor],
    gs: list[Tensor],
    ms: list[Tensor],
    vs: list[Tensor],
    xis: list[Optional[Tensor]],
    steps: Tensor,
    lr: Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    boost: float,
    scale: float,
    t0: float,
    temp_decay: float,
    t_min: float,
    noise_floor: float,
    bias_correction: bool,
    maximize: bool,
    with_stats: bool,
    unit_noise: bool,
) -> Optional[Tensor]:
    """Every tensor's whole update; compiled, one pass over p, g, m and v each. ``steps`` (one per
    tensor) and ``lr`` are float64 tensors on the device, so that neither a new step nor a scheduled lr
    recompiles. Returns the bucket's 5 diagnostic sums (lam, gas, aligned, |u|, T*numel), or None."""
    sums = []
    for i, (p, g, m, v, xi) in enumerate(zip(ps, gs, ms, vs, xis)):
        t, lr_t = steps[i], lr.to(m.dtype)  # float32 scalars for float32 state: no float64 arithmetic per element
        g = (-g if maximize else g).to(m.dtype)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bc1, bc2 = ((1 - beta1**t).to(m.dtype), (1 - beta2**t).to(m.dtype)) if bias_correction else (1.0, 1.0)
        v_hat = v / bc2
        rho = (m / bc1).abs() / (v_hat.sqrt() + eps)
        lam = torch.tanh(rho)
        sign_m = torch.sign(m)
        aligned = (sign_m * torch.sign(g)).clamp_min(0)
        # m/d == sign(m)*rho: the deterministic step is sign(m) * F(rho, a) (SPEC section 2)
        direction = sign_m * ((1 - lam) * (1 + boost * aligned) + scale * lam * rho)
        temperature64 = t0 * temp_decay**t
        temperature = temperature64.to(m.dtype)
        if xi is not None:
            variance = temperature if unit_noise else temperature * v_hat.mean()
            sigma = torch.where(temperature > t_min, (variance + noise_floor) ** 0.5, 0.0)  # on the device
            direction = direction + (1 - lam) * sigma * xi
        p.copy_(p.to(m.dtype) * (1 - lr_t * weight_decay) - lr_t * direction)
        if with_stats:
            sums.append(
                torch.stack(
                    [
                        lam.sum(dtype=torch.float64),
                        (lam < _GAS_THRESHOLD).sum().to(torch.float64),
                        aligned.sum(dtype=torch.float64),
                        direction.abs().sum(dtype=torch.float64),
                        temperature64 * p.numel(),
                    ]
                )
            )
    return torch.stack(sums).sum(0) if with_stats else None


RECOMPILE_LIMIT = 64  # graphs of the bucket function per process (layouts x variants)
_COMPILED: dict[str, Optional[Callable]] = {}
_VERIFIED: set = set()  # bucket variants that have run once without failing


def fused_kernel() -> Optional[Callable]:
    """The compiled bucket update (built once per process), or None where torch.compile is unavailable."""
    if "kernel" not in _COMPILED:
        try:
            # fullgraph: any graph break would be a silent slow path. Shapes are static (one graph per
            # model layout); floats stay symbolic, so changing lr or temperature does not recompile.
            _COMPILED["kernel"] = torch.compile(_fused_bucket, fullgraph=True)
        except Exception as err:  # noqa: BLE001 - any failure means "no fused path here"
            warnings.warn(f"ThermoLion: torch.compile unavailable ({err}); using the foreach path", stacklevel=3)
            _COMPILED["kernel"] = None
    return _COMPILED["kernel"]


def _scalars(steps: list, device: torch.device) -> Tensor:
    """The bucket's step counts as one float64 tensor on the device, with no host-to-device copy (a
    copy from pageable memory would synchronise a CUDA step): stacked capturable (0-dim) step tensors,
    else ``torch.full``, whose value travels as a kernel argument."""
    if isinstance(steps[0], Tensor):
        return torch.stack(steps).to(torch.float64)
    if all(t == steps[0] for t in steps):  # the usual case: one fill
        return torch.full((len(steps),), float(steps[0]), dtype=torch.float64, device=device)
    return torch.stack([torch.full((), float(t), dtype=torch.float64, device=device) for t in steps])


def fused_thermolion(params, grads, exp_avgs, exp_avg_sqs, steps, **hyper) -> None:
    """The update as one compiled call per (device, dtype) bucket; noise drawn eagerly, in parameter order.

    ``hyper``: the keyword hyperparameters of :func:`thermolion.functional.thermolion`. ``steps`` are
    Python ints, or 0-dim tensors on the device with ``capturable``.
    """
    h = SimpleNamespace(**hyper)
    generator, stats = h.generator, h.stats
    kernel = fused_kernel()
    if kernel is None:
        return _multi_tensor_thermolion(params, grads, exp_avgs, exp_avg_sqs, steps, **hyper)
    capturable = bool(steps) and isinstance(steps[0], Tensor)
    generator_state = generator.get_state() if generator is not None and h.noise else None
    # capturable: always draw, and let the gate inside the graph zero the noise once T <= t_min
    xis = [
        torch.randn(v.shape, generator=generator, device=v.device, dtype=v.dtype)
        if h.noise and (capturable or _temperature(h.t0, h.temp_decay, t) > h.t_min)
        else None
        for v, t in zip(exp_avg_sqs, steps)
    ]
    buckets: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        buckets.setdefault((p.device, p.dtype), []).append(i)
    for n, idx in enumerate(buckets.values()):
        f64 = dict(dtype=torch.float64, device=params[idx[0]].device)

        def pick(xs, idx=idx):  # one bucket's slice of a per-tensor list
            return [xs[i] for i in idx]

        ps, ms, vs = pick(params), pick(exp_avgs), pick(exp_avg_sqs)
        variant = (ps[0].dtype, ps[0].device.type, tuple(x is None for x in pick(xis)), h.maximize, stats is not None)
        # A variant's first call compiles it; if that fails, Dynamo may already have run some of the
        # in-place updates eagerly, so keep the first bucket to restore before falling back.
        backup = [[t.clone() for t in ts] for ts in (ps, ms, vs)] if n == 0 and variant not in _VERIFIED else None
        try:
            # Every model layout and variant is a graph of this one function: a process with several
            # models (an in-process sweep, a benchmark) needs more than Dynamo's default 8.
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                sums = kernel(
                    ps,
                    pick(grads),
                    ms,
                    vs,
                    pick(xis),
                    _scalars(pick(steps), ps[0].device),
                    h.lr.to(ps[0].device, torch.float64) if torch.is_tensor(h.lr) else torch.full((), h.lr, **f64),
                    h.beta1,
                    h.beta2,
                    h.eps,
                    h.weight_decay,
                    h.boost,
                    h.scale,
                    h.t0,
                    h.temp_decay,
                    h.t_min,
                    h.noise_floor,
                    h.bias_correction,
                    h.maximize,
                    stats is not None,
                    h.noise_scale == "unit",
                )
        except Exception as err:  # noqa: BLE001 - e.g. no working C++ compiler for Inductor
            if backup is None:  # some tensors were already updated: no silent half-step
                raise RuntimeError(f"ThermoLion's fused path failed midway: {err}; use fused=False") from err
            warnings.warn(f"ThermoLion: the fused path failed to compile ({err}); using foreach", stacklevel=3)
            _COMPILED["kernel"] = None
            for live, saved in zip((ps, ms, vs), backup):
                torch._foreach_copy_(live, saved)
            if generator_state is not None:
                generator.set_state(generator_state)  # redraw the same noise on the foreach path
            return _multi_tensor_thermolion(params, grads, exp_avgs, exp_avg_sqs, steps, **hyper)
        _VERIFIED.add(variant)
        if sums is not None:
            stats += sums
