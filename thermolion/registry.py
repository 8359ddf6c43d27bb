"""One declarative table of optimizers, built by name (in the style of timm's optim factory).

Each entry carries the defaults the paper's benchmark ran with. Ablations are entries that reuse a
factory with other defaults, never copies of code. ``build_optimizer`` is the single place
where names, defaults, overrides and the param-group policy meet.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Optional, Union

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
    # The published recipe, used with trainer.schedule=recipe: the lr schedule (runners/train/schedules.py)
    # and its warmup as a share of the run's steps. Where the constructor takes ``warmup_steps``
    # (Schedule-Free) the warmup is the optimizer's own and the schedule stays constant.
    schedule: str = "constant"
    warmup_share: float = 0.0
    # Param-group policy (``param_groups``): "all" (the paper's, decay on everything) or "muon"
    # (hidden matrices and conv filters to Muon, the rest to its AdamW fallback).
    groups: str = "all"
    # The distributions the factory's code comes from beyond torch and this package, whose versions are
    # part of a run's identity (a run made with schedulefree 1.4 is stale under 1.4.1).
    packages: tuple[str, ...] = ()


class FromPackage:
    """A factory whose class lives in another distribution, imported when first built, not when
    ``thermolion`` is imported: the optimizer installs with torch alone, and the rivals' packages come
    with the ``bench`` extra (or one by one). A missing package is one line that says what to install."""

    def __init__(self, module: str, name: str, distribution: str):
        self.module, self.name, self.distribution = module, name, distribution

    def load(self) -> type:
        try:
            module = importlib.import_module(self.module)
        except ImportError:
            raise ImportError(
                f"{self.module}.{self.name} needs the {self.distribution!r} package, which is not installed: "
                f"pip install {self.distribution} (or pip install 'thermolion[bench]' for every rival)"
            ) from None
        return getattr(module, self.name)

    def __call__(self, params: Any, **kwargs: Any) -> Optimizer:
        return self.load()(params, **kwargs)

    def __repr__(self) -> str:
        return f"FromPackage({self.module}.{self.name})"


def _muon(params, fallback_lr: float = 1e-3, **kwargs):
    """timm's Muon: Newton-Schulz-orthogonalised momentum for the groups ``param_groups(..., muon=True)``
    routes to it, and its built-in AdamW for those flagged ``use_fallback``, in one torch.optim.Optimizer
    (one state dict, one lr for the schedulers). ``fallback_lr`` is the AdamW part's lr."""
    lr = kwargs.pop("lr", 0.02)
    return _muon_class()(params, lr=lr, fallback_lr_scale=fallback_lr / lr, **kwargs)


@functools.cache
def _muon_class() -> type:
    try:
        from timm.optim import muon  # lazily: importing timm takes seconds, and it is optional
    except ImportError:
        raise ImportError(
            "the muon entry is timm's Muon, and timm is not installed: pip install timm "
            "(or pip install 'thermolion[bench]')"
        ) from None

    class Muon(muon.Muon):
        """timm's Muon, whose Newton-Schulz iteration runs in float32 on the CPU, during its own step only.

        timm runs it in bfloat16, as published, for GPUs. A CPU without bf16 units runs those GEMMs
        ~70x slower than float32 (5 iterations at 256x4096: 11 s vs 0.16 s on the project's machine).
        timm's Muon takes no dtype, so the step swaps timm's module-level function for the step's
        duration and puts it back, also on an exception: outside ``step()`` timm is unchanged. (Another
        thread running timm's Muon at the same moment would see the swap.) On CUDA it stays bfloat16.
        """

        def step(self, closure=None):
            with _newton_schulz_dtype_by_device(muon):
                return super().step(closure)

    return Muon


