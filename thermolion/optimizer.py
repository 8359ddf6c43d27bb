"""ThermoLion: SNR-gated interpolation between Lion-style sign updates and Adam-style steps.

The class owns hyperparameters, validation, lazy state and the noise generator, in the style of
``torch.optim.adam``; the math lives in :mod:`thermolion.functional` (a per-tensor reference and a
foreach path) and :mod:`thermolion.fused` (a compiled one-kernel path), with one signature.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Optional, Union

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import ParamsT

from .baselines import evaluate_closure, refuse_complex
from .conventions import (
    as_step_tensor,
    check_dtensor_support,
    check_finite_at_least,
    check_fused_device,
    check_lr,
    restore_float32_moments,
    stash_moments,
)
from .functional import FUSED_MIN_ELEMENTS, NOISE_RNGS, NOISE_SCALES, thermolion
from .generators import NoiseGenerators

__all__ = ["ThermoLion", "thermolion", "STAT_NAMES", "FUSED_MIN_ELEMENTS"]

STAT_NAMES = ("gate_mean", "gas_fraction", "alignment_rate", "update_over_lr", "temperature")


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
            sigma = sqrt(T*mean(v) + noise_floor)    (mean over the whole tensor; noise_scale="grad")
            sigma = sqrt(T + noise_floor)            (noise_scale="unit")
            u += lr*(1-lam)*sigma*xi,  xi ~ N(0, I)
        theta <- theta*(1 - lr*weight_decay) - u

    Since ``m/d == sign(m)*rho``, the deterministic part of ``u`` always points along
    ``sign(m)``; the magnitude branch rescales each element's step to
    ``lr*((1-lam)*(1+boost*a) + scale*rho*lam)``.

    Args:
        params: iterable of parameters or param groups.
        lr: learning rate (default 1e-3): a number, or a 1-element tensor where torch.optim takes one
            (the for-loop path, ``capturable``, ``fused``; not ``foreach=True`` without ``capturable``).
            The foreach and fused paths read a tensor lr on the device, so a scheduler's ``fill_`` takes
            effect in a captured or compiled step without a new capture.
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
        noise_scale: ``"grad"`` (default, the author's) scales the noise by sqrt(T*mean(v)), in
            gradient units: multiplying the loss by k multiplies the noise by k and leaves the
            deterministic step unchanged. ``"unit"`` uses sqrt(T), in the units of the sign step,
            so the whole update is invariant to the loss scale.
        maximize: maximise the objective instead of minimising it.
        foreach: ``False`` selects the per-tensor reference path (slow; for testing).
        fused: ``True`` always uses the compiled one-kernel path, ``False`` never, ``None`` (default)
            uses it for buckets of at least ``FUSED_MIN_ELEMENTS`` elements and foreach below.
            ``foreach=True`` with ``fused=True`` is refused, as torch.optim refuses it.
        noise_rng: the noise stream. ``"philox"`` (the default, without ``generator``) is counter-based
            (:mod:`thermolion.philox`): element i of parameter k (its position in the optimizer) at step t
            gets a normal that is a pure function of (seed, t, k, i), computed inside the compiled kernel
            with no buffer, the same on every path, thread count and device, and by each shard of an
            FSDP2 parameter for its own elements only; its state is the seed and the steps. ``"torch"``
            (implied by ``generator``) draws ``torch.randn`` from a ``torch.Generator``, as the author's
            code does, for replaying it draw for draw. A state dict saved before version 0.2 loads as
            ``"torch"``, so a resumed run continues its stream.
        generator: ``torch.Generator`` for the ``"torch"`` stream, on the parameters' device. By default
            (None) the optimizer owns one generator per device, made at the first step on that device
            (so the optimizer builds on ``meta`` parameters, and building it draws nothing from torch's
            global RNG), seeded from ``seed`` mixed with the device's name, so that two devices draw
            different noise; their states are saved in :meth:`state_dict`. An explicit generator is
            the caller's: nothing is broadcast. With the noise on, either stream agrees with the
            author's global-RNG draws in distribution, not draw for draw (noise off, exactly).
        seed: the noise's seed (default None: ``torch.initial_seed()``, what ``torch.manual_seed``
            set; read at the first step, never drawn); not with ``generator``. When
            ``torch.distributed`` is initialised, the first step broadcasts rank 0's seed (one
            collective, once, in ``process_group``), so that DDP replicas seeded ``seed + rank``
            still draw identical noise and stay identical. Saved in :meth:`state_dict`.
        process_group: the group whose rank 0's seed the owned generators take (default None: the
            default group). The broadcast is a collective inside the first ``step()``: every rank
            of the group must step this optimizer (with pipeline stages, or ranks that build other
            optimizers, give the group of the ranks that do, or pass ``generator``/``seed``).
        track_stats: accumulate phase diagnostics on the device; :meth:`read_stats` returns their
            averages since the last read.
        stats_every: with ``track_stats``, accumulate them on every ``stats_every``-th step only
            (default 1: every step). The diagnostics cost several passes over the parameters, so
            sampling them makes the step cheaper; their averages are over the sampled steps.
        capturable: keep each tensor's step count as a 0-dim tensor on its device (torch.optim's
            convention), so that bias corrections, temperature and the noise gate (a ``torch.where``
            on T > t_min) are computed on the device: no step reads back to the host, the step can be
            captured in a CUDA graph, and a compiled step does not recompile when the noise ends.
            The noise is drawn on every step then (zeroed once T <= t_min); the updates are the
            default path's.

    State: ``m`` and ``v`` are float32 for float32, bfloat16 and float16 parameters (low-precision
    parameters keep full-precision moments; the update is computed in float32 and rounded once
    into the parameter) and float64 for float64 parameters.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: Union[float, Tensor] = 1e-3,
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
        noise_scale: str = "grad",
        noise_rng: Optional[str] = None,
        maximize: bool = False,
        foreach: Optional[bool] = None,
        fused: Optional[bool] = None,
        generator: Optional[torch.Generator] = None,
        seed: Optional[int] = None,
        process_group: Optional[Any] = None,
        track_stats: bool = False,
        stats_every: int = 1,
        capturable: bool = False,
    ) -> None:
        check_lr(lr, foreach, capturable)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        for i, beta in enumerate(betas):
            if not 0.0 <= float(beta) < 1.0:
                raise ValueError(f"betas[{i}] must be in [0, 1), got {beta}")
        if not (math.isfinite(eps) and eps > 0.0):
            raise ValueError(f"eps must be > 0 (it keeps sqrt(v)+eps away from 0), got {eps}")
        check_finite_at_least("weight_decay", weight_decay, 0.0)
        if not 0.0 < temp_decay <= 1.0:
            raise ValueError(
                f"temp_decay must be in (0, 1], got {temp_decay}; "
                "to switch the noise off use noise=False or a temp_decay <= t_min/t0"
            )
        for name, value in (
            ("boost", boost),
            ("scale", scale),
            ("t0", t0),
            ("t_min", t_min),
            ("noise_floor", noise_floor),
        ):
            check_finite_at_least(name, value, 0.0)
        if foreach is False and fused:
            raise ValueError("foreach=False (the per-tensor reference) and fused=True exclude each other")
        if foreach and fused:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        if noise_scale not in NOISE_SCALES:
            raise ValueError(f"noise_scale must be one of {NOISE_SCALES}, got {noise_scale!r}")
        if isinstance(stats_every, bool) or not isinstance(stats_every, int) or stats_every < 1:
            raise ValueError(f"stats_every must be an integer >= 1 (1: every step), got {stats_every!r}")
        if noise_rng is None:  # a generator is the author's stream's; else the counter-based one
            noise_rng = "torch" if generator is not None else "philox"
        if noise_rng not in NOISE_RNGS:
            raise ValueError(f"noise_rng must be one of {NOISE_RNGS}, got {noise_rng!r}")
        if generator is not None and noise_rng != "torch":
            raise ValueError(
                "generator drives the author's noise stream (noise_rng='torch'); the counter-based stream "
                "(noise_rng='philox') takes seed=... (an integer) instead"
            )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator)}")
        if seed is not None and (generator is not None or isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an integer, and only without generator; got seed={seed!r}")

        defaults = dict(
            lr=lr,
            betas=(float(betas[0]), float(betas[1])),
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
            noise_scale=noise_scale,
            noise_rng=noise_rng,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
            capturable=capturable,
        )
        super().__init__(params, defaults)
        refuse_complex(self)
        check_dtensor_support(self)
        self._noise = NoiseGenerators(generator, seed, process_group)
        self.track_stats = track_stats
        self.stats_every = stats_every
        self._stat_calls = 0  # steps since construction: which ones stats_every samples
        self._reset_stats()
        # Optimizer.load_state_dict casts state to each parameter's dtype: keep bf16/fp16 parameters'
        # moments in float32 across a save/load (a resumed run), as a fresh optimizer keeps them.
        self.register_load_state_dict_pre_hook(stash_moments)
        self.register_load_state_dict_post_hook(restore_float32_moments)

    # ---------------------------------------------------------------- state and diagnostics
    def _reset_stats(self) -> None:
        # [sum lam, sum gas, sum aligned, sum |u|/lr, sum T*numel] on the device, float64
        self._stats: Optional[Tensor] = None
        self._stat_elements = 0

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
        out = {name: value / n for name, value in zip(STAT_NAMES, sums)}
        self._reset_stats()
        return out

    def __getstate__(self) -> dict:  # deepcopy/pickle keep the generator and the diagnostics
        state = super().__getstate__()
        for key in (
            "_noise",
            "track_stats",
            "stats_every",
            "_stat_calls",
            "_stats",
            "_stat_elements",
        ):
            state[key] = getattr(self, key)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)  # also reached by load_state_dict
        for group in self.param_groups:
            group.setdefault("noise_scale", "grad")  # state saved before noise_scale existed
            group.setdefault("capturable", False)
            group.setdefault("noise_rng", "torch")  # state saved before the counter-based stream: drawn from torch
        self.__dict__.setdefault("stats_every", 1)
        self.__dict__.setdefault("_stat_calls", 0)
        if "_noise" not in self.__dict__:  # pickled by version 0.1: one generator attribute
            self._noise = NoiseGenerators(self.__dict__.pop("generator", None))

    # ---------------------------------------------------------------- noise generators
    @property
    def generator(self) -> Optional[torch.Generator]:
        """The caller's noise generator, or None where the optimizer owns one per device."""
        return self._noise.generator

    def _noise_generator(self, device: torch.device) -> torch.Generator:
        return self._noise.for_device(device)

    def state_dict(self) -> dict:
        return {**super().state_dict(), **self._noise.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Also restores the noise generators (a state dict of version 0.1 too: thermolion.generators)."""
        state_dict = dict(state_dict)
        self._noise.load_state_dict(state_dict)  # takes its entries out
        super().load_state_dict(state_dict)

    # Bookkeeping, not maths: under torch.compile(opt.step) it runs eagerly, as torch.optim keeps its own
    # state set-up out of the graph, so Dynamo neither breaks on the CPU step's int() nor warns about it.
    @torch.compiler.disable
    def _init_group(self, group, params, grads, exp_avgs, exp_avg_sqs, steps) -> None:
        if group["foreach"] and torch.is_tensor(group["lr"]) and not group["capturable"]:
            raise RuntimeError("lr as a Tensor is not supported for capturable=False and foreach=True")
        # torch.optim's convention: the step is a float tensor (float64 under a float64 default dtype, else
        # float32), on the device with capturable or fused (read there, no sync), else on the CPU (read back
        # to a Python int for free)
        on_device = group["capturable"] or group["fused"] is True
        for p in group["params"]:
            if p.grad is None or p.numel() == 0:
                continue  # no gradient (or no element): no update and the temperature does not advance
            if group["fused"] is True:
                check_fused_device(p)
            if p.grad.is_sparse:
                raise RuntimeError(
                    "ThermoLion does not support sparse gradients; use dense gradients "
                    "(e.g. nn.Embedding(sparse=False))"
                )
            state = self.state[p]
            if len(state) == 0:
                state_dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
                state["step"] = 0.0  # float32 at least, so that pow is exact up to 2**24 steps (below)
                state["exp_avg"] = torch.zeros_like(p, dtype=state_dtype, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, dtype=state_dtype, memory_format=torch.preserve_format)
            # an int step (a state saved by an older version) or one saved on another device reads back
            device = p.device if on_device else torch.device("cpu")
            state["step"] = as_step_tensor(state["step"], device, group["fused"] is True)
            state["step"].add_(1)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"] if on_device else int(state["step"]))

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Perform one optimisation step; ``closure`` re-evaluates the model and returns the loss."""
        loss = evaluate_closure(closure)
        sample = False
        if self.track_stats:  # a Python counter only then: a compiled step would specialise on it
            sample = self._stat_calls % self.stats_every == 0
            self._stat_calls += 1

        positions: Optional[dict[Tensor, int]] = None  # made at the first group with counter-based noise
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            exp_avgs: list[Tensor] = []
            exp_avg_sqs: list[Tensor] = []
            steps: list[Tensor] = []
            self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, steps)
            if not params:
                continue
            if sample and self._stats is None:
                self._stats = torch.zeros(len(STAT_NAMES), dtype=torch.float64, device=params[0].device)
            beta1, beta2 = group["betas"]
            torch_noise = group["noise"] and group["noise_rng"] == "torch"
            ids = None  # counter-based noise: each parameter's position in the optimizer (its state_dict id)
            if group["noise"] and not torch_noise:
                if positions is None:
                    positions = {p: i for i, p in enumerate(q for g in self.param_groups for q in g["params"])}
                ids = [positions[p] for p in params]
            thermolion(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                steps,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                temp_decay=group["temp_decay"],
                boost=group["boost"],
                scale=group["scale"],
                t0=group["t0"],
                t_min=group["t_min"],
                noise_floor=group["noise_floor"],
                bias_correction=group["bias_correction"],
                noise=group["noise"],
                noise_scale=group["noise_scale"],
                maximize=group["maximize"],
                generator=self._noise_generator(params[0].device) if torch_noise else None,
                noise_seed=self._noise.owned_seed() if ids is not None else None,
                noise_ids=ids,
                stats=self._stats if sample else None,
                foreach=group["foreach"],
                fused=group["fused"],
            )
            if sample:
                self._stat_elements += sum(p.numel() for p in params)
        return loss
