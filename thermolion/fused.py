"""ThermoLion's compiled path: the whole update of a (device, dtype) bucket as one ``torch.compile``d call.

The bucket's tensors are traced together (horizontal fusion), so a model of many small tensors pays
one compiled call per step rather than one per tensor, and each tensor's update is one pass over
memory instead of ~20. Tensors keep their own strides (``channels_last`` parameters included). The
counter-based noise (the default) is computed inside the kernel from each element's index, with no
buffer (thermolion/philox.py); the ``"torch"`` stream's is drawn eagerly from the optimizer's generator,
tensor by tensor in parameter order, exactly as the other paths draw it, and passed in. Either way the
three paths agree to rounding.

The step counts and the lr enter the graph as float64 tensors on the device, and the bias
corrections, temperatures and the temperature gate (a ``torch.where`` on T > t_min) are computed
there, so a new step or a scheduled lr never recompiles. With ``capturable`` the step counts already
live on the device and the noise is drawn on every step: no step reads anything back to the host,
and the graph is the same before and after the noise turns off (step 459 with the defaults).
Without it, steps are copied to the device (a few bytes) and no noise is drawn once it is off, which
is a second graph, compiled once.

:func:`thermolion.functional.thermolion` picks this path for buckets of at least
``FUSED_MIN_ELEMENTS`` elements (or with ``fused=True``). Every bucket layout (dtype, device, shapes and
strides, which tensors are noisy, the flags) is a variant; the first step of a new variant backs up every
bucket of the step, so that if compiling fails anywhere (no C++ compiler, past the recompile limit) the
whole step is undone, the generator rewound, and the step runs on the foreach path, drawing the same
noise. That variant stays on foreach from then on (every variant, when none has ever compiled).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import SimpleNamespace
from typing import Optional, Union

import torch
from torch import Tensor

from .philox import GENERATED, MASK32, noise_of, normals, quiet_inductor_import, seed_words, shard_indices
from .shared import GAS_THRESHOLD, accumulate, draw_noise, fixed_order_mean, is_dtensor, local, temperature

__all__ = ["fused_thermolion", "fused_kernel"]


def _fused_bucket(
    ps: list[Tensor],
    gs: list[Tensor],
    ms: list[Tensor],
    vs: list[Tensor],
    xis: list[Union[Tensor, tuple[int, int], None]],
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
    v_means: Optional[Tensor] = None,
    seed_words: Optional[Tensor] = None,
) -> Optional[Tensor]:
    """Every tensor's whole update; compiled, one pass over p, g, m and v each. ``steps`` (one per
    tensor) and ``lr`` are float64 tensors on the device, so that neither a new step nor a scheduled lr
    recompiles. ``xis``: each tensor's noise (drawn outside, the author's stream), or (first element's index
    in the whole tensor, tensor number) for the counter-based stream under ``seed_words`` (int64 [lo, hi]),
    computed here with no buffer, or None (no noise). ``v_means``: each tensor's mean(v) after this step's
    update where it is computed outside (the local shards of DTensors), else None (computed here). Returns the
    bucket's 5 diagnostic sums (lam, gas, aligned, |u|, T*numel), or None."""
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
        if isinstance(xi, tuple):  # counter-based: each element's normal from its index, in this kernel
            assert seed_words is not None
            start, k = xi
            index = torch.arange(v.numel(), dtype=torch.int64, device=v.device) + start
            xi = normals(index, (seed_words[0], seed_words[1], t.to(torch.int64) & MASK32, k)).view(v.shape)
        if xi is not None:
            mean_v = fixed_order_mean(v_hat) if v_means is None else (v_means[i] / bc2).to(m.dtype)
            variance = temperature if unit_noise else temperature * mean_v
            sigma = torch.where(temperature > t_min, (variance + noise_floor) ** 0.5, 0.0)  # on the device
            direction = direction + (1 - lam) * sigma * xi
        p.copy_(p.to(m.dtype) * (1 - lr_t * weight_decay) - lr_t * direction)
        if with_stats:
            sums.append(
                torch.stack(
                    [
                        lam.sum(dtype=torch.float64),
                        (lam < GAS_THRESHOLD).sum().to(torch.float64),
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
_FAILED: set = set()  # bucket variants whose compile failed: foreach from then on


def fused_kernel() -> Optional[Callable]:
    """The compiled bucket update (built once per process), or None where torch.compile is unavailable."""
    if "kernel" not in _COMPILED:
        quiet_inductor_import()
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


def fused_thermolion(params, grads, exp_avgs, exp_avg_sqs, steps, **hyper) -> bool:
    """The update as one compiled call per (device, dtype) bucket; noise drawn eagerly, in parameter order.

    ``hyper``: the keyword hyperparameters of :func:`thermolion.functional.thermolion`. ``steps`` are
    Python ints, or 0-dim tensors on the device with ``capturable``. Returns False, having changed
    nothing (tensors and generator as they were), when the step must run on the foreach path instead.
    """
    h = SimpleNamespace(**hyper)
    generator, stats = h.generator, h.stats
    kernel = fused_kernel()
    sharded = bool(params) and is_dtensor(params[0])
    if kernel is None or (sharded and params[0].device_mesh.ndim != 1):
        return False  # DTensors on a mesh of several dimensions (HSDP, 2-D parallelism) run on foreach
    capturable = bool(steps) and isinstance(steps[0], Tensor)
    generator_state = generator.get_state() if generator is not None and h.noise else None
    seed, ids = getattr(h, "noise_seed", None), getattr(h, "noise_ids", None) or range(len(params))
    # capturable: always draw, and let the gate inside the graph zero the noise once T <= t_min
    xis = [
        _noise_input(v, generator, seed, t, k)
        if h.noise and (capturable or temperature(h.t0, h.temp_decay, t) > h.t_min)
        else None
        for v, t, k in zip(exp_avg_sqs, steps, ids)
    ]
    h.seed_words = seed_words(seed, local(params[0]).device) if seed is not None else None
    buckets: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        buckets.setdefault((p.device, p.dtype), []).append(i)
    if sharded:  # the kernel runs on each rank's shards; what needs the whole tensor is reduced outside it
        group = params[0].device_mesh.get_group()
        h.v_means = _global_v_means(grads, exp_avg_sqs, h.beta2, group) if h.noise and h.noise_scale == "grad" else None
        params, grads, exp_avgs, exp_avg_sqs = ([local(t) for t in ts] for ts in (params, grads, exp_avgs, exp_avg_sqs))
        xis = [local(x) if isinstance(x, Tensor) else x for x in xis]
    else:
        group, h.v_means = None, None
    variants = [_variant(params, xis, idx, h.maximize, stats is not None) for idx in buckets.values()]
    if _FAILED.intersection(variants):
        return _rewound(generator, generator_state)
    # A variant's first call compiles it; if that fails, Dynamo may already have run some of the in-place
    # updates eagerly, and earlier buckets of the step are done: keep every bucket to restore.
    live = [t for idx in buckets.values() for i in idx for t in (params[i], exp_avgs[i], exp_avg_sqs[i])]
    backup = [t.clone() for t in live] if not _VERIFIED.issuperset(variants) else None
    sums = []
    for idx, variant in zip(buckets.values(), variants):
        try:
            sums.append(_run_bucket(kernel, idx, params, grads, exp_avgs, exp_avg_sqs, xis, steps, h))
        except Exception as err:  # noqa: BLE001 - e.g. no working C++ compiler for Inductor
            if backup is None:  # a verified graph failing at run time: a real error, not a compile problem
                raise RuntimeError(f"ThermoLion's fused path failed midway: {err}; use fused=False") from err
            for t, saved in zip(live, backup):  # per tensor: DTensor has no foreach copy
                t.copy_(saved)
            _FAILED.add(variant)
            if not _VERIFIED:  # nothing ever compiled in this process: the compiler itself is missing
                _COMPILED["kernel"] = None
            warnings.warn(f"ThermoLion: the fused path failed to compile ({err}); using foreach", stacklevel=3)
            return _rewound(generator, generator_state)
    _VERIFIED.update(variants)
    for bucket_sums in sums:
        if bucket_sums is not None:
            if group is not None:  # the shards' sums, summed over the ranks
                torch.distributed.all_reduce(bucket_sums, group=group)
            accumulate(stats, bucket_sums)
    return True


def _noise_input(v: Tensor, generator, seed: Optional[int], step, k: int):
    """What the kernel gets for one noisy tensor: the author's stream's draw; or, counter-based, (first
    index, tensor number) of its elements (its shard's) to compute in the kernel; where a shard's elements
    are not one range of the whole tensor, their normals computed here."""
    if seed is None:
        return draw_noise(v, generator)
    _, where = shard_indices(v)
    if not isinstance(where, int):
        return noise_of(v, None, seed, step, k)
    GENERATED[0] += local(v).numel()
    return (where, k)


def _global_v_means(grads: list, exp_avg_sqs: list, beta2: float, group) -> Tensor:
    """mean(v) of every whole tensor after this step's update, from the shards before it (one all-reduce):
    sum(v_new) = beta2*sum(v) + (1-beta2)*sum(g^2), over every rank's shard; float64 on the device."""
    local = [(v.to_local(), g.to_local()) for v, g in zip(exp_avg_sqs, grads)]
    sums = torch.stack(
        [
            beta2 * v.sum(dtype=torch.float64) + (1 - beta2) * g.to(v.dtype).square().sum(dtype=torch.float64)
            for v, g in local
        ]
    )
    torch.distributed.all_reduce(sums, group=group)
    return sums / torch.tensor([v.numel() for v in exp_avg_sqs], dtype=torch.float64, device=sums.device)


def _variant(params, xis, idx, maximize: bool, with_stats: bool) -> tuple:
    """What makes a graph of the bucket function: dtype, device, every tensor's shape and strides, which
    tensors are noisy, and the flags."""
    ps = [params[i] for i in idx]
    layout = tuple((tuple(p.shape), tuple(p.stride())) for p in ps)
    noise = tuple(None if xis[i] is None else type(xis[i]).__name__ for i in idx)
    return (ps[0].dtype, str(ps[0].device), layout, noise, maximize, with_stats)


# torch < 2.7 calls Dynamo's per-function limit cache_size_limit.
_RECOMPILE_LIMIT_NAME = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"


def _rewound(generator, state) -> bool:
    if state is not None:
        generator.set_state(state)  # the foreach path redraws the same noise
    return False


def _run_bucket(kernel, idx, params, grads, exp_avgs, exp_avg_sqs, xis, steps, h) -> Optional[Tensor]:
    def pick(xs):  # the bucket's slice of a per-tensor list
        return [xs[i] for i in idx]

    ps = pick(params)
    f64 = dict(dtype=torch.float64, device=ps[0].device)
    # Every model layout and variant is a graph of this one function: a process with several
    # models (an in-process sweep, a benchmark) needs more than Dynamo's default 8.
    with torch._dynamo.config.patch({_RECOMPILE_LIMIT_NAME: RECOMPILE_LIMIT}):
        return kernel(
            ps,
            pick(grads),
            pick(exp_avgs),
            pick(exp_avg_sqs),
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
            h.stats is not None,
            h.noise_scale == "unit",
            None if h.v_means is None else pick(h.v_means),
            h.seed_words,
        )
