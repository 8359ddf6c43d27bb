"""ThermoLion's update as functions: one signature, three code paths (the class lives in optimizer.py;
the compiled path in fused.py).

* :func:`_single_tensor_thermolion` transcribes the update rule literally, one tensor at a
  time. It is the reference (the test oracle).
* :func:`_multi_tensor_thermolion` computes the same update with ``torch._foreach_*`` kernels
  over every tensor of a (device, dtype) bucket at once. It is the default for small buckets.
* :func:`thermolion.fused.fused_thermolion` traces the whole update of a (device, dtype) bucket with
  ``torch.compile`` (one compiled call per step, one pass over memory per tensor instead of ~20). It
  is the default for buckets of at least ``FUSED_MIN_ELEMENTS`` elements, where its one-off compile
  (8 to 27 s cold on a 2-core CPU, cached on disk by Inductor) pays for itself; if compiling a
  bucket layout fails it warns once and that step, and that layout from then on, run on foreach.

All three have the same noise (the counter-based stream's, from the same compiled generator or, fused,
the same expression in the kernel; or the ``"torch"`` stream's, drawn from the same generator in the same
order), so they agree to rounding.
None synchronises with the host: the temperature is a Python float derived from the per-tensor
step count (a Python int), or with ``capturable`` a device tensor, and the noise scale, which needs
mean(v), stays a 0-dim tensor on the device. The phase diagnostics (``stats``: 5 float64 sums on the
device) use float32 sums per tensor and one foreach norm for |u| (see ``_cheap_sums``); the reference
path keeps float64 sums and is their oracle.

Noise scale (``noise_scale``): ``"grad"`` is the author's sigma = sqrt(T*mean(v) + floor), in
gradient units, so scaling the loss by k scales the noise by k while the deterministic step does
not change; ``"unit"`` uses sigma = sqrt(T + floor), in the units of the sign step, which makes the
whole update invariant to the loss scale.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Optional, Union

import torch
from torch import Tensor

from .philox import noise_of
from .shared import GAS_THRESHOLD, accumulate, fixed_order_mean, means, plain, temperature

# What torch's _foreach_* ops take and return: lists of tensors, or of numbers (Python floats, or
# 0-dim tensors under capturable) where a per-tensor scalar is meant.
Tensors = Union[list[Tensor], tuple[Tensor, ...]]
Numbers = Union[list[Any], tuple[Any, ...]]

__all__ = ["thermolion", "FUSED_MIN_ELEMENTS", "NOISE_SCALES", "NOISE_RNGS"]

# Auto mode fuses a (device, dtype) bucket from this many elements on (~4M, about 16 MB of fp32).
FUSED_MIN_ELEMENTS = 1 << 22
NOISE_SCALES = ("grad", "unit")
NOISE_RNGS = ("philox", "torch")  # counter-based (thermolion.philox), or drawn from a torch.Generator


def thermolion(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: Numbers,
    *,
    foreach: Optional[bool] = None,
    fused: Optional[bool] = None,
    **hyper: Any,
) -> None:
    """Functional ThermoLion step; ``steps`` are the per-tensor step counts *after* incrementing
    (Python ints, or 0-dim device tensors for capturable).

    Keyword hyperparameters as in :class:`ThermoLion` (beta1/beta2 separately), plus ``generator``
    and ``stats`` (a float64 accumulator on the device of the sums of lam, the gas indicator, a, |u|/lr
    and T weighted by elements, or None).
    """
    if foreach is False:
        return _single_tensor_thermolion(params, grads, exp_avgs, exp_avg_sqs, steps, **hyper)
    if fused or (fused is None and sum(p.numel() for p in params) >= FUSED_MIN_ELEMENTS):
        from . import fused as compiled  # imported only where a bucket is large enough to fuse

        if compiled.fused_thermolion(params, grads, exp_avgs, exp_avg_sqs, steps, **hyper):
            return
    _multi_tensor_thermolion(params, grads, exp_avgs, exp_avg_sqs, steps, **hyper)


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
    noise_seed=None,
    noise_ids=None,
) -> None:
    """The update rule written out term by term: the reference for every faster path."""
    ids = noise_ids if noise_ids is not None else range(len(params))
    for p, g, m, v, t, k in zip(params, grads, exp_avgs, exp_avg_sqs, steps, ids):
        t = int(t)  # a capturable step tensor: the reference may read it back
        g = (-g if maximize else g).to(m.dtype)
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        m_hat, v_hat = (m / (1 - beta1**t), v / (1 - beta2**t)) if bias_correction else (m, v)

        d = v_hat.sqrt() + eps
        rho = m_hat.abs() / d
        lam = torch.tanh(rho)
        aligned = ((torch.sign(m) == torch.sign(g)) & (m != 0) & (g != 0)).to(m.dtype)
        direction = (1 - lam) * torch.sign(m) * (1 + boost * aligned) + lam * scale * m_hat / d

        temp = temperature(t0, temp_decay, t)
        if noise and temp > t_min:
            sigma = (
                math.sqrt(temp + noise_floor)
                if noise_scale == "unit"
                else torch.sqrt(temp * fixed_order_mean(v_hat) + noise_floor)  # the whole tensor's, DTensor too
            )
            xi = noise_of(v, generator, noise_seed, t, k)
            direction = direction + (1 - lam) * sigma * xi

        if stats is not None:
            sums = [
                lam.sum(dtype=torch.float64),
                (lam < GAS_THRESHOLD).sum().to(torch.float64),
                aligned.sum(dtype=torch.float64),
                direction.abs().sum(dtype=torch.float64),
            ]
            whole = torch.full((), temp * p.numel(), dtype=torch.float64, device=stats.device)
            accumulate(stats, torch.stack([*map(plain, sums), whole]))
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
    noise_seed=None,
    noise_ids=None,
) -> None:
    """The same update with ``torch._foreach_*`` kernels, one call per op per bucket. ``steps`` are
    Python ints, or with ``capturable`` 0-dim tensors on the device (no value is read back then);
    ``lr`` a Python number or a 1-element tensor (read on the device)."""
    if not params:
        return
    capturable = isinstance(steps[0], Tensor)
    if capturable:  # in float64, as the Python numbers of the default path (bias corrections, temperatures)
        steps = [t.to(torch.float64) for t in steps]
    temperatures = _temperatures(steps, t0, temp_decay, capturable)
    # Draw the noise in parameter order first, so that a seeded generator yields the same
    # numbers as the per-tensor path whatever the (device, dtype) bucketing below does.
    # capturable: always draw; a torch.where on T > t_min zeroes it once the noise is over.
    ids = noise_ids if noise_ids is not None else range(len(params))
    xis = [
        noise_of(v, generator, noise_seed, t, k) if noise and (capturable or temp > t_min) else None
        for v, temp, t, k in zip(exp_avg_sqs, temperatures, steps, ids)
    ]
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, p in enumerate(params):
        buckets[(p.device, p.dtype)].append(i)

    for idx in buckets.values():
        ps, ms, vs = [params[i] for i in idx], [exp_avgs[i] for i in idx], [exp_avg_sqs[i] for i in idx]
        temps = [temperatures[i] for i in idx]
        gs = _signed_grads([grads[i] for i in idx], maximize, ms[0].dtype)
        torch._foreach_lerp_(ms, gs, 1 - beta1)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, gs, gs, 1 - beta2)
        ts = [steps[i] for i in idx]
        m_hat = torch._foreach_div(ms, _bias_corrections(beta1, ts)) if bias_correction else ms
        v_hat = torch._foreach_div(vs, _bias_corrections(beta2, ts)) if bias_correction else vs
        rho, lam = _snr_and_gate(m_hat, v_hat, eps)
        sign_m = torch._foreach_sign(ms)
        aligned = _alignment(sign_m, gs)
        sums = _cheap_sums(lam, aligned) if stats is not None else None
        direction = _deterministic_direction(aligned, sign_m, lam, rho, boost, scale)  # built in aligned's buffers
        del rho, sign_m
        noisy = [j for j, i in enumerate(idx) if xis[i] is not None]
        if noisy:
            _add_noise(
                direction, lam, [xis[idx[j]] for j in noisy], noisy, v_hat, temps, t_min, noise_floor, noise_scale
            )
        del lam
        if stats is not None and sums is not None:
            _accumulate_stats(stats, sums, direction, temps, ps, capturable)
        _apply_update(ps, ms[0].dtype, direction, lr, weight_decay)


def _temperatures(steps: Numbers, t0: float, temp_decay: float, capturable: bool) -> Numbers:
    """T per tensor: Python floats, or with capturable float64 0-dim tensors on the device."""
    if not capturable:
        return [temperature(t0, temp_decay, t) for t in steps]
    out = torch._foreach_pow(temp_decay, steps)
    torch._foreach_mul_(out, t0)
    return out


def _signed_grads(gs: Tensors, maximize: bool, dtype: torch.dtype) -> Tensors:
    """The gradients to descend along, in the moments' dtype."""
    if maximize:
        gs = torch._foreach_neg(gs)
    return gs if gs[0].dtype == dtype else [g.to(dtype) for g in gs]


