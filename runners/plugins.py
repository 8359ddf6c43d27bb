"""Plug-in optimizers: a ``_target_`` dotted path resolved with importlib at the config boundary.

Any importable class with torch.optim's constructor shape ``(params, lr=..., **kwargs)`` works:

    python run.py optimizer=custom optimizer._target_=torch.optim.SGD optimizer.lr=0.05 \
        ++optimizer.momentum=0.9 optimizer.name=sgd_momentum

Each failure is one line naming the target: a module or class that does not exist, a class that
is not an optimizer, and keyword arguments the constructor rejects (checked by building it once
on a one-element parameter, or on the model's parameters on the meta device for a class that takes
only some shapes, so the run fails before any data is loaded). A learning-rate-free class, whose
constructor has no ``lr`` (COCOB in ``parameterfree``), runs without optimizer.lr.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Optional

import torch

from thermolion import OPTIMIZERS

from .train.build import load_class

__all__ = ["PluginError", "resolve_target", "meta_parameters", "plugin_name"]


class PluginError(ValueError):
    pass


def resolve_target(target: str, kwargs: dict, model_parameters: Optional[Callable[[], list]] = None) -> type:
    """The optimizer class ``target`` names, checked against ``kwargs``.

    The constructor is tried once on a one-element parameter; a class that rejects it (one that
    takes only some shapes) is tried again on the model's own parameters, ``model_parameters()``
    (built on the meta device: no memory, no data). A class that accepts the model's 2-D
    parameters alone is a 2-D-only method (torch.optim.Muon): the error points to optimizer=muon.
    """
    where = f"optimizer._target_={target}"
    module_name, _, attr = str(target).rpartition(".")
    if not module_name or not attr:
        raise PluginError(f"{where}: give a dotted path module.Class, e.g. torch.optim.SGD")
    try:
        cls = load_class(target)  # the one resolver, shared with the run's build
    except ImportError as err:
        raise PluginError(
            f"{where}: cannot import module {module_name!r} ({err}); is it on PYTHONPATH (the checkout's folders are)?"
        ) from None
    except AttributeError:
        raise PluginError(f"{where}: module {module_name!r} has no {attr!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise PluginError(f"{where} is not a torch.optim.Optimizer subclass (it is {cls!r})")
    takes = inspect.signature(cls.__init__).parameters
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in takes.values())
    if "lr" in takes and "lr" not in kwargs:
        raise PluginError(f"{where}: set optimizer.lr (the constructor shape is (params, lr=..., **kwargs))")
    if "lr" not in takes and not any_keyword and "lr" in kwargs:
        raise PluginError(f"{where} takes no lr (a learning-rate-free method); drop optimizer.lr")
    try:
        cls([torch.nn.Parameter(torch.zeros(1))], **kwargs)
        return cls
    except (TypeError, ValueError) as err:
        first = err
    if model_parameters is None:
        raise PluginError(f"{where} rejects the arguments {kwargs}: {first}") from None
    params = model_parameters()
    try:
        cls(params, **kwargs)
        return cls
    except (TypeError, ValueError) as err:
        on_model = err
    try:
        cls([p for p in params if p.ndim == 2], **kwargs)
    except (TypeError, ValueError):
        raise PluginError(f"{where} rejects the arguments {kwargs} on the model's parameters: {on_model}") from None
    raise PluginError(
        f"{where} takes 2-D parameters only ({on_model}), and the model also has biases, norms and conv filters: "
        "use optimizer=muon (Muon on the hidden matrices and conv filters, AdamW on the rest)"
    )


def meta_parameters(model, data) -> Callable[[], list]:
    """The parameters of the run's model (a ModelConfig, for a DataConfig's dataset), built on the meta device."""

    def build() -> list:
        from models import build_model
        from runners.train.datasets import get_info

        info = get_info(data.name)
        with torch.device("meta"):
            return list(build_model(model, info.channels, info.num_classes, data.image_size).parameters())

    return build


def plugin_name(cls: type, name: Optional[str]) -> str:
    """``name``, or the class name lowercased; never a registered optimizer's name."""
    label = str(name) if name else cls.__name__.lower()
    if label.lower() in OPTIMIZERS:
        raise PluginError(
            f"optimizer name {label!r} is a registered optimizer's; give the plug-in "
            f"another name with optimizer.name=..."
        )
    return label
