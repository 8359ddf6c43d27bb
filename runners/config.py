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
from thermolion import get_spec

from .checks import check_run
from .identity import plugin_package, versions
from .options import PROTOCOL_DOCS, PROTOCOLS, RERUN, SCHEDULES, ConfigError, RunOptions, is_number
from .plugins import PluginError, meta_parameters, plugin_name, resolve_target
from .tracking import LoggerConfig, parse_loggers
from .train.datasets import get_info
from .train.settings import DataConfig, TrainerConfig
from .tuning.search_space import (
    SearchSpaceError,
    apply_values,
    load_space,
    recorded_path,
    space_path,
    trial_values,
)

__all__ = [
    "TrainerConfig",
    "DataConfig",
    "OptimizerConfig",
    "RunOptions",
    "RunConfig",
    "PROTOCOLS",
    "PROTOCOL_DOCS",
    "RERUN",
    "SCHEDULES",
    "ConfigError",
]

# Trainer settings that change no number (a test shows it for every registered optimizer and model
# family): read from the trainer group, kept in RunOptions, outside the identity.
_OPTION_KEYS = tuple(f.name for f in fields(RunOptions))
# Every TrainerConfig field changes numbers but ``device``, whose resolved type (cpu, cuda) is part of
# the identity instead (runners.identity), so that device=auto and device=cuda name one run.
_IDENTITY_TRAINER_KEYS = tuple(f.name for f in fields(TrainerConfig) if f.name != "device")
# DataConfig fields that say where files are, not what is computed from them.
_FILE_KEYS = ("name", "root", "cache_dir", "download")