def _snr_and_gate(m_hat: Tensors, v_hat: Tensors, eps: float) -> tuple[Tensors, Tensors]:
    """rho = |m| / (sqrt(v) + eps) and lam = tanh(rho). Few temporaries, updated in place: on the CPU
    every fresh param-sized buffer costs page faults that outweigh the arithmetic."""
    d = torch._foreach_sqrt(v_hat)
    torch._foreach_add_(d, eps)
    rho = torch._foreach_abs(m_hat)
    torch._foreach_div_(rho, d)
    return rho, torch._foreach_tanh(rho)


def _alignment(sign_m: Tensors, gs: Tensors) -> Tensors:
    """a = 1 where sign(m) == sign(g) != 0, else 0: sign(g)*sign(m) clamped at 0."""
    aligned = torch._foreach_sign(gs)
    torch._foreach_mul_(aligned, sign_m)
    torch._foreach_clamp_min_(aligned, 0.0)
    return aligned


def _deterministic_direction(
    aligned: Tensors, sign_m: Tensors, lam: Tensors, rho: Tensors, boost: float, scale: float
) -> Tensors:
    """sign(m) * F with F = (1-lam)(1 + A*a) + c*lam*rho, since m/d == sign(m)*rho (SPEC section 2).
    Computed in place in ``aligned``'s buffers (one param-sized buffer fewer), which it returns."""
    f = aligned
    torch._foreach_mul_(f, boost)
    torch._foreach_add_(f, 1.0)
    torch._foreach_addcmul_(f, lam, f, value=-1.0)  # (1-lam)(1 + A*a)
    torch._foreach_addcmul_(f, lam, rho, value=scale)  # + c*lam*rho
    torch._foreach_mul_(f, sign_m)
    return f


