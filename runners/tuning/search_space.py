"""Declared hyperparameter search spaces and the trials drawn from them (AlgoPerf-style external tuning).

A space is a YAML file (conf/search_spaces/<name>.yaml)::

    optimizer: adamw            # the optimizer it tunes (registry name or plug-in name)
    params:
      lr:           {low: 1.0e-5, high: 1.0e-1, scale: log}
      weight_decay: {low: 1.0e-5, high: 1.0, scale: log, p_zero: 0.2}
      beta1:        {low: 1.0e-3, high: 0.5, scale: one_minus_log}   # samples 1 - beta1 on a log scale

Scales: ``log`` (log-uniform), ``linear``, ``one_minus_log`` (1 - x with x log-uniform in
[low, high], for momenta). ``p_zero`` puts that much probability on exactly 0 (the lowest part of
the unit interval maps to 0). ``beta1``/``beta2`` become the constructor's ``betas`` pair.

``trial=0`` is the optimizer's default configuration (the "no tuning" point); ``trial=i`` for i >= 1 is
point i-1 of a scrambled Sobol sequence (scipy.stats.qmc) seeded by (optimizer, space), reached with
``fast_forward``: the same on every machine and Slurm task, and unchanged when the budget N grows.
Values are rounded to 4 significant digits, so what names the run folder is exactly what ran.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Any, Optional

import yaml

__all__ = ["SearchSpaceError", "SCALES", "load_space", "space_path", "recorded_path", "trial_values", "apply_values"]

ROOT = Path(__file__).resolve().parents[2]
SCALES = ("log", "linear", "one_minus_log")
_KEYS = {"low", "high", "scale", "p_zero"}


class SearchSpaceError(ValueError):
    pass


def space_path(search_space: Optional[str], optimizer: str) -> Path:
    """A space by file path, or by name under conf/search_spaces/ (default: the optimizer's name).

    A relative path is taken from the current folder, else from the checkout (as run.json records it).
    """
    name = str(search_space or optimizer)
    if not name.endswith((".yaml", ".yml")) and "/" not in name:
        return ROOT / "conf" / "search_spaces" / f"{name}.yaml"
    path = Path(name)
    if not path.is_absolute() and not path.exists() and (ROOT / path).exists():
        return ROOT / path
    return path


def recorded_path(path: Path) -> str:
    """How run.json names a space file: relative to the checkout when inside it, never a machine path."""
    path = Path(path).resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def load_space(path: Path) -> dict:
    """The validated space: {"optimizer": name, "params": {name: {low, high, scale, p_zero}}}."""
    where = f"search space {path}"
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise SearchSpaceError(
            f"{where} does not exist; the declared spaces are "
            f"{sorted(p.stem for p in (ROOT / 'conf' / 'search_spaces').glob('*.yaml'))} "
            "(or give search_space=<path to a YAML file>)"
        ) from None
    except (OSError, yaml.YAMLError) as err:
        raise SearchSpaceError(f"{where} is not readable YAML ({err})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("params"), dict) or not raw["params"]:
        raise SearchSpaceError(f"{where} must have 'optimizer' and a non-empty 'params' mapping")
    params = {}
    for name, spec in raw["params"].items():
        if not isinstance(spec, dict) or not {"low", "high", "scale"} <= set(spec) or set(spec) - _KEYS:
            raise SearchSpaceError(f"{where}: {name} needs low, high and scale (and optionally p_zero), got {spec!r}")
        low, high, scale, p_zero = spec["low"], spec["high"], spec["scale"], spec.get("p_zero", 0.0)
        if scale not in SCALES:
            raise SearchSpaceError(f"{where}: {name}.scale must be one of {SCALES}, got {scale!r}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high, p_zero)):
            raise SearchSpaceError(f"{where}: {name}'s low, high and p_zero must be numbers")
        if not low < high or (scale != "linear" and low <= 0) or (scale == "one_minus_log" and high >= 1):
            raise SearchSpaceError(
                f"{where}: {name} needs low < high{', both > 0' if scale != 'linear' else ''}"
                f"{' and high < 1' if scale == 'one_minus_log' else ''}; got [{low}, {high}]"
            )
        if not 0.0 <= p_zero < 1.0:
            raise SearchSpaceError(f"{where}: {name}.p_zero must be in [0, 1), got {p_zero}")
        params[str(name)] = {"low": float(low), "high": float(high), "scale": scale, "p_zero": float(p_zero)}
    return {"optimizer": raw.get("optimizer"), "params": params}


def _seed(optimizer: str, space: dict) -> int:
    blob = json.dumps({"optimizer": optimizer, "params": space["params"]}, sort_keys=True)
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8], "little")


def _map(u: float, spec: dict) -> float:
    if u < spec["p_zero"]:
        return 0.0
    u = (u - spec["p_zero"]) / (1.0 - spec["p_zero"])
    low, high = spec["low"], spec["high"]
    if spec["scale"] == "linear":
        value = low + u * (high - low)
    else:
        value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    value = float(f"{value:.4g}")
    return float(f"{1.0 - value:.6g}") if spec["scale"] == "one_minus_log" else value


def trial_values(space: dict, optimizer: str, trial: int) -> dict[str, float]:
    """The hyperparameters of ``trial`` (>= 1) in ``space`` for ``optimizer``."""
    from scipy.stats import qmc

    if trial < 1:
        raise SearchSpaceError(f"trial {trial}: trial 0 is the default configuration; sampled trials start at 1")
    names = sorted(space["params"])
    sampler = qmc.Sobol(d=len(names), scramble=True, seed=_seed(optimizer, space))
    with warnings.catch_warnings():  # Sobol's balance warning concerns sample sizes, not single points
        warnings.simplefilter("ignore")
        if trial > 1:  # scipy's fast_forward(0) overflows
            sampler.fast_forward(trial - 1)
        point = sampler.random(1)[0]
    return {name: _map(float(u), space["params"][name]) for name, u in zip(names, point)}


def apply_values(kwargs: dict[str, Any], values: dict[str, float]) -> dict[str, Any]:
    """Optimizer keyword arguments with the trial's values in place (beta1/beta2 -> betas)."""
    out = dict(kwargs)
    betas = list(out.get("betas", (0.9, 0.999)))
    for name, value in values.items():
        if name in ("beta1", "beta2"):
            betas[name == "beta2"] = value
            out["betas"] = betas
        else:
            out[name] = value
    return out