@dataclass(frozen=True)
class OptimizerConfig:
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    target: Optional[str] = None  # a plug-in's dotted class path (None: a registered optimizer)
    sampled: tuple[str, ...] = ()  # settings a tuning trial set (they name a plug-in's trial folders)

    def overrides(self) -> dict[str, Any]:
        """The settings that differ from the registry's defaults; for a plug-in, whose name labels it,
        only those a tuning trial sampled."""
        if self.target is not None:
            return {k: self.kwargs[k] for k in self.sampled}
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
    search_space_sha: Optional[str] = None  # its content's hash: trials of an edited file are another space
    tune_on_test: bool = False  # allow trial=N where the evaluation split is not a validation split
    exact_machine: bool = False  # reuse a finished run only on the same machine's floating-point order
    threads: Optional[int] = None  # CPU threads for this run (None: torch's default, or the launcher's)
    options: RunOptions = RunOptions()  # how the run is carried out (no number depends on it)
    loggers: LoggerConfig = LoggerConfig()  # the trackers it is watched in (logger=...; no number depends on them)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> RunConfig:
        """The typed run of a resolved config, checked (``runners.checks``); ConfigError names a bad value."""
        cfg = dict(cfg)
        cfg.pop("hydra", None)
        name, target, opt = _optimizer_settings(cfg.pop("optimizer"))
        data = dict(cfg.pop("data", {}))
        dataset = cfg.pop("dataset")
        data["name"] = dataset["name"] if isinstance(dataset, dict) else dataset
        _check_dataset(data["name"])
        opt = _scale_lr(opt, cfg.pop("lr_scale", 1.0))
        tuned_lrs, tuned_from = cfg.pop("tuned_lrs", None), cfg.pop("tuned_from", None)
        trial, space_name = cfg.pop("trial", None), cfg.pop("search_space", None)
        cfg.pop("search_space_sha", None)  # a recorded config's: derived from the space file again
        loggers = parse_loggers(cfg.pop("logger", None))
        if tuned_lrs is not None:
            if trial is not None:
                raise ConfigError("tuned_lrs and trial exclude each other: a re-run uses the chosen configuration")
            opt.update(_chosen_config(tuned_lrs, str(data["name"]), name))
        space_file, opt, sampled = _trial_settings(trial, space_name, name, opt)
        model = cfg.pop("model", {"name": "convnet"})
        model = _build(ModelConfig, {"name": model} if isinstance(model, str) else dict(model), "model")
        data = _build(DataConfig, data, "data")
        if target is not None:
            try:
                name = plugin_name(resolve_target(target, opt, meta_parameters(model, data)), name)
            except PluginError as err:
                raise ConfigError(str(err)) from None
        _check_name(name)
        trainer = dict(cfg.pop("trainer", {}))
        options = {k: trainer.pop(k) for k in _OPTION_KEYS if k in trainer}
        run = cls(
            optimizer=OptimizerConfig(name, opt, target, sampled),
            data=data,
            trainer=_build(TrainerConfig, trainer, "trainer"),
            options=_build(RunOptions, options, "trainer"),
            loggers=loggers,
            model=model,
            tuned_from=str(tuned_lrs) if tuned_lrs is not None else tuned_from,
            trial=trial,
            search_space=space_file,
            search_space_sha=_space_sha(space_file, name),
            **{
                k: cfg.pop(k)
                for k in ("protocol", "seed", "results_dir", "rerun", "tune_on_test", "exact_machine", "threads")
                if k in cfg
            },
        )
        if cfg:
            raise ConfigError(f"unknown top-level config keys: {sorted(cfg)}")
        run.validate()
        return run

    def validate(self) -> None:
        """Every check a value needs before any data is loaded (runners.checks); raises ConfigError."""
        check_run(self)

    # ------------------------------------------------------------------ identity
    def result_settings(self) -> dict[str, Any]:
        """Every setting that changes the numbers a run produces: the run's fingerprint and folder.

        Left out: where files are (data.root, cache_dir, download), RunOptions, and trainer.device,
        whose resolved type is compared as part of the identity (``runners.identity``)."""
        return {
            "protocol": self.protocol,
            "dataset": self.data.name,
            "model": self.model.resolved(),
            "seed": self.seed,
            "optimizer": self._optimizer_dict(),
            "data": {f.name: getattr(self.data, f.name) for f in fields(DataConfig) if f.name not in _FILE_KEYS},
            "trainer": {k: getattr(self.trainer, k) for k in _IDENTITY_TRAINER_KEYS},
        }

    def packages(self) -> dict[str, str]:
        """The installed versions of the packages that compute this run's numbers (run.json's ``packages``)."""
        if self.optimizer.target:
            own = [p for p in (plugin_package(self.optimizer.target),) if p]
        else:
            own = list(get_spec(self.optimizer.name).packages)
        return versions([*own, *get_info(self.data.name).packages])

    def _optimizer_dict(self) -> dict[str, Any]:
        target = {"_target_": self.optimizer.target} if self.optimizer.target else {}
        return {"name": self.optimizer.name, **target, **self.optimizer.kwargs}

    def fingerprint(self) -> str:
        blob = json.dumps(self.result_settings(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def setting_overrides(self) -> dict[str, Any]:
        """Data/trainer settings that differ from the protocol's defaults (they name the run)."""
        model = self.model.resolved()
        base = {
            **_defaults(DataConfig),
            **_defaults(TrainerConfig),
            **PROTOCOLS[self.protocol],
            "model": ModelConfig().name,
            **MODELS[model["name"]],
        }
        name = model.pop("name")
        now = {**self.result_settings()["data"], **self.result_settings()["trainer"], **model, "model": name}
        return {k: v for k, v in now.items() if base.get(k) != v}

    def labels(self) -> dict[str, str]:
        """How tables name this run: ``optimizer``, its label (name and overrides), and ``settings``, the
        data/trainer settings that differ from the protocol's (its section is ``<protocol>+<settings>``).
        The folder is named from them, and run.json records them, so that no reader parses a folder
        name back (a value such as 1e+06 holds the separator)."""
        overrides = self.optimizer.overrides()
        opt = self.optimizer.name + _slug(overrides, "_")
        if len(opt) > 100:  # long sampled configurations: a readable prefix and a hash of all values
            digest = hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:8]
            opt = f"{opt[:90]}-{digest}"
        return {"optimizer": opt, "settings": _slug(self.setting_overrides(), "")}

    def run_dir(self) -> Path:
        """``<results>/<protocol>/<dataset>/<optimizer>[_<overrides>][+<settings>]/seed<n>``."""
        labels = self.labels()
        # The settings part stays whole: it names the report section the run belongs to.
        folder = labels["optimizer"] + (f"+{labels['settings']}" if labels["settings"] else "")
        return Path(self.results_dir) / self.protocol / self.data.name / folder / f"seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "seed": self.seed,
            "results_dir": self.results_dir,
            "tuned_from": self.tuned_from,
            "trial": self.trial,
            "search_space": self.search_space,
            "search_space_sha": self.search_space_sha,
            "tune_on_test": self.tune_on_test,
            "exact_machine": self.exact_machine,
            "threads": self.threads,
            "model": asdict(self.model),
            "optimizer": self._optimizer_dict(),
            "data": asdict(self.data),
            "trainer": {**asdict(self.trainer), **asdict(self.options)},  # one group, as in conf/config.yaml
        }


# ---------------------------------------------------------------------- from_dict's steps
def _optimizer_settings(section: dict) -> tuple[Any, Optional[str], dict[str, Any]]:
    """(name, plug-in target or None, constructor settings) of the optimizer group; a name is checked."""
    opt = dict(section)
    name, target = opt.pop("name", None), opt.pop("_target_", None)
    if target is not None and "lr" in opt and opt["lr"] is None:  # custom.yaml's lr: null (unset)
        del opt["lr"]
    if target is None:
        try:
            get_spec(str(name))
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if "lr" in opt and not is_number(opt["lr"]):
        raise ConfigError(f"optimizer.lr must be a number, got {opt['lr']!r}")
    return name, target, opt