def _accumulate_stats(
    stats: Tensor, sums: list[Tensor], direction: Tensors, temps: Numbers, ps: Tensors, capturable: bool
) -> None:
    # sum |u|: one foreach reduction instead of an abs pass and a sum (serial float32: ~1e-5 relative)
    sums.append(torch.stack([plain(x) for x in torch._foreach_norm(direction, 1)]).sum(dtype=torch.float64))
    if capturable:
        weighted = torch.stack([t * p.numel() for t, p in zip(temps, ps)]).sum(dtype=torch.float64)
    else:  # torch.full: the value is a kernel argument, no host-to-device copy (no CUDA sync)
        total = sum(t * p.numel() for t, p in zip(temps, ps))
        weighted = torch.full((), total, dtype=torch.float64, device=stats.device)
    accumulate(stats, torch.stack([*sums, weighted]))


def _apply_update(
    ps: Tensors, dtype: torch.dtype, direction: Tensors, lr: Union[float, Tensor], weight_decay: float
) -> None:
    """theta <- theta*(1 - lr*wd) - lr*direction; low-precision params step in float32 and round once,
    like the reference. A tensor lr is read on the device (a scheduler's new value needs no recapture)."""
    targets = ps if ps[0].dtype == dtype else [p.to(dtype) for p in ps]
    if isinstance(lr, Tensor):
        lr = lr.to(device=direction[0].device, dtype=dtype)
        if weight_decay != 0:
            torch._foreach_mul_(targets, 1 - lr * weight_decay)
        torch._foreach_mul_(direction, lr)
        torch._foreach_sub_(targets, direction)
    else:
        if weight_decay != 0:
            torch._foreach_mul_(targets, 1 - lr * weight_decay)
        torch._foreach_add_(targets, direction, alpha=-lr)
    if targets is not ps:
        torch._foreach_copy_(ps, targets)


def _bias_corrections(beta: float, steps: Numbers) -> Numbers:
    """1 - beta**t per tensor: Python floats, or 0-dim tensors for capturable steps."""
    if isinstance(steps[0], Tensor):
        out = torch._foreach_pow(beta, list(steps))
        torch._foreach_neg_(out)
        torch._foreach_add_(out, 1.0)
        return out
    return [1 - beta**t for t in steps]


def _add_noise(direction, lam, xis, noisy, v_hat, temps, t_min, noise_floor, noise_scale) -> None:
    """direction[j] += (1-lam) * sigma * xi for the noisy tensors j; xi is consumed."""
    temps = [temps[j] for j in noisy]
    variances: Numbers
    if noise_scale == "unit":
        variances = temps
    else:
        variances = torch._foreach_mul(means([v_hat[j] for j in noisy]), temps)
    sigmas: Numbers
    if isinstance(variances[0], Tensor):
        sigmas = torch._foreach_add(variances, noise_floor)
        torch._foreach_sqrt_(sigmas)
        if isinstance(temps[0], Tensor):  # capturable: the gate stays on the device
            sigmas = [torch.where(t > t_min, s, 0.0) for t, s in zip(temps, sigmas)]
    else:
        sigmas = [(var + noise_floor) ** 0.5 for var in variances]
    torch._foreach_addcmul_(xis, [lam[j] for j in noisy], xis, value=-1.0)  # (1-lam) * xi
    torch._foreach_mul_(xis, sigmas)
    torch._foreach_add_([direction[j] for j in noisy], xis)


def _cheap_sums(lam: Tensors, aligned: Tensors) -> list[Tensor]:
    """Sums of lam, of the gas indicator and of a over a bucket as float64 scalars on the device. A
    float32 ``sum()`` is one vectorised pass with cascade summation (about 1e-7 relative): ~15x faster
    than a float64 sum, and more accurate than ``_foreach_norm``, which accumulates serially."""
    return [
        torch.stack([plain(x.sum()) for x in lam]).sum(dtype=torch.float64),
        torch.stack([plain((x < GAS_THRESHOLD).sum()) for x in lam]).sum().to(torch.float64),
        torch.stack([plain(x.sum()) for x in aligned]).sum(dtype=torch.float64),
    ]
