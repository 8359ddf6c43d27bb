"""ThermoLion: SNR-gated interpolation between Lion-style sign updates and Adam-style steps.

The class owns hyperparameters, validation and lazy state; the math lives in two functional
paths with one signature, in the style of ``torch.optim.adam``:

* :func:`_single_tensor_thermolion` transcribes the update rule literally, one tensor at a
  time. It is the reference (the test oracle).
* :func:`_multi_tensor_thermolion` computes the same update with ``torch._foreach_*`` kernels
  over every tensor of a (device, dtype) bucket at once. It is the default for small buckets.
* :func:`_fused_thermolion` runs the whole elementwise update as one ``torch.compile``d kernel per
  tensor (one pass over memory instead of ~20). It is the default for buckets of at least
  ``FUSED_MIN_ELEMENTS`` elements, where its one-off compile (a few seconds, cached on disk by
  Inductor) pays for itself; if compiling fails it warns once and falls back to foreach.

All three draw the noise from the same generator in the same order, so they agree to rounding.

Neither path synchronises with the host: the temperature is a Python float derived from the
per-tensor step count (itself a Python int), and the noise scale, which needs mean(v), stays a
0-dim tensor on the device.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from typing import Callable, Iterable, Optional

import torch
from torch import Tensor
from torch.optim import Optimizer

from .baselines import evaluate_closure

__all__ = ["ThermoLion", "thermolion", "STAT_NAMES", "FUSED_MIN_ELEMENTS"]

# Auto mode fuses a (device, dtype) bucket from this many elements on (~4M, about 16 MB of fp32).
FUSED_MIN_ELEMENTS = 1 << 22

STAT_NAMES = ("gate_mean", "gas_fraction", "alignment_rate", "update_over_lr", "temperature")
_GAS_THRESHOLD = 0.5  # an element is in the "gas" (sign-dominated) phase while lambda < 0.5


class ThermoLion(Optimizer):
    r"""ThermoLion (arXiv 2512.01881), with the author's semantics by default.

    For each parameter tensor :math:`\theta` with gradient :math:`g`, and :math:`t` the number of
    steps at which this tensor had a gradient (starting at 1)::

        m  <- b1*m + (1-b1)*g                    v <- b2*v + (1-b2)*g^2
        d   = sqrt(v) + eps                      rho = |m| / d          (local SNR)
        lam = tanh(rho)                          (phase gate: 0 "gas", 1 "solid")
        a   = 1 if sign(m) == sign(g) != 0 else 0                 (momentum alignment)
        u   = lr*(1-lam)*sign(m)*(1 + boost*a) + lr*lam*scale*m/d
        T   = t0 * temp_decay**t                 (temperature, per tensor)
        if noise and T > t_min:
            sigma = sqrt(T*mean(v) + noise_floor)    (mean over the whole tensor)
            u += lr*(1-lam)*sigma*xi,  xi ~ N(0, I)
        theta <- theta*(1 - lr*weight_decay) - u

    Since ``m/d == sign(m)*rho``, the deterministic part of ``u`` always points along
    ``sign(m)``; the magnitude branch rescales each element's step to
    ``lr*((1-lam)*(1+boost*a) + scale*rho*lam)``.

    Args:
        params: iterable of parameters or param groups.
        lr: learning rate (default 1e-3).
        betas: EMA coefficients of the gradient and its square (default (0.9, 0.99)).
        eps: added to sqrt(v) (default 1e-8).
        weight_decay: decoupled weight decay, applied as ``theta *= 1 - lr*wd`` (default 0.01).
        temp_decay: per-step temperature decay ``delta`` in (0, 1] (default 0.99; with t_min 0.01
            the noise is on for steps 1..458). ``temp_decay <= t_min/t0`` turns it off from step 1.
        boost: alignment boost ``A`` on the sign branch (default 0.5; 0 removes the boost).
        scale: magnitude-branch scale ``c`` (default 2.0).
        t0: initial temperature (default 1.0).
        t_min: the noise is added while ``T > t_min`` (default 0.01).
        noise_floor: added under the square root of the noise scale (default 1e-10).
        bias_correction: divide m and v by ``1-b**t`` as Adam does (default False, as the author).
            With it on, the SNR, the magnitude branch and the noise scale use the corrected moments.
        noise: add the thermodynamic noise at all (default True).
        maximize: maximise the objective instead of minimising it.
        foreach: ``False`` selects the per-tensor reference path (slow; for testing).
        fused: ``True`` always uses the compiled one-kernel path, ``False`` never, ``None`` (default)
            uses it for buckets of at least ``FUSED_MIN_ELEMENTS`` elements and foreach below.
        generator: ``torch.Generator`` for the noise (on the parameters' device). Its state is
            saved in :meth:`state_dict`, so a resumed run draws the same noise.
        track_stats: accumulate phase diagnostics on the device at every step;
            :meth:`read_stats` returns their averages since the last read.

    State: ``m`` and ``v`` are float32 for float32, bfloat16 and float16 parameters (low-precision
    parameters keep full-precision moments; the update is computed in float32 and rounded once
    into the parameter) and float64 for float64 parameters.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        *,
        temp_decay: float = 0.99,
        boost: float = 0.5,
        scale: float = 2.0,
        t0: float = 1.0,
        t_min: float = 0.01,
        noise_floor: float = 1e-10,
        bias_correction: bool = False,
        noise: bool = True,
        maximize: bool = False,
        foreach: Optional[bool] = None,
        fused: Optional[bool] = None,
        generator: Optional[torch.Generator] = None,
        track_stats: bool = False,
    ):
        _check_finite_at_least("lr", lr, 0.0)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        for i, beta in enumerate(betas):
            if not 0.0 <= float(beta) < 1.0:
                raise ValueError(f"betas[{i}] must be in [0, 1), got {beta}")
        if not (math.isfinite(eps) and eps > 0.0):
            raise ValueError(f"eps must be > 0 (it keeps sqrt(v)+eps away from 0), got {eps}")
        _check_finite_at_least("weight_decay", weight_decay, 0.0)
        if not 0.0 < temp_decay <= 1.0:
            raise ValueError(
                f"temp_decay must be in (0, 1], got {temp_decay}; "
                "to switch the noise off use noise=False or a temp_decay <= t_min/t0"
            )
        for name, value in (("boost", boost), ("scale", scale), ("t0", t0), ("t_min", t_min),
                            ("noise_floor", noise_floor)):
            _check_finite_at_least(name, value, 0.0)
        if foreach is False and fused:
            raise ValueError("foreach=False (the per-tensor reference) and fused=True exclude each other")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator)}")

        defaults = dict(
            lr=lr, betas=(float(betas[0]), float(betas[1])), eps=eps, weight_decay=weight_decay,
            temp_decay=temp_decay, boost=boost, scale=scale, t0=t0, t_min=t_min,
            noise_floor=noise_floor, bias_correction=bias_correction, noise=noise,
            maximize=maximize, foreach=foreach, fused=fused,
        )
        super().__init__(params, defaults)
        self.generator = generator
        self.track_stats = track_stats
        self._reset_stats()

    # ---------------------------------------------------------------- state and diagnostics
    def _reset_stats(self) -> None:
        self._stats: Optional[Tensor] = None  # [sum lam, sum gas, sum aligned, sum |u|/lr] on device
        self._stat_elements = 0
        self._stat_temperature = 0.0  # element-weighted sum of T (a Python float: no sync)

    def read_stats(self) -> dict[str, float]:
        """Averages of the phase diagnostics since the last read (one host sync), then reset.

        Keys: ``gate_mean`` (mean lambda), ``gas_fraction`` (share of elements with lambda < 0.5),
        ``alignment_rate`` (share with a = 1), ``update_over_lr`` (mean |u|/lr, noise included,
        weight decay excluded), ``temperature`` (mean T). Element-weighted over all tensors
        and steps. Empty dict if nothing was tracked.
        """
        if self._stats is None or self._stat_elements == 0:
            return {}
        sums = self._stats.tolist()
        n = self._stat_elements
        out = {name: value / n for name, value in zip(STAT_NAMES[:4], sums)}
        out["temperature"] = self._stat_temperature / n
        self._reset_stats()
        return out

    def __getstate__(self) -> dict:  # deepcopy/pickle keep the generator and the diagnostics
        state = super().__getstate__()
        for key in ("generator", "track_stats", "_stats", "_stat_elements", "_stat_temperature"):
            state[key] = getattr(self, key)
        return state

    def state_dict(self) -> dict:
        sd = super().state_dict()
        if self.generator is not None:
            sd["generator_state"] = self.generator.get_state()
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        generator_state = state_dict.pop("generator_state", None)
        super().load_state_dict(state_dict)
        if generator_state is not None and self.generator is not None:
            self.generator.set_state(generator_state)

    def _init_group(self, group, params, grads, exp_avgs, exp_avg_sqs, steps) -> None:
        for p in group["params"]:
            if p.grad is None:
                continue  # no gradient: no update and the temperature does not advance
            if p.grad.is_sparse:
                raise RuntimeError(
                    "ThermoLion does not support sparse gradients; use dense gradients "
                    "(e.g. nn.Embedding(sparse=False))"
                )
            state = self.state[p]
            if len(state) == 0:
                state_dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, dtype=state_dtype, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, dtype=state_dtype, memory_format=torch.preserve_format)
            state["step"] += 1
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        """Perform one optimisation step; ``closure`` re-evaluates the model and returns the loss."""
        loss = evaluate_closure(closure)

        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, steps)
            if not params:
                continue
            if self.track_stats and self._stats is None:
                self._stats = torch.zeros(4, dtype=torch.float64, device=params[0].device)
            beta1, beta2 = group["betas"]
            thermolion(
                params, grads, exp_avgs, exp_avg_sqs, steps,
                lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                weight_decay=group["weight_decay"], temp_decay=group["temp_decay"],
                boost=group["boost"], scale=group["scale"], t0=group["t0"], t_min=group["t_min"],
                noise_floor=group["noise_floor"], bias_correction=group["bias_correction"],
                noise=group["noise"], maximize=group["maximize"], generator=self.generator,
                stats=self._stats if self.track_stats else None, foreach=group["foreach"],
                fused=group["fused"],
            )
            if self.track_stats:
                for p, t in zip(params, steps):
                    self._stat_elements += p.numel()
                    self._stat_temperature += p.numel() * group["t0"] * group["temp_decay"] ** t
        return loss