def _scale_lr(opt: dict[str, Any], lr_scale) -> dict[str, Any]:
    """lr_scale multiplies the optimizer's lr (an lr grid relative to each optimizer's default, for
    sensitivity sweeps)."""
    if not (is_number(lr_scale) and lr_scale > 0):
        raise ConfigError(f"lr_scale must be a number > 0, got {lr_scale!r}")
    if lr_scale == 1.0:
        return opt
    if "lr" not in opt:
        raise ConfigError("lr_scale multiplies optimizer.lr, and this optimizer has none; drop lr_scale")
    return {**opt, "lr": float(opt["lr"]) * lr_scale}


def _check_dataset(name) -> None:
    try:
        get_info(str(name))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _trial_settings(trial, space_name, name, opt: dict) -> tuple[Optional[str], dict, tuple[str, ...]]:
    """(the space file as run.json records it, the settings with the trial's values, the sampled names)
    of a tuning trial; trial 0 is the defaults."""
    if trial is None:
        return None, opt, ()
    if isinstance(trial, bool) or not isinstance(trial, int) or trial < 0:
        raise ConfigError(f"trial must be an integer >= 0 (0: the defaults), got {trial!r}")
    if space_name is not None and not isinstance(space_name, str):
        raise ConfigError(
            f"search_space must be a space's name (conf/search_spaces/<name>.yaml) or a path to a "
            f"YAML file, got {space_name!r}"
        )
    if space_name is None and name is None:  # a plug-in (optimizer=custom) has no space of its own name
        raise ConfigError(
            f"trial={trial}: this plug-in optimizer has no declared search space; pass one with "
            "search_space=<name under conf/search_spaces/> or search_space=<path to a YAML file> "
            "(format: conf/search_spaces/README.md), or give it optimizer.name=<name> with a space of that name"
        )
    space_file = recorded_path(space_path(space_name, str(name)))
    if trial == 0:
        return space_file, opt, ()
    try:
        space = load_space(space_path(space_file, str(name)))
        if space["optimizer"] not in (None, name):
            raise SearchSpaceError(
                f"search space {space_file} is for {space['optimizer']!r}, not {name!r}; "
                "pick one with search_space=<name or path>"
            )
        tried = apply_values(opt, trial_values(space, str(name), trial))
    except SearchSpaceError as err:
        raise ConfigError(str(err)) from None
    sampled = tuple(sorted(k for k, v in tried.items() if k not in opt or opt[k] != v))
    return space_file, tried, sampled


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _check_name(name) -> None:
    """An optimizer's name is one folder name in every run path and one label in every table."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
        raise ConfigError(
            f"optimizer.name must be one folder name of letters, digits, '.', '_' and '-' (starting with a letter "
            f"or digit), got {name!r}; e.g. optimizer.name=my_adam"
        )


def _space_sha(space_file: Optional[str], name) -> Optional[str]:
    if space_file is None:
        return None
    try:
        return hashlib.sha256(space_path(space_file, str(name)).read_bytes()).hexdigest()[:12]
    except OSError:  # trial 0 of an optimizer without a space file: the defaults only
        return None


def _chosen_config(path: str, dataset: str, optimizer: str) -> dict[str, Any]:
    """The optimizer settings chosen by ``python -m runners.tuning`` (its whole configuration, or the lr
    alone in files written before configurations were tuned)."""
    try:
        chosen = json.loads(Path(path).read_text())["chosen"]
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(
            f"tuned_lrs={path}: not a chosen-configuration file from `python -m runners.tuning` ({err})"
        ) from None
    try:
        pick = chosen[dataset][optimizer]
    except KeyError:
        raise ConfigError(
            f"tuned_lrs={path} has no configuration chosen for {optimizer} on {dataset}; "
            f"it covers {sorted((d, sorted(o)) for d, o in chosen.items())}"
        ) from None
    return dict(pick["config"]) if "config" in pick else {"lr": float(pick["lr"])}


def _defaults(cls) -> dict[str, Any]:
    return {f.name: f.default for f in fields(cls)}


def _matches(value, hint) -> bool:
    if hint is Any:
        return True
    if typing.get_origin(hint) is typing.Union:
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return is_number(value)
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
    if isinstance(v, float):  # short where that is exact, else the shortest repr that round-trips
        return f"{v:g}" if float(f"{v:g}") == v else repr(v)
    if isinstance(v, (list, tuple)):
        return "-".join(_fmt(x) for x in v)
    return str(v)


def _slug(settings: dict, lead: str) -> str:
    if not settings:
        return ""
    text = ",".join(f"{k}={_fmt(v)}" for k, v in sorted(settings.items()))
    return lead + re.sub(r"[^A-Za-z0-9=,.+_-]", "-", text)
