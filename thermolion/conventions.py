"""torch.optim's conventions, with torch's own rules and messages, for ThermoLion's constructor and
``_init_group``: the step count as a tensor of torch's scalar dtype, a tensor lr, finite hyperparameters,
and the devices ``fused=True`` accepts. ``tests/test_thermolion_conventions.py`` compares them with
``torch.optim.Adam``'s. Also the one place ThermoLion departs from them: ``Optimizer.load_state_dict``
casts state to each parameter's dtype, and ThermoLion keeps a bf16/fp16 parameter's moments in float32
across a save and load, as a fresh optimizer keeps them (its load_state_dict hooks below)."""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import _get_scalar_dtype

__all__ = [
    "as_step_tensor",
    "check_fused_device",
    "check_lr",
    "check_finite_at_least",
    "check_dtensor_support",
    "stash_moments",
    "restore_float32_moments",
]

# DTensor parameters (FSDP2's fully_shard, tensor parallelism) need DTensor sharding rules for every
# foreach op of the update; torch 2.11 and 2.12 lack _foreach_tanh's (make test-compat found it).
DTENSOR_MIN_TORCH = "2.13"


def as_step_tensor(step, device: torch.device, fused: bool = False) -> Tensor:
    """A step count as torch.optim keeps it: a 0-dim tensor of its scalar dtype (on the parameter's device
    for capturable or fused, else on the CPU)."""
    dtype = _get_scalar_dtype(is_fused=fused)  # torch's rule: float32 if fused, else the default dtype's
    if isinstance(step, Tensor) and step.device == device and step.dtype == dtype:
        return step
    return torch.as_tensor(float(step), dtype=dtype, device=device)


def check_fused_device(p: Tensor) -> None:
    """torch.optim's rule and message for ``fused=True``: floating-point parameters on a device that has
    fused kernels (the meta device has none)."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    supported = _get_fused_kernels_supported_devices()
    if p.device.type not in supported or not torch.is_floating_point(p):
        raise RuntimeError(
            "`fused=True` requires all the params to be floating point Tensors of supported devices: "
            f"{supported} but {p.dtype} and {p.device.type}"
        )


def check_lr(lr: Union[float, Tensor], foreach: Optional[bool], capturable: bool) -> None:
    """torch.optim's rules and messages: a tensor lr has one element, and is refused on the foreach path
    without capturable (its Python-number arguments would freeze it)."""
    if isinstance(lr, Tensor):
        if foreach and not capturable:
            raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
        if lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        value = float(lr.detach().cpu()) if lr.device.type != "meta" else 0.0
        if not (math.isfinite(value) and value >= 0.0):
            raise ValueError(f"lr must be a finite number >= 0.0, got {value}")
        return
    check_finite_at_least("lr", lr, 0.0)


def check_finite_at_least(name: str, value, low: float) -> None:
    if isinstance(value, Tensor) or not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{name} must be a Python number, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= low):
        raise ValueError(f"{name} must be a finite number >= {low}, got {value}")


def check_dtensor_support(optimizer: torch.optim.Optimizer, version: str = torch.__version__) -> None:
    """One clear line where DTensor parameters meet a torch too old for them; nothing otherwise."""
    from torch.torch_version import TorchVersion

    from .shared import is_dtensor

    if TorchVersion(version) >= DTENSOR_MIN_TORCH:
        return
    if any(is_dtensor(p) for group in optimizer.param_groups for p in group["params"]):
        raise RuntimeError(
            f"ThermoLion on DTensor parameters (FSDP2's fully_shard, tensor parallelism) needs torch >= "
            f"{DTENSOR_MIN_TORCH}, and this is torch {version}: upgrade torch, or wrap the model in DDP instead"
        )


_MOMENTS = ("exp_avg", "exp_avg_sq")


def stash_moments(optimizer: Optimizer, state_dict: dict) -> None:
    """load_state_dict's pre hook: keep the saved moments as saved, before the cast to the parameters' dtype."""
    optimizer.__dict__["_loaded_moments"] = {  # read once by the post hook, which pops it
        idx: {k: s[k] for k in _MOMENTS if torch.is_tensor(s.get(k))} for idx, s in state_dict["state"].items()
    }


def restore_float32_moments(optimizer: Optimizer) -> None:
    """load_state_dict's post hook: a bf16/fp16 parameter's moments back in float32."""
    stash = optimizer.__dict__.pop("_loaded_moments", {})
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for idx, moments in stash.items():
        p = params[idx]
        if p.dtype in (torch.bfloat16, torch.float16) and p in optimizer.state:
            for key, saved in moments.items():
                optimizer.state[p][key] = saved.to(device=p.device, dtype=torch.float32)
