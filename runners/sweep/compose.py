"""A run's config composed from ``conf/`` exactly as ``run.py`` composes it, without launching it.

For tests, scripts and notebooks, so that what they run is what a user's command line runs::

    cfg = compose_run("optimizer=adamw", "dataset=mnist", "protocol=paper", "trainer.epochs=2")
    result = runners.sweep.job.train(cfg)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import RunConfig

__all__ = ["CONF_DIR", "compose_dict", "compose_run", "override"]

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def override(key: str, value: Any) -> str:
    """``key=value`` in Hydra's override grammar (booleans, None, numbers, strings and lists)."""
    if isinstance(value, str):
        return f"{key}={value}"
    return f"{key}={json.dumps(list(value) if isinstance(value, tuple) else value)}"


def compose_dict(*overrides: str) -> dict:
    """The resolved config as a plain dict (Hydra's own section left out), as ``run.py`` gets it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def compose_run(*overrides: str) -> RunConfig:
    """The typed ``RunConfig`` of ``python run.py <overrides>``."""
    return RunConfig.from_dict(compose_dict(*overrides))
