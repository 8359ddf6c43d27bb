"""Plain typed run configuration: the one boundary where Hydra's config becomes Python objects.

``RunConfig.from_dict`` takes the resolved config as a plain dict (``run.py`` does the
``OmegaConf.to_container``); nothing below this module imports Hydra.
"""

from __future__ import annotations

import hashlib
import json
import re
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from models import MODELS, ModelConfig
from thermolion import build_optimizer, get_spec

from .augment import AUGMENTATIONS
from .data import DataConfig, get_info
from .plugins import PluginError, plugin_name, resolve_target, source_files
from .search_space import SearchSpaceError, apply_values, load_space, space_path, trial_values

__all__ = ["TrainerConfig", "OptimizerConfig", "RunConfig", "PROTOCOLS", "RERUN", "SCHEDULES", "ConfigError"]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names it and the accepted values."""


RERUN = (None, "stale", "all")  # which finished runs a relaunch trains again (None: none)
SCHEDULES = ("constant", "cosine", "warmup_cosine")


# Each protocol's defaults: the Hydra presets in conf/protocol/ set exactly these (a test checks),
# and run folders name only what differs from them.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "paper": dict(train_subset=5000, eval_split="train", batch_size=1024, epochs=12),
    "rigorous": dict(train_subset=None, eval_split="test", batch_size=128, epochs=12),
    "tuned": dict(train_subset=None, eval_split="val", batch_size=128, epochs=12),
}


@dataclass(frozen=True)
class TrainerConfig:
    epochs: int = 12
    batch_size: int = 128
    device: str = "auto"  # auto: cuda when available, else cpu
    deterministic: bool = False
    compile: bool = False  # torch.compile the model (GPU)
    amp: bool = False  # bf16 autocast (GPU)
    channels_last: bool = False  # (GPU)
    track_stats: bool = True  # ThermoLion's phase diagnostics, per epoch
    checkpoint: bool = True  # per-epoch checkpoint, so that a killed run resumes
    progress: str = "auto"  # auto: a tqdm bar when attached to a terminal; "on"/"off"
    schedule: str = "constant"  # per-step lr schedule: constant (the paper's) | cosine | warmup_cosine
    warmup_steps: int = 0  # linear warmup steps of warmup_cosine
    grad_clip: Optional[float] = None  # clip the global gradient norm to this (off by default)
    eval_every_steps: Optional[int] = None  # also evaluate every this many steps (evals.csv; off by default)


@dataclass(frozen=True)
class OptimizerConfig:
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    target: Optional[str] = None  # a plug-in's dotted class path (None: a registered optimizer)

    def overrides(self) -> dict[str, Any]:
        """The settings that differ from the registry's defaults (none for a plug-in: its name labels it)."""
        if self.target is not None:
            return {}
        defaults = get_spec(self.name).defaults
        out = {}
        for k, v in self.kwargs.items():
            d = defaults.get(k)
            same = (list(v) == list(d)) if isinstance(v, (list, tuple)) and isinstance(d, (list, tuple)) else v == d
            if k not in defaults or not same:
                out[k] = v
        return out


