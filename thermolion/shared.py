"""What every code path of the update shares: the temperature, the gas threshold, the noise draw and
the diagnostics' accumulation, each written once (``functional`` and ``fused`` both import this).

DTensor parameters (FSDP2's ``fully_shard``, tensor parallelism) are handled here:

* with the counter-based stream (``noise_rng="philox"``, thermolion.philox) each rank computes its
  shard's elements only, and they are the unsharded run's;
* with the author's stream (``noise_rng="torch"``) the noise of a DTensor is one draw of the *whole*
  tensor's shape from the generator, of which each rank keeps its own shard. With the generator in the
  same state on every rank (the optimizer's owned generators are seeded from rank 0), the sharded run
  draws exactly the unsharded run's noise. DTensor's own random ops would draw only the local shard, but
  they support CUDA meshes only (``is_rng_supported_mesh``) and fail on a CPU mesh; the full draw works
  on every device and is exact, at the cost of one full-size temporary per tensor per step on each rank;
* reductions such as ``mean(v)`` are DTensor reductions, so they cover the whole parameter;
* the diagnostics' sums are reduced to plain tensors (``full_tensor``) before they are accumulated,
  so ``read_stats`` reports the whole model on every rank.
"""

from __future__ import annotations

from typing import Optional, TypeGuard

import torch
from torch import Tensor

try:  # torch built without distributed support has no DTensor
    from torch.distributed.tensor import DTensor

    HAS_DTENSOR = True
except ImportError:  # pragma: no cover
    HAS_DTENSOR = False

__all__ = [
    "GAS_THRESHOLD",
    "temperature",
    "draw_noise",
    "accumulate",
    "plain",
    "local",
    "is_dtensor",
    "fixed_order_mean",
    "means",
]

GAS_THRESHOLD = 0.5  # an element is in the "gas" (sign-dominated) phase while lambda < 0.5


def temperature(t0: float, temp_decay: float, step: int) -> float:
    """T = t0 * temp_decay**t, per tensor (a Python float from a Python step count)."""
    return t0 * temp_decay**step


def is_dtensor(x: object) -> TypeGuard[DTensor]:
    return HAS_DTENSOR and isinstance(x, DTensor)


def draw_noise(like: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Standard normal noise of ``like``'s shape, device and dtype, drawn from ``generator``."""
    if not is_dtensor(like):
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    local = like.to_local()
    whole = torch.randn(like.shape, generator=generator, device=local.device, dtype=local.dtype)
    shape, offset = compute_local_shape_and_global_offset(like.shape, like.device_mesh, like.placements)
    mine = whole[tuple(slice(o, o + n) for o, n in zip(offset, shape))]
    return DTensor.from_local(
        mine.contiguous(), like.device_mesh, like.placements, run_check=False, shape=like.shape, stride=like.stride()
    )


MEAN_CHUNK = 1 << 14  # elements per partial sum of fixed_order_mean: under ATen's parallel grain (32768)


def fixed_order_mean(v: Tensor) -> Tensor:
    """mean(v), the same on any number of CPU threads: float64 sums of fixed chunks of MEAN_CHUNK elements,
    then their serial running sum. ``v.mean()`` splits one reduction across the threads, so its last bits
    follow ``torch.get_num_threads()``; a row sum is computed by one thread, and rows go to threads whole.
    One pass over v, like the mean. DTensors (a reduction over ranks) and other devices use ``mean()``."""
    if is_dtensor(v) or v.device.type != "cpu":
        return v.mean()
    flat = v.reshape(-1)
    n = flat.numel()
    whole = n - n % MEAN_CHUNK
    total = flat[whole:].sum(dtype=torch.float64)  # under one chunk: serial
    if whole:
        total = total + flat[:whole].view(-1, MEAN_CHUNK).sum(1).to(torch.float64).cumsum(0)[-1]
    return (total / max(n, 1)).to(v.dtype)


def means(vs: list[Tensor]) -> list[Tensor]:
    """mean(v) of each tensor: in a fixed order on CPU tensors (``fixed_order_mean``); elsewhere one foreach
    reduction, ||v||_1 / n since v >= 0, whose results stay on the device (out of place: a DTensor's norm is a
    Partial sum, which an in-place op may not redistribute)."""
    if vs[0].device.type == "cpu" and not is_dtensor(vs[0]):
        return [fixed_order_mean(v) for v in vs]
    return list(torch._foreach_mul(torch._foreach_norm(vs, 1), [1.0 / max(v.numel(), 1) for v in vs]))


def local(x: Tensor) -> Tensor:
    """A DTensor's shard on this rank; anything else as it is."""
    return x.to_local() if is_dtensor(x) else x


def plain(x: Tensor) -> Tensor:
    """A DTensor reduced to a plain tensor of its whole value (one collective); anything else as it is."""
    return x.full_tensor() if is_dtensor(x) else x


def accumulate(stats: Tensor, sums: Tensor) -> None:
    """``stats += sums``, where a DTensor's sums (Partial placements) are reduced over the mesh first."""
    stats += plain(sums)
