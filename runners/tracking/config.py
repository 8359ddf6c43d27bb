"""The ``logger:`` section as plain typed objects, checked before any run starts."""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass, field
from typing import Any

from ..options import ConfigError
from ..train.build import load_class

__all__ = ["TrackerSpec", "LoggerConfig", "parse_loggers", "EXTRA"]

EXTRA = "pip install -e '.[tracking]'"  # pyproject.toml's optional dependencies of the built-in trackers


@dataclass(frozen=True)
class TrackerSpec:
    name: str  # the section's key: tensorboard, mlflow, wandb, or a user's own
    target: str  # the tracker class's dotted path (runners.tracking.base.Tracker's interface)
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoggerConfig:
    every_steps: int = 1  # the training loss every this many steps
    trackers: tuple[TrackerSpec, ...] = ()


def parse_loggers(section) -> LoggerConfig:
    """``LoggerConfig`` of the resolved ``logger:`` section; ConfigError names what is wrong (a tracker
    whose package is missing included), so that a sweep is refused before its first run."""
    section = dict(section or {})
    every = section.pop("every_steps", 1)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"logger.every_steps must be an integer >= 1, got {every!r}")
    return LoggerConfig(every, tuple(_spec(name, entry) for name, entry in section.items()))


def _spec(name: str, entry) -> TrackerSpec:
    if not isinstance(entry, dict) or "_target_" not in entry:
        raise ConfigError(
            f"logger.{name} is not a tracker section (a mapping with a _target_); pick trackers with "
            "logger=tensorboard, logger=mlflow, logger=wandb or logger=[tensorboard,mlflow] (conf/logger/)"
        )
    kwargs = dict(entry)
    target = str(kwargs.pop("_target_"))
    try:
        cls = load_class(target)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"logger.{name}._target_={target} cannot be imported ({err})") from None
    missing = [p for p in getattr(cls, "packages", ()) if importlib.util.find_spec(p) is None]
    if missing:
        raise ConfigError(f"logger={name} needs {', '.join(missing)}, which is not installed: {EXTRA}")
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        accepted = [p for p in inspect.signature(cls).parameters if p != "self"]
        raise ConfigError(f"logger.{name}: {err}; its settings are {accepted}") from None
    check = getattr(cls, "check", None)
    if callable(check):
        try:
            check(kwargs)
        except ValueError as err:
            raise ConfigError(f"logger.{name}: {err}") from None
    return TrackerSpec(name, target, kwargs)
