"""Every run of a command checked before Hydra starts anything.

A sweep is expanded the way Hydra's basic sweeper expands it (an experiment's ``hydra.sweeper.params``
first, then the command's overrides) and each job's config goes through ``RunConfig.from_dict``: one
bad job refuses the whole sweep before its first run trains, and a refused command leaves no folder
behind (not even Hydra's own ``.hydra/runs/<time>``). ``runners.status`` lists a sweep's planned runs
through the same expansion.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["sweep_jobs", "compose_jobs", "check_command"]

# Hydra's own flags: with any of these the command is not a plain run or sweep, and Hydra handles it.
_MULTIRUN = ("-m", "--multirun")


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The override list of every job of ``run.py -m <overrides>``, in launch order."""
    return _plan(overrides, multirun=True)[1]


def _plan(overrides: list[str], multirun: bool) -> tuple[bool, list[list[str]]]:
    """(whether the command is a sweep, each job's overrides). An experiment that sets
    ``hydra.mode: MULTIRUN`` makes a sweep without ``-m``."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .compose import CONF_DIR

    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):  # the experiment's own sweep
        hydra_cfg = compose(config_name="config", overrides=fixed, return_hydra_config=True).hydra
    if not (multirun or getattr(hydra_cfg.get("mode"), "name", None) == "MULTIRUN"):
        return False, [list(overrides)]
    params = hydra_cfg.sweeper.get("params")
    expanded = parser.parse_overrides([f"{k}={v}" for k, v in (params or {}).items()] + overrides)
    return True, [list(job) for job in BasicSweeper.split_arguments(expanded, None)[0]]


def check_command(argv: list[str]) -> Optional[str]:
    """Why ``python run.py <argv>`` must not start (one line), or None when every run is valid.

    Commands with Hydra's own flags (``--help``, ``--cfg``, ``-cd`` ...) are left to Hydra. Overrides
    Hydra itself rejects (an unknown group option, an unknown key, bad grammar) are said in one line
    naming the valid choices, where Hydra prints 13 to 30."""
    multirun = any(a in _MULTIRUN for a in argv)
    overrides = [a for a in argv if a not in _MULTIRUN]
    if any(a.startswith("-") for a in overrides):
        return None
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from ..config import ConfigError, RunConfig

    try:
        twice = given_twice(overrides)
        if twice:
            return twice
        multirun, jobs = _plan(overrides, multirun)
        configs = compose_jobs(jobs)
    except (HydraException, OmegaConfBaseException) as err:
        return hydra_error_line(err)
    for i, (job, cfg) in enumerate(zip(jobs, configs)):
        try:
            RunConfig.from_dict(cfg)
        except ConfigError as err:
            if not multirun:
                return f"invalid config: {err}"
            shown = " ".join(o for o in job if not o.startswith("hydra")) or "(no overrides)"
            return f"invalid config in job {i} of {len(jobs)} ({shown}): {err}; no run of this sweep was started"
    return None


def compose_jobs(jobs: list[list[str]]) -> list[dict]:
    """Each job's resolved config as ``run.py`` receives it, composed under one Hydra initialisation."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from .compose import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return [OmegaConf.to_container(compose(config_name="config", overrides=job), resolve=True) for job in jobs]


def hydra_error_line(err: Exception) -> str:
    """One line for an error Hydra or OmegaConf raised while composing a command."""
    from hydra.errors import MissingConfigException

    missing = getattr(err, "missing_cfg_file", None)
    if isinstance(err, MissingConfigException) and missing and "/" in missing and err.options:
        group, _, option = missing.rpartition("/")
        where = f"conf/{group}/" + (" and the installed Hydra plugins" if group.startswith("hydra/") else "")
        return f"{group}={option} is not an option of {group} ({where}); choose one of: {', '.join(err.options)}"
    text = str(err).strip()
    lines = [ln.strip() for ln in text.split("\n\n", 1)[0].splitlines() if ln.strip()]
    first = lines[0] if lines else type(err).__name__
    if first.startswith("Could not override"):  # an unknown key: Hydra's hint (+key=value) is the next line
        key = first.split("'")[1] if "'" in first else first
        return (
            f"{key} is not a setting of this config (python run.py --cfg job lists them); "
            f"to add a new key on purpose, write +{key}=..."
        )
    return " ".join(lines[:2])


def given_twice(overrides: list[str]) -> Optional[str]:
    """One line when a config group is picked twice in one command: Hydra keeps the last silently
    (``logger=tensorboard logger=mlflow`` runs MLflow alone, where both were meant). A plain value given
    twice keeps Hydra's last-one-wins, which composing a base command with an override relies on."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .compose import CONF_DIR

    seen: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if not ((CONF_DIR / key).is_dir() or key.startswith("hydra/")):
            continue
        key += f"@{override.package}" if override.package else ""
        if key in seen:
            several = f"; for several at once write {key}=[a,b]" if key == "logger" else ""
            return (
                f"{key} is given twice ({seen[key]} and {override.input_line}): Hydra would keep the last one; "
                f"give it once{several}"
            )
        seen[key] = override.input_line
    return None
