"""What a run is built from: seeds per stream, the device, the model and its optimizer."""

from __future__ import annotations

import hashlib
import importlib
import sys
from typing import TYPE_CHECKING, Optional

import torch
from torch.optim.swa_utils import SWALR, AveragedModel

from models import build_model
from thermolion import ThermoLion, build_optimizer, get_spec, param_groups

from .data import Prepared

if TYPE_CHECKING:
    from ..config import RunConfig

__all__ = ["derive_seed", "pick_device", "keep_freed_memory", "load_class", "recipe", "build_run"]


def derive_seed(seed: int, dataset: str, stream: str) -> int:
    """Independent, reproducible seeds per stream; the optimizer is deliberately not an input,
    so for one seed every optimizer starts from the same weights and sees the same batches."""
    digest = hashlib.sha256(f"{seed}:{dataset}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def keep_freed_memory() -> None:
    """On glibc, serve large blocks from the heap and keep freed memory for reuse.

    By default glibc hands every block over 32 MB to mmap and back to the OS when freed, so on
    the CPU each training step page-faults its activations anew (batch 1024: ~1.8x slower steps,
    half the time in the kernel). Process-wide, so it is called by the harness, not the library.
    """
    if sys.platform != "linux":
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX = 0: no mmap'd blocks
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: do not shrink the heap
    except (OSError, AttributeError):
        pass


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_class(target: str):
    """The object a dotted path ``module.attr`` names (ImportError or AttributeError if none)."""
    module_name, _, attr = str(target).rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def recipe(cfg: RunConfig, total_steps: int) -> tuple[str, int, dict]:
    """The run's lr schedule, its warmup steps and any warmup the optimizer takes itself.

    ``trainer.schedule=recipe`` takes each registered optimizer's published recipe from the registry
    (``OptimizerSpec.schedule``, ``warmup_share`` of the run's steps, at least 1); a plug-in's is constant.
    """
    tc = cfg.trainer
    if tc.schedule != "recipe":
        return tc.schedule, tc.warmup_steps, {}
    if cfg.optimizer.target:
        return "constant", 0, {}
    spec = get_spec(cfg.optimizer.name)
    warmup = max(1, round(spec.warmup_share * total_steps)) if spec.warmup_share else 0
    if "warmup_steps" in spec.defaults:  # Schedule-Free warms up inside the optimizer
        return spec.schedule, 0, {"warmup_steps": warmup}
    return spec.schedule, warmup, {}


def build_run(cfg: RunConfig, data: Prepared, device: torch.device, optimizer_warmup: Optional[dict] = None):
    """Model (seeded init), optimizer and, for SWA, the averaged model and its lr schedule."""
    torch.manual_seed(derive_seed(cfg.seed, cfg.data.name, "init"))
    model = build_model(cfg.model, data.channels, data.num_classes, data.image_size).to(device)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    kwargs = {**cfg.optimizer.kwargs, **(optimizer_warmup or {})}
    if cfg.optimizer.target:  # a plug-in: the class itself, with exactly the given arguments
        factory, averaging, policy = load_class(cfg.optimizer.target), None, "all"
    else:
        spec = get_spec(cfg.optimizer.name)
        factory, averaging, policy = spec.factory, spec.averaging, spec.groups
    groups = param_groups(model, cfg.model.resolved()["decay_norm_and_bias"], muon=policy == "muon")
    if isinstance(factory, type) and issubclass(factory, ThermoLion):
        noise_seed = derive_seed(cfg.seed, cfg.data.name, "noise")
        if kwargs.get("noise_rng") == "torch":  # the author's stream: a generator of the run's own
            kwargs.update(generator=torch.Generator(device=device).manual_seed(noise_seed))
        else:  # counter-based: the seed is the whole state
            kwargs.update(seed=noise_seed)
        kwargs.update(track_stats=cfg.options.track_stats)
    if cfg.optimizer.target:
        optimizer = factory(groups, **kwargs)
    else:
        optimizer = build_optimizer(cfg.optimizer.name, groups, **kwargs)
    swa = None
    if averaging:
        swa = (AveragedModel(model), SWALR(optimizer, swa_lr=averaging["swa_lr"]), averaging["start_epoch"])
    return model, optimizer, swa