@dataclass(frozen=True)
class RunConfig:
    optimizer: OptimizerConfig
    data: DataConfig
    trainer: TrainerConfig
    protocol: str = "rigorous"
    model: ModelConfig = ModelConfig()
    seed: int = 0
    results_dir: str = "outputs"
    tuned_from: Optional[str] = None  # chosen-lr file the lr came from (tuned protocol re-runs)
    rerun: Optional[str] = None  # stale | all: re-train finished runs (not part of a run's identity)
    trial: Optional[int] = None  # tuning trial: 0 = the defaults, i >= 1 = point i of the search space
    search_space: Optional[str] = None  # the space file the trial was drawn from

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "RunConfig":
        cfg = dict(cfg)
        cfg.pop("hydra", None)
        opt = dict(cfg.pop("optimizer"))
        name, target = opt.pop("name", None), opt.pop("_target_", None)
        if target is None:
            try:
                get_spec(str(name))
            except ValueError as err:
                raise ConfigError(str(err)) from None
        # lr_scale multiplies the optimizer's lr (an lr grid relative to each optimizer's default,
        # for sensitivity sweeps); tuned_lrs takes the lr chosen by `python -m runners.tune`.
        lr_scale = cfg.pop("lr_scale", 1.0)
        tuned_lrs = cfg.pop("tuned_lrs", None)
        tuned_from = cfg.pop("tuned_from", None)  # present in to_dict() output
        trial, space_name = cfg.pop("trial", None), cfg.pop("search_space", None)
        if not (isinstance(lr_scale, (int, float)) and lr_scale > 0):
            raise ConfigError(f"lr_scale must be a number > 0, got {lr_scale!r}")
        if "lr" in opt and not _is_number(opt["lr"]):
            raise ConfigError(f"optimizer.lr must be a number, got {opt['lr']!r}")
        if lr_scale != 1.0:
            opt["lr"] = float(opt["lr"]) * lr_scale
        data = dict(cfg.pop("data", {}))
        dataset = cfg.pop("dataset")
        data["name"] = dataset["name"] if isinstance(dataset, dict) else dataset
        if tuned_lrs is not None:
            if trial is not None:
                raise ConfigError("tuned_lrs and trial exclude each other: a re-run uses the chosen configuration")
            opt.update(_chosen_config(tuned_lrs, str(data["name"]), name))
        space_file = None
        if trial is not None:
            if isinstance(trial, bool) or not isinstance(trial, int) or trial < 0:
                raise ConfigError(f"trial must be an integer >= 0 (0: the defaults), got {trial!r}")
            space_file = str(space_path(space_name, str(name)))
            if trial > 0:
                try:
                    space = load_space(Path(space_file))
                    if space["optimizer"] not in (None, name):
                        raise SearchSpaceError(f"search space {space_file} is for {space['optimizer']!r}, "
                                               f"not {name!r}; pick one with search_space=<name or path>")
                    opt = apply_values(opt, trial_values(space, str(name), trial))
                except SearchSpaceError as err:
                    raise ConfigError(str(err)) from None
        try:
            get_info(data["name"])
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if target is not None:
            try:
                name = plugin_name(resolve_target(target, opt), name)
            except PluginError as err:
                raise ConfigError(str(err)) from None
        model = cfg.pop("model", {"name": "convnet"})
        model = {"name": model} if isinstance(model, str) else dict(model)
        run = cls(
            optimizer=OptimizerConfig(name, opt, target),
            data=_build(DataConfig, data, "data"),
            trainer=_build(TrainerConfig, dict(cfg.pop("trainer", {})), "trainer"),
            model=_build(ModelConfig, model, "model"),
            tuned_from=str(tuned_lrs) if tuned_lrs is not None else tuned_from,
            trial=trial, search_space=space_file,
            **{k: cfg.pop(k) for k in ("protocol", "seed", "results_dir", "rerun") if k in cfg},
        )
        if cfg:
            raise ConfigError(f"unknown top-level config keys: {sorted(cfg)}")
        run.validate()
        return run

    def validate(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {self.protocol!r}; choose one of {sorted(PROTOCOLS)}")
        try:
            model = self.model.resolved()
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for name in ("epochs", "batch_size"):
            if getattr(self.trainer, name) < 1:
                raise ConfigError(f"trainer.{name} must be >= 1, got {getattr(self.trainer, name)}")
        if self.trainer.progress not in ("auto", "on", "off"):
            raise ConfigError(f"trainer.progress must be auto, on or off, got {self.trainer.progress!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.rerun not in RERUN:
            raise ConfigError(f"rerun must be stale or all (or null: keep finished runs), got {self.rerun!r}")
        if self.data.image_size < 8 or (model["name"] != "resnet18" and self.data.image_size % 4):
            raise ConfigError(f"data.image_size must be a multiple of 4 and >= 8 (the convnet pools twice by 2, "
                              f"the ViT's patches are 4x4), got {self.data.image_size}")
        if self.data.augment not in AUGMENTATIONS:
            raise ConfigError(f"data.augment must be one of {', '.join(AUGMENTATIONS)}, got {self.data.augment!r}")
        t = self.trainer
        if t.schedule not in SCHEDULES:
            raise ConfigError(f"trainer.schedule must be one of {', '.join(SCHEDULES)}, got {t.schedule!r}")
        if t.warmup_steps < 0 or (t.warmup_steps > 0) != (t.schedule == "warmup_cosine"):
            raise ConfigError(f"trainer.warmup_steps must be >= 1 with schedule=warmup_cosine and 0 otherwise, "
                              f"got {t.warmup_steps} with schedule={t.schedule}")
        if t.eval_every_steps is not None and t.eval_every_steps < 1:
            raise ConfigError(f"trainer.eval_every_steps must be >= 1 (or null: per epoch only), got {t.eval_every_steps}")
        if t.grad_clip is not None and not t.grad_clip > 0:
            raise ConfigError(f"trainer.grad_clip must be > 0 (or null: off), got {t.grad_clip}")
        if self.optimizer.target is None and get_spec(self.optimizer.name).averaging:
            if t.schedule != "constant":
                raise ConfigError(f"{self.optimizer.name} runs its own SWA lr schedule; use trainer.schedule=constant")
            if model["name"] != "convnet":
                raise ConfigError(f"{self.optimizer.name} evaluates the averaged weights without recomputing "
                                  f"BatchNorm statistics (as the notebook); use it with model=convnet")
        for key, value in self.optimizer.kwargs.items():
            if key in ("lr", "weight_decay", "eps", "momentum") and not _is_number(value):
                raise ConfigError(f"optimizer.{key} must be a number, got {value!r}")
        if not self.optimizer.kwargs.get("lr", 1.0) > 0:
            raise ConfigError(f"optimizer.lr must be > 0, got {self.optimizer.kwargs['lr']}")
        if self.optimizer.target is None:  # plug-ins were built once when resolved
            import torch

            try:
                build_optimizer(self.optimizer.name, [torch.nn.Parameter(torch.zeros(1))], **self.optimizer.kwargs)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"optimizer {self.optimizer.name}: {err}") from None

    def code_files(self) -> list[Path]:
        """Source files beyond the project's own that determine this run's numbers (a plug-in's)."""
        return source_files(self.optimizer.target) if self.optimizer.target else []

    # ------------------------------------------------------------------ identity
    def result_settings(self) -> dict[str, Any]:
        """Everything that changes the numbers a run produces (not where it runs or how fast)."""
        return {
            "protocol": self.protocol, "dataset": self.data.name, "model": self.model.resolved(), "seed": self.seed,
            "optimizer": self._optimizer_dict(),
            "data": {k: getattr(self.data, k) for k in ("image_size", "train_subset", "eval_split",
                                                        "val_fraction", "test_fraction", "label_noise", "augment")},
            # eval_every_steps is left out: evaluating in between changes no number (a test checks).
            "trainer": {k: getattr(self.trainer, k) for k in ("epochs", "batch_size", "amp", "schedule",
                                                              "warmup_steps", "grad_clip")},
        }

    def _optimizer_dict(self) -> dict[str, Any]:
        target = {"_target_": self.optimizer.target} if self.optimizer.target else {}
        return {"name": self.optimizer.name, **target, **self.optimizer.kwargs}

    def fingerprint(self) -> str:
        blob = json.dumps(self.result_settings(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def setting_overrides(self) -> dict[str, Any]:
        """Data/trainer settings that differ from the protocol's defaults (they name the run)."""
        model = self.model.resolved()
        base = {**PROTOCOLS[self.protocol], "image_size": 32, "label_noise": 0.0, "val_fraction": 0.1,
                "test_fraction": 0.2, "amp": False, "augment": "none", "schedule": "constant", "warmup_steps": 0,
                "grad_clip": None, "model": "convnet", **MODELS[model["name"]]}
        name = model.pop("name")
        now = {**self.result_settings()["data"], **self.result_settings()["trainer"], **model, "model": name}
        return {k: v for k, v in now.items() if base.get(k) != v}

    def run_dir(self) -> Path:
        """``<results>/<protocol>/<dataset>/<optimizer>[_<overrides>][+<settings>]/seed<n>``."""
        overrides = self.optimizer.overrides()
        opt = self.optimizer.name + _slug(overrides, "_")
        if len(opt) > 100:  # long sampled configurations: a readable prefix and a hash of all values
            digest = hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:8]
            opt = f"{opt[:90]}-{digest}"
        # The settings part stays whole: it names the report section the run belongs to.
        return Path(self.results_dir) / self.protocol / self.data.name / (opt + _slug(self.setting_overrides(), "+")) \
            / f"seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "seed": self.seed, "results_dir": self.results_dir,
                "tuned_from": self.tuned_from, "trial": self.trial, "search_space": self.search_space,
                "model": asdict(self.model), "optimizer": self._optimizer_dict(),
                "data": asdict(self.data), "trainer": asdict(self.trainer)}


def _chosen_config(path: str, dataset: str, optimizer: str) -> dict[str, Any]:
    """The optimizer settings chosen by ``python -m runners.tune`` (its whole configuration, or the lr
    alone in files written before configurations were tuned)."""
    try:
        chosen = json.loads(Path(path).read_text())["chosen"]
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"tuned_lrs={path}: not a chosen-configuration file from `python -m runners.tune` "
                          f"({err})") from None
    try:
        pick = chosen[dataset][optimizer]
    except KeyError:
        raise ConfigError(f"tuned_lrs={path} has no configuration chosen for {optimizer} on {dataset}; "
                          f"it covers {sorted((d, sorted(o)) for d, o in chosen.items())}") from None
    return dict(pick["config"]) if "config" in pick else {"lr": float(pick["lr"])}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _matches(value, hint) -> bool:
    if hint is Any:
        return True
    if typing.get_origin(hint) is typing.Union:
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return _is_number(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typing.get_origin(hint) or hint)


def _build(cls, values: dict, section: str):
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown {section} settings {unknown}; known: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if not _matches(value, hints[key]):
            expected = str(hints[key]).replace("typing.", "").replace("<class '", "").replace("'>", "")
            raise ConfigError(f"{section}.{key} must be {expected}, got {value!r}")
    return cls(**values)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "-".join(_fmt(x) for x in v)
    return str(v)


def _slug(settings: dict, lead: str) -> str:
    if not settings:
        return ""
    text = ",".join(f"{k}={_fmt(v)}" for k, v in sorted(settings.items()))
    return lead + re.sub(r"[^A-Za-z0-9=,.+_-]", "-", text)