@contextlib.contextmanager
def _newton_schulz_dtype_by_device(module):
    original = module.zeropower_via_newtonschulz

    def by_device(G, *args, **kwargs):
        kwargs.setdefault("dtype", torch.bfloat16 if G.is_cuda else torch.float32)
        return original(G, *args, **kwargs)

    module.zeropower_via_newtonschulz = by_device
    try:
        yield
    finally:
        module.zeropower_via_newtonschulz = original


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
    noise_rng="philox",
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
    # The self-tuning rivals (+experiment=self_tuning): each from its authors' package or a maintained
    # collection, at its published defaults.
    OptimizerSpec(
        "nadamw",
        torch.optim.NAdam,
        dict(
            lr=0.0017486387539278373,
            betas=(1 - 0.06733926164, 0.9955159689799007),
            eps=1e-8,
            weight_decay=0.08121616522670176,
            decoupled_weight_decay=True,
            momentum_decay=1000.0,
        ),
        "torch.optim.NAdam, decoupled decay, with the fixed hyperparameters of AlgoPerf's self-tuning NAdamW "
        "baseline (mlcommons/algorithmic-efficiency, prize_qualification_baselines/self_tuning: lr, 1 - beta1 "
        "0.0673, beta2 0.9955, wd 0.0812, linear warmup over 2% of the steps then cosine decay). momentum_decay "
        "1000 makes torch's mu_t = beta1 (1 - 0.96^(1000 t) / 2) equal beta1 from step 1, AlgoPerf's constant "
        "momentum (torch's default 0.004 would halve it for thousands of steps)",
        schedule="warmup_cosine",
        warmup_share=0.02,
    ),
    OptimizerSpec(
        "schedulefree_adamw",
        FromPackage("schedulefree", "AdamWScheduleFree", "schedulefree"),
        dict(lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_steps=0),
        "schedulefree.AdamWScheduleFree (Defazio et al. 2024), the package's defaults; its README recommends "
        "warmup through warmup_steps without naming a length: 2% of the run (AlgoPerf's warmup share) under "
        "trainer.schedule=recipe",
        warmup_share=0.02,
        packages=("schedulefree",),
    ),
    OptimizerSpec(
        "prodigy",
        FromPackage("prodigyopt", "Prodigy", "prodigyopt"),
        dict(lr=1.0, betas=(0.9, 0.999), weight_decay=0.0, d_coef=1.0),
        "prodigyopt.Prodigy (Mishchenko & Defazio 2024), lr 1.0 and the package's defaults (decoupled decay, "
        "wd 0); scale its estimate with d_coef, as its README says, not with lr",
        packages=("prodigyopt",),
    ),
    OptimizerSpec(
        "dadapt_adam",
        FromPackage("dadaptation", "DAdaptAdam", "dadaptation"),
        dict(lr=1.0, betas=(0.9, 0.999), weight_decay=0.0, decouple=True),
        "dadaptation.DAdaptAdam (Defazio & Mishchenko 2023), lr 1.0, decoupled decay (AdamW-style, as its "
        "README advises), wd 0; this version has no d_coef: lr scales its estimate d",
        packages=("dadaptation",),
    ),
    OptimizerSpec(
        "muon",
        _muon,
        dict(lr=0.02, momentum=0.95, weight_decay=0.0, fallback_lr=1e-3, betas=(0.9, 0.95)),
        "timm.optim.Muon (Jordan et al. 2024) at timm's defaults (lr 0.02, momentum 0.95, Moonlight's "
        "match_rms_adamw scaling) on hidden matrices and conv filters flattened to 2-D, as in the CIFAR-10 "
        "speedruns; its AdamW fallback at AdamW's default lr 1e-3 on the first and last layers, biases, "
        "norms and embeddings",
        groups="muon",
        packages=("timm",),
    ),
]
_VARIANTS: list[tuple[str, str, dict[str, Any], str]] = [  # (name, base, overrides, description)
    ("thermolion_noboost", "thermolion", dict(boost=0.0), "ablation: no momentum-alignment boost"),
    ("thermolion_nonoise", "thermolion", dict(noise=False), "ablation: no thermodynamic noise"),
    ("thermolion_bc", "thermolion", dict(bias_correction=True), "ablation: Adam bias correction"),
    (
        "thermolion_torchnoise",
        "thermolion",
        dict(noise_rng="torch"),
        "the author's noise stream (torch's generator), to replay the reference code draw for draw",
    ),
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
        _name,
        _b.factory,
        {**_b.defaults, **_over},
        _desc,
        averaging=_b.averaging,
        variant_of=_base,
        groups=_b.groups,
        packages=_b.packages,
    )

# The nine optimizers of the paper's comparison, in the paper's order.
PAPER_OPTIMIZERS = ("adam", "adamw", "rmsprop", "lion", "muadam", "thermolion", "lookahead", "swats", "swa")


def get_spec(name: str) -> OptimizerSpec:
    try:
        return OPTIMIZERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(sorted(OPTIMIZERS))}") from None


def param_groups(model: nn.Module, weight_decay_on_norm_and_bias: bool = True, muon: bool = False) -> list[dict]:
    """Param-group policy, in one place. The paper decays every tensor (the default).

    With ``weight_decay_on_norm_and_bias=False``, 1-D tensors (biases, norm scales) and the names a
    model lists in ``no_weight_decay()`` (timm's convention, e.g. a ViT's position embedding) go
    into a group with weight_decay 0, the usual practice for larger models.

    With ``muon=True`` (the ``muon`` entry's policy) the hidden weight matrices and conv filters form
    the Muon groups, and everything else is flagged ``use_fallback`` for its AdamW: 1-D tensors, the
    model's ``no_weight_decay()`` names and ``nn.Embedding`` weights, and the first and last layers
    (the first and the last >= 2-D weight in registration order: the input projection and the
    classifier), as in Keller Jordan's speedruns and Moonlight.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    skip = set(getattr(model, "no_weight_decay", lambda: ())())
    embeddings = {f"{m}.weight" if m else "weight" for m, mod in model.named_modules() if isinstance(mod, nn.Embedding)}
    hidden: set[str] = set()
    if muon:
        matrices = [n for n, p in named if p.ndim >= 2 and n not in skip | embeddings]
        hidden = set(matrices[1:-1])
    groups: dict[tuple[bool, bool], list] = {}  # (to the AdamW fallback?, exempt from decay?) -> params
    for n, p in named:
        exempt = not weight_decay_on_norm_and_bias and (p.ndim <= 1 or n in skip)
        groups.setdefault((muon and n not in hidden, exempt), []).append(p)
    out = []
    for (fallback, exempt), params in sorted(groups.items()):
        group: dict[str, Any] = {"params": params}
        if exempt:
            group["weight_decay"] = 0.0
        if fallback:
            group["use_fallback"] = True
        out.append(group)
    return out


def build_optimizer(name: str, params: Union[Iterable, nn.Module], **overrides: Any) -> Optimizer:
    """Build a registered optimizer with the paper's defaults, updated by ``overrides``.

    ``params`` is an iterable of tensors or param-group dicts, or an ``nn.Module`` (all its
    trainable parameters in one group). Unknown override names raise a ValueError naming the
    accepted ones.
    """
    spec = get_spec(name)
    if isinstance(params, nn.Module):
        params = param_groups(params, muon=spec.groups == "muon")
    kwargs = {**spec.defaults, **overrides}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    try:
        return spec.factory(params, **kwargs)
    except TypeError as err:
        raise ValueError(f"invalid arguments for optimizer {spec.name!r} ({spec.description}): {err}") from None