def _check_finite_at_least(name: str, value, low: float) -> None:
    if isinstance(value, Tensor) or not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{name} must be a Python number, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= low):
        raise ValueError(f"{name} must be a finite number >= {low}, got {value}")


# -------------------------------------------------------------------------- functional API
def thermolion(
    params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
    steps: list[int], *, foreach: Optional[bool] = None, fused: Optional[bool] = None, **hyper,
) -> None:
    """Functional ThermoLion step; ``steps`` are the per-tensor step counts *after* incrementing.

    Keyword hyperparameters as in :class:`ThermoLion` (beta1/beta2 separately), plus
    ``generator`` and ``stats`` (a float64 accumulator of 4 sums on the device, or None).
    """
    if foreach is False:
        fn = _single_tensor_thermolion
    elif fused or (fused is None and sum(p.numel() for p in params) >= FUSED_MIN_ELEMENTS
                   and _fused_kernel() is not None):
        fn = _fused_thermolion
    else:
        fn = _multi_tensor_thermolion
    fn(params, grads, exp_avgs, exp_avg_sqs, steps, **hyper)


def _temperature(t0: float, temp_decay: float, step: int) -> float:
    return t0 * temp_decay**step


def _single_tensor_thermolion(
    params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay,
    temp_decay, boost, scale, t0, t_min, noise_floor, bias_correction, noise, maximize,
    generator, stats,
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
            sigma = torch.sqrt(temperature * v_hat.mean() + noise_floor)
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
    params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay,
    temp_decay, boost, scale, t0, t_min, noise_floor, bias_correction, noise, maximize,
    generator, stats,
) -> None:
    """The same update with ``torch._foreach_*`` kernels, one call per op per bucket."""
    if not params:
        return
    temperatures = [_temperature(t0, temp_decay, t) for t in steps]
    # Draw the noise in parameter order first, so that a seeded generator yields the same
    # numbers as the per-tensor path whatever the (device, dtype) bucketing below does.
    xis = [
        torch.randn(v.shape, generator=generator, device=v.device, dtype=v.dtype)
        if noise and temp > t_min else None
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
        if noisy:
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
            stats[:3] += torch.stack([lam.sum(dtype=torch.float64),
                                      (lam < _GAS_THRESHOLD).sum().to(torch.float64),
                                      a.sum(dtype=torch.float64)])
    if directions is not None:
        for u in directions:
            stats[3] += u.abs().sum(dtype=torch.float64)


# --------------------------------------------------------------------------- fused path
def _fused_update(p, g, m, v, xi: Optional[Tensor], lr: float, beta1: float, beta2: float,
                  eps: float, weight_decay: float, boost: float, scale: float, bc1: float,
                  bc2: float, temperature: float, noise_floor: float, maximize: bool,
                  with_stats: bool) -> Optional[Tensor]:
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
        sign_branch = sign_branch + torch.sqrt(temperature * v_hat.mean() + noise_floor) * xi
    direction = (1 - lam) * sign_branch + scale * lam * snr
    p.copy_(p.to(m.dtype) * (1 - lr * weight_decay) - lr * direction)
    if not with_stats:
        return None
    return torch.stack([lam.sum(dtype=torch.float64), (lam < _GAS_THRESHOLD).sum().to(torch.float64),
                        aligned.sum(dtype=torch.float64), direction.abs().sum(dtype=torch.float64)])


_COMPILED: dict[str, Optional[Callable]] = {}


def _fused_kernel() -> Optional[Callable]:
    """The compiled update (built once per process), or None where torch.compile is unavailable."""
    if "kernel" not in _COMPILED:
        try:
            # dynamic=True: one graph serves every tensor size and every lr/temperature value.
            _COMPILED["kernel"] = torch.compile(_fused_update, dynamic=True)
        except Exception as err:  # noqa: BLE001 - any failure means "no fused path here"
            warnings.warn(f"ThermoLion: torch.compile unavailable ({err}); using the foreach path")
            _COMPILED["kernel"] = None
    return _COMPILED["kernel"]


def _fused_thermolion(
    params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay,
    temp_decay, boost, scale, t0, t_min, noise_floor, bias_correction, noise, maximize,
    generator, stats,
) -> None:
    """The update as one compiled kernel per tensor; noise is drawn eagerly, in parameter order."""
    hyper = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                 temp_decay=temp_decay, boost=boost, scale=scale, t0=t0, t_min=t_min,
                 noise_floor=noise_floor, bias_correction=bias_correction, noise=noise,
                 maximize=maximize, generator=generator, stats=stats)
    kernel = _fused_kernel()
    if kernel is None or not all(t.is_contiguous() for t in params):
        return _multi_tensor_thermolion(params, grads, exp_avgs, exp_avg_sqs, steps, **hyper)
    for i, (p, g, m, v, t) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs, steps)):
        temperature = _temperature(t0, temp_decay, t)
        bc1, bc2 = (1 - beta1**t, 1 - beta2**t) if bias_correction else (1.0, 1.0)
        generator_state = generator.get_state() if generator is not None and i == 0 else None
        xi = (torch.randn(v.numel(), generator=generator, device=v.device, dtype=v.dtype)
              if noise and temperature > t_min else None)
        try:
            sums = kernel(p.view(-1), g.contiguous().view(-1), m.view(-1), v.view(-1), xi, lr,
                          beta1, beta2, eps, weight_decay, boost, scale, bc1, bc2, temperature,
                          noise_floor, maximize, stats is not None)
        except Exception as err:  # noqa: BLE001 - e.g. no working C++ compiler for Inductor
            if i > 0:  # some tensors were already updated: no silent half-step
                raise RuntimeError(f"ThermoLion's fused path failed midway: {err}; use fused=False") from err
            warnings.warn(f"ThermoLion: the fused path failed to compile ({err}); using foreach")
            _COMPILED["kernel"] = None
            if generator_state is not None:
                generator.set_state(generator_state)  # redraw the same noise on the foreach path
            return _multi_tensor_thermolion(params, grads, exp_avgs, exp_avg_sqs, steps, **hyper)
        if sums is not None:
            stats += sums
