"""Plug-in optimizers: a ``_target_`` dotted path resolved with importlib at the config boundary.

Any importable class with torch.optim's constructor shape ``(params, lr=..., **kwargs)`` works:

    python run.py optimizer=custom optimizer._target_=torch.optim.SGD optimizer.lr=0.05 \
        ++optimizer.momentum=0.9 optimizer.name=sgd_momentum

Each failure is one line naming the target: a module or class that does not exist, a class that
is not an optimizer, and keyword arguments the constructor rejects (checked by building it once
on a one-element parameter, so the run fails before any data is loaded).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Optional

import torch

from thermolion import OPTIMIZERS

__all__ = ["PluginError", "resolve_target", "plugin_name", "source_files"]


class PluginError(ValueError):
    pass


def resolve_target(target: str, kwargs: dict) -> type:
    """The optimizer class ``target`` names, checked against ``kwargs``."""
    where = f"optimizer._target_={target}"
    module_name, _, attr = str(target).rpartition(".")
    if not module_name or not attr:
        raise PluginError(f"{where}: give a dotted path module.Class, e.g. torch.optim.SGD")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise PluginError(
            f"{where}: cannot import module {module_name!r} ({err}); is it on PYTHONPATH (the checkout's folders are)?"
        ) from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise PluginError(f"{where}: module {module_name!r} has no {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise PluginError(f"{where} is not a torch.optim.Optimizer subclass (it is {cls!r})")
    if "lr" not in kwargs:
        raise PluginError(f"{where}: set optimizer.lr (the constructor shape is (params, lr=..., **kwargs))")
    try:
        cls([torch.nn.Parameter(torch.zeros(1))], **kwargs)
    except (TypeError, ValueError) as err:
        raise PluginError(f"{where} rejects the arguments {kwargs}: {err}") from None
    return cls


def plugin_name(cls: type, name: Optional[str]) -> str:
    """``name``, or the class name lowercased; never a registered optimizer's name."""
    label = str(name) if name else cls.__name__.lower()
    if label.lower() in OPTIMIZERS:
        raise PluginError(
            f"optimizer name {label!r} is a registered optimizer's; give the plug-in "
            f"another name with optimizer.name=..."
        )
    return label


def source_files(target: str) -> list[Path]:
    """The plug-in's own source file when it is user code (not an installed package or the stdlib)."""
    module = sys.modules.get(str(target).rpartition(".")[0])
    path = inspect.getsourcefile(module) if module is not None else None
    if path is None or "site-packages" in path or path.startswith(sys.base_prefix):
        return []
    return [Path(path)]
