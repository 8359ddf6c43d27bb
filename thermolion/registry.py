"""One declarative table of optimizers, built by name (in the style of timm's optim factory).

Each entry carries the defaults the paper's benchmark ran with. Ablations are entries that reuse a
factory with other defaults, never copies of code. ``build_optimizer`` is the single place
where names, defaults, overrides and the param-group policy meet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn
from torch.optim import Optimizer

from .baselines import SWATS, Lion, Lookahead, MuAdam
from .optimizer import ThermoLion

__all__ = ["OptimizerSpec", "OPTIMIZERS", "PAPER_OPTIMIZERS", "build_optimizer", "get_spec", "param_groups"]


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    factory: Callable[..., Optimizer]
    defaults: dict[str, Any]
    description: str
    # Weight averaging the trainer applies on top (SWA): start_epoch (0-based, averaged at the
    # end of every epoch >= start_epoch) and swa_lr for torch.optim.swa_utils.SWALR.
    averaging: Optional[dict[str, Any]] = None
    variant_of: Optional[str] = None
    tags: tuple[str, ...] = field(default=())


def _lookahead(params, k: int = 5, alpha: float = 0.5, late_snapshot: bool = True, **adam_kwargs):
    return Lookahead(torch.optim.Adam(params, **adam_kwargs), k=k, alpha=alpha, late_snapshot=late_snapshot)


_THERMOLION_DEFAULTS = dict(
    lr=1e-3,
    betas=(0.9, 0.99),
    eps=1e-8,
    weight_decay=0.01,
    temp_decay=0.99,
    boost=0.5,
    scale=2.0,
    t0=1.0,
    t_min=0.01,
    noise_floor=1e-10,
    bias_correction=False,
    noise=True,
    noise_scale="grad",
)

_SPECS = [
    OptimizerSpec("adam", torch.optim.Adam, dict(lr=1e-3), "torch.optim.Adam, defaults"),
    OptimizerSpec(
        "adamw", torch.optim.AdamW, dict(lr=1e-3, weight_decay=0.01), "torch.optim.AdamW, defaults (wd 0.01)"
    ),
    OptimizerSpec("rmsprop", torch.optim.RMSprop, dict(lr=1e-3), "torch.optim.RMSprop, defaults"),
    OptimizerSpec(
        "lion", Lion, dict(lr=1e-3 / 3, betas=(0.9, 0.99), weight_decay=0.0), "Lion, lr 1e-3/3 as the notebook"
    ),
    OptimizerSpec(
        "muadam",
        MuAdam,
        dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8),
        "Adam moments without bias correction, Nesterov-style step",
    ),
    OptimizerSpec(
        "lookahead",
        _lookahead,
        dict(lr=1e-3, k=5, alpha=0.5, late_snapshot=True),
        "Lookahead(k=5, alpha=0.5) around Adam, the notebook's snapshot timing",
    ),
    OptimizerSpec(
        "swats",
        SWATS,
        dict(lr=1e-3, switch_step=300),
        "Adam switching to SGD after 300 steps (simplified, as the notebook)",
    ),
    OptimizerSpec(
        "swa",
        torch.optim.SGD,
        dict(lr=1e-2),
        "SGD (no momentum) + weight averaging",
        averaging=dict(start_epoch=6, swa_lr=0.01),
    ),
    OptimizerSpec("thermolion", ThermoLion, _THERMOLION_DEFAULTS, "ThermoLion, the author's defaults"),
    OptimizerSpec(
        "sgd",
        torch.optim.SGD,
        dict(lr=1e-2, momentum=0.9),
        "SGD with momentum 0.9 (not in the paper; a tuning-study baseline)",
    ),
]
_VARIANTS = [  # (name, base, overrides, description)
    ("thermolion_noboost", "thermolion", dict(boost=0.0), "ablation: no momentum-alignment boost"),
    ("thermolion_nonoise", "thermolion", dict(noise=False), "ablation: no thermodynamic noise"),
    ("thermolion_bc", "thermolion", dict(bias_correction=True), "ablation: Adam bias correction"),
    (
        "thermolion_unitnoise",
        "thermolion",
        dict(noise_scale="unit"),
        "noise scale sqrt(T) in sign-step units: the update is invariant to the loss scale",
    ),
    ("lookahead_textbook", "lookahead", dict(late_snapshot=False), "Lookahead with textbook snapshots"),
]

OPTIMIZERS: dict[str, OptimizerSpec] = {s.name: s for s in _SPECS}
for _name, _base, _over, _desc in _VARIANTS:
    _b = OPTIMIZERS[_base]
    OPTIMIZERS[_name] = OptimizerSpec(
        _name, _b.factory, {**_b.defaults, **_over}, _desc, averaging=_b.averaging, variant_of=_base
    )

# The nine optimizers of the paper's comparison, in the paper's order.
PAPER_OPTIMIZERS = ("adam", "adamw", "rmsprop", "lion", "muadam", "thermolion", "lookahead", "swats", "swa")


def get_spec(name: str) -> OptimizerSpec:
    try:
        return OPTIMIZERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(sorted(OPTIMIZERS))}") from None


def param_groups(model: nn.Module, weight_decay_on_norm_and_bias: bool = True) -> list[dict]:
    """Param-group policy, in one place. The paper decays every tensor (the default).

    With ``weight_decay_on_norm_and_bias=False``, 1-D tensors (biases, norm scales) and the names a
    model lists in ``no_weight_decay()`` (timm's convention, e.g. a ViT's position embedding) go
    into a group with weight_decay 0, the usual practice for larger models.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if weight_decay_on_norm_and_bias:
        return [{"params": [p for _, p in named]}]
    skip = set(getattr(model, "no_weight_decay", lambda: ())())
    groups: dict[bool, list] = {True: [], False: []}  # exempt from decay? -> params
    for n, p in named:
        groups[p.ndim <= 1 or n in skip].append(p)
    return [{"params": groups[False]}, {"params": groups[True], "weight_decay": 0.0}]


def build_optimizer(name: str, params: Iterable, **overrides) -> Optimizer:
    """Build a registered optimizer with the paper's defaults, updated by ``overrides``.

    ``params`` is an iterable of tensors or param-group dicts, or an ``nn.Module`` (all its
    trainable parameters in one group). Unknown override names raise a ValueError naming the
    accepted ones.
    """
    spec = get_spec(name)
    if isinstance(params, nn.Module):
        params = param_groups(params)
    kwargs = {**spec.defaults, **overrides}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    try:
        return spec.factory(params, **kwargs)
    except TypeError as err:
        raise ValueError(f"invalid arguments for optimizer {spec.name!r} ({spec.description}): {err}") from None
