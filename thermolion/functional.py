"""ThermoLion's update as functions: one signature, three code paths (the class lives in optimizer.py).

* :func:`_single_tensor_thermolion` transcribes the update rule literally, one tensor at a
  time. It is the reference (the test oracle).
* :func:`_multi_tensor_thermolion` computes the same update with ``torch._foreach_*`` kernels
  over every tensor of a (device, dtype) bucket at once. It is the default for small buckets.
* :func:`_fused_thermolion` runs the whole elementwise update as one ``torch.compile``d kernel per
  tensor (one pass over memory instead of ~20). It is the default for buckets of at least
  ``FUSED_MIN_ELEMENTS`` elements, where its one-off compile (a few seconds, cached on disk by
  Inductor) pays for itself; if compiling fails it warns once and falls back to foreach.

All three draw the noise from the same generator in the same order, so they agree to rounding.
None synchronises with the host: the temperature is a Python float derived from the per-tensor
step count (a Python int), and the noise scale, which needs mean(v), stays a 0-dim tensor on the
device.

Noise scale (``noise_scale``): ``"grad"`` is the author's sigma = sqrt(T*mean(v) + floor), in
gradient units, so scaling the loss by k scales the noise by k while the deterministic step does
not change; ``"unit"`` uses sigma = sqrt(T + floor), in the units of the sign step, which makes the
whole update invariant to the loss scale.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor

__all__ = ["thermolion", "FUSED_MIN_ELEMENTS", "NOISE_SCALES"]

# Auto mode fuses a (device, dtype) bucket from this many elements on (~4M, about 16 MB of fp32).
FUSED_MIN_ELEMENTS = 1 << 22
NOISE_SCALES = ("grad", "unit")
_GAS_THRESHOLD = 0.5  # an element is in the "gas" (sign-dominated) phase while lambda < 0.5


def thermolion(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[int],
    *,
    foreach: Optional[bool] = None,
    fused: Optional[bool] = None,
    **hyper,
) -> None:
    """Functional ThermoLion step; ``steps`` are the per-tensor step counts *after* incrementing.

    Keyword hyperparameters as in :class:`ThermoLion` (beta1/beta2 separately), plus
    ``generator`` and ``stats`` (a float64 accumulator of 4 sums on the device, or None).
    """
    if foreach is False:
        fn = _single_tensor_thermolion
    elif fused or (
        fused is None and sum(p.numel() for p in params) >= FUSED_MIN_ELEMENTS and _fused_kernel() is not None
    ):
        fn = _fused_thermolion
    else:
        fn = _multi_tensor_thermolion
    fn(params, grads, exp_avgs, exp_avg_sqs, steps, **hyper)


def _temperature(t0: float, temp_decay: float, step: int) -> float:
    return t0 * temp_decay**step


def _single_tensor_thermolion(
    params,
    grads,
    exp_avgs,
    exp_avg_sqs,
    steps,
    *,
    lr,
    beta1,
    beta2,
    eps,
    weight_decay,
    temp_decay,
    boost,
    scale,
    t0,
    t_min,
    noise_floor,
    bias_correction,
    noise,
    maximize,
    generator,
    stats,
    noise_scale="grad",
) -> None:
    """The update rule written out term by term: the reference for every faster path."""
    for p, g, m, v, t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        g = (-g if maximize else g).to(m.dtype)
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        m_hat, v_hat = (m / (1 - beta1**t), v / (1 - beta2**t)) if bias_correction else (m, v)

        d = v_hat.sqrt() + eps
        rho = m_hat.abs() / d
        lam = torch.tanh(rho)
        aligned = ((torch.sign(m) == torch.sign(g)) & (m != 0) & (g != 0)).to(m.dtype)
        direction = (1 - lam) * torch.sign(m) * (1 + boost * aligned) + lam * scale * m_hat / d

        temperature = _temperature(t0, temp_decay, t)
        if noise and temperature > t_min:
            sigma = (
                math.sqrt(temperature + noise_floor)
                if noise_scale == "unit"
                else torch.sqrt(temperature * v_hat.mean() + noise_floor)
            )
            xi = torch.randn(v.shape, generator=generator, device=v.device, dtype=v.dtype)
            direction = direction + (1 - lam) * sigma * xi

        if stats is not None:
            _accumulate_stats(stats, [lam], [aligned], [direction])
        target = p if p.dtype == direction.dtype else p.to(direction.dtype)  # round once, at the end
        if weight_decay != 0:
            target.mul_(1 - lr * weight_decay)
        target.sub_(lr * direction)
        if target is not p:
            p.copy_(target)


def _multi_tensor_thermolion(
    params,
    grads,
    exp_avgs,
    exp_avg_sqs,
    steps,
    *,
    lr,
    beta1,
    beta2,
    eps,
    weight_decay,
    temp_decay,
    boost,
    scale,
    t0,
    t_min,
    noise_floor,
    bias_correction,
    noise,
    maximize,
    generator,
    stats,
    noise_scale="grad",
) -> None:
    """The same update with ``torch._foreach_*`` kernels, one call per op per bucket."""
    if not params:
        return
    temperatures = [_temperature(t0, temp_decay, t) for t in steps]
    # Draw the noise in parameter order first, so that a seeded generator yields the same
    # numbers as the per-tensor path whatever the (device, dtype) bucketing below does.
    xis = [
        torch.randn(v.shape, generator=generator, device=v.device, dtype=v.dtype) if noise and temp > t_min else None
        for v, temp in zip(exp_avg_sqs, temperatures)
    ]
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, p in enumerate(params):
        buckets[(p.device, p.dtype)].append(i)

    for idx in buckets.values():
        ps = [params[i] for i in idx]
        ms = [exp_avgs[i] for i in idx]
        vs = [exp_avg_sqs[i] for i in idx]
        ts = [steps[i] for i in idx]
        gs = [grads[i] for i in idx]
        if maximize:
            gs = torch._foreach_neg(gs)
        if gs[0].dtype != ms[0].dtype:
            gs = [g.to(ms[0].dtype) for g in gs]

        torch._foreach_lerp_(ms, gs, 1 - beta1)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, gs, gs, 1 - beta2)
        if bias_correction:
            m_hat = torch._foreach_div(ms, [1 - beta1**t for t in ts])
            v_hat = torch._foreach_div(vs, [1 - beta2**t for t in ts])
        else:
            m_hat, v_hat = ms, vs

        # Few temporaries, updated in place: on the CPU every fresh param-sized buffer costs
        # page faults that outweigh the arithmetic.
        snr = torch._foreach_sqrt(v_hat)
        torch._foreach_add_(snr, eps)
        torch._foreach_reciprocal_(snr)
        torch._foreach_mul_(snr, m_hat)  # signed SNR: m/d == sign(m) * rho
        lam = torch._foreach_abs(snr)
        torch._foreach_tanh_(lam)
        sign_m = torch._foreach_sign(ms)
        aligned = torch._foreach_sign(gs)  # sign(g)*sign(m) is 1 exactly where a = 1
        torch._foreach_mul_(aligned, sign_m)
        torch._foreach_clamp_min_(aligned, 0.0)
        if stats is not None:
            _accumulate_stats(stats, lam, aligned, None)

        # direction = (1-lam) * (sign(m)*(1 + A*a) + sigma*xi) + c * lam * snr
        sign_branch = aligned  # reuse the buffer: a is not needed any more
        torch._foreach_mul_(sign_branch, boost)
        torch._foreach_add_(sign_branch, 1.0)
        torch._foreach_mul_(sign_branch, sign_m)
        del sign_m
        noisy = [(j, i) for j, i in enumerate(idx) if xis[i] is not None]
        if noisy and noise_scale == "unit":
            for j, i in noisy:
                sign_branch[j].add_(xis[i], alpha=math.sqrt(temperatures[i] + noise_floor))
        elif noisy:
            noisy_v = [v_hat[j] for j, _ in noisy]
            # mean(v) = ||v||_1 / n because v >= 0; one foreach reduction, results stay on device
            sigmas = torch._foreach_norm(noisy_v, 1)
            torch._foreach_mul_(sigmas, [temperatures[i] / v.numel() for (_, i), v in zip(noisy, noisy_v)])
            torch._foreach_add_(sigmas, noise_floor)
            torch._foreach_sqrt_(sigmas)
            for (j, i), sigma in zip(noisy, sigmas):
                sign_branch[j].add_(xis[i].mul_(sigma))
        torch._foreach_addcmul_(sign_branch, lam, sign_branch, value=-1.0)  # *= (1 - lam)
        direction = sign_branch
        torch._foreach_addcmul_(direction, lam, snr, value=scale)
        del snr, lam
        if stats is not None:
            _accumulate_stats(stats, None, None, direction)

        # Low-precision params: decay and step in float32 and round once, like the reference.
        targets = ps if ps[0].dtype == ms[0].dtype else [p.to(ms[0].dtype) for p in ps]
        if weight_decay != 0:
            torch._foreach_mul_(targets, 1 - lr * weight_decay)
        torch._foreach_add_(targets, direction, alpha=-lr)
        if targets is not ps:
            torch._foreach_copy_(ps, targets)


def _accumulate_stats(stats: Tensor, lams, aligned, directions) -> None:
    """Add sums of lam, gas indicator, alignment (if given) and |u|/lr (if given) into ``stats``.

    Everything stays on the device: no host synchronisation.
    """
    if lams is not None:
        for lam, a in zip(lams, aligned):
            stats[:3] += torch.stack(
                [
                    lam.sum(dtype=torch.float64),
                    (lam < _GAS_THRESHOLD).sum().to(torch.float64),
                    a.sum(dtype=torch.float64),
                ]
            )
    if directions is not None:
        for u in directions:
            stats[3] += u.abs().sum(dtype=torch.float64)


# --------------------------------------------------------------------------- fused path
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


def _fused_kernel() -> Optional[Callable]:
    """The compiled update (built once per process), or None where torch.compile is unavailable."""
    if "kernel" not in _COMPILED:
        try:
            # dynamic=True: one graph serves every tensor size and every lr/temperature value.
            _COMPILED["kernel"] = torch.compile(_fused_update, dynamic=True)
        except Exception as err:  # noqa: BLE001 - any failure means "no fused path here"
            warnings.warn(f"ThermoLion: torch.compile unavailable ({err}); using the foreach path", stacklevel=3)
            _COMPILED["kernel"] = None
    return _COMPILED["kernel"]


def _fused_thermolion(
    params,
    grads,
    exp_avgs,
    exp_avg_sqs,
    steps,
    *,
    lr,
    beta1,
    beta2,
    eps,
    weight_decay,
    temp_decay,
    boost,
    scale,
    t0,
    t_min,
    noise_floor,
    bias_correction,
    noise,
    maximize,
    generator,
    stats,
    noise_scale="grad",
) -> None:
    """The update as one compiled kernel per tensor; noise is drawn eagerly, in parameter order."""
    hyper = dict(
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        temp_decay=temp_decay,
        boost=boost,
        scale=scale,
        t0=t0,
        t_min=t_min,
        noise_floor=noise_floor,
        bias_correction=bias_correction,
        noise=noise,
        maximize=maximize,
        generator=generator,
        stats=stats,
        noise_scale=noise_scale,
    )
    kernel = _fused_kernel()
    if kernel is None or not all(t.is_contiguous() for t in params):
        return _multi_tensor_thermolion(params, grads, exp_avgs, exp_avg_sqs, steps, **hyper)
    for i, (p, g, m, v, t) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs, steps)):
        temperature = _temperature(t0, temp_decay, t)
        bc1, bc2 = (1 - beta1**t, 1 - beta2**t) if bias_correction else (1.0, 1.0)
        generator_state = generator.get_state() if generator is not None and i == 0 else None
        xi = (
            torch.randn(v.numel(), generator=generator, device=v.device, dtype=v.dtype)
            if noise and temperature > t_min
            else None
        )
        variant = (p.dtype, p.device.type, xi is None, maximize, stats is not None, noise_scale)
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
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
                boost,
                scale,
                bc1,
                bc2,
                temperature,
                noise_floor,
                maximize,
                stats is not None,
                noise_scale == "unit",
            )
        except Exception as err:  # noqa: BLE001 - e.g. no working C++ compiler for Inductor
            if backup is None:  # some tensors were already updated: no silent half-step
                raise RuntimeError(f"ThermoLion's fused path failed midway: {err}; use fused=False") from err
            warnings.warn(f"ThermoLion: the fused path failed to compile ({err}); using foreach", stacklevel=3)
            _COMPILED["kernel"] = None
            for live, saved in zip((p, m, v), backup):
                live.copy_(saved)
            if generator_state is not None:
                generator.set_state(generator_state)  # redraw the same noise on the foreach path
            return _multi_tensor_thermolion(params, grads, exp_avgs, exp_avg_sqs, steps, **hyper)
        _VERIFIED.add(variant)
        if sums is not None:
            stats += sums
