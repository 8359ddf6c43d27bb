"""ThermoLion's update as functions: one signature, three code paths (the class lives in optimizer.py;
the compiled path in fused.py).

* :func:`_single_tensor_thermolion` transcribes the update rule literally, one tensor at a
  time. It is the reference (the test oracle).
* :func:`_multi_tensor_thermolion` computes the same update with ``torch._foreach_*`` kernels
  over every tensor of a (device, dtype) bucket at once. It is the default for small buckets.
* :func:`thermolion.fused.fused_thermolion` runs the whole elementwise update as one ``torch.compile``d
  kernel per tensor (one pass over memory instead of ~20). It is the default for buckets of at least
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
from collections import defaultdict
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
    elif fused or (fused is None and sum(p.numel() for p in params) >= FUSED_MIN_ELEMENTS):
        from . import fused as compiled  # imported only where a bucket is large enough to fuse

        fn = compiled.fused_thermolion if compiled.fused_kernel() is not None else _multi_tensor_thermolion
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
