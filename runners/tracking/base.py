"""What a tracker is given, and the three calls it answers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

__all__ = ["RunMeta", "Tracker", "Points", "flatten", "run_meta"]

Points = list[tuple[int, dict[str, float]]]  # (global training step, metrics at that step), steps ascending


@dataclass(frozen=True)
class RunMeta:
    key: str  # the run folder under results_dir: paper/mnist/thermolion/seed0
    config_key: str  # the same without the seed: the configuration a run's seeds share
    results_dir: Path
    run_dir: Path
    params: dict[str, Any]  # the resolved config, flattened (optimizer.lr, trainer.batch_size, ...)
    tags: dict[str, str]  # protocol, dataset, optimizer, model, seed, code_version, run_dir, config


class Tracker:
    """A tracker over its own library. Each call may raise: ``Trackers`` then switches it off."""

    packages: tuple[str, ...] = ()  # what it imports; checked at the config boundary

    @classmethod
    def check(cls, settings: dict) -> None:
        """Refuse settings that cannot work (an unreachable server, a path that cannot exist) before the
        sweep starts: raise ValueError with one line saying what and how to fix it. Optional."""

    def start(self, run: RunMeta, resume: Optional[dict], logged_step: int) -> dict:
        """Open the tracker run (or continue ``resume``, the state an earlier attempt returned, whose
        points up to ``logged_step`` are already logged); returns the state to keep in run.json."""
        raise NotImplementedError

    def log(self, points: Points) -> None:
        raise NotImplementedError

    def finish(self, status: str, final: dict[str, float], step: int) -> None:
        """Record the outcome (done, diverged, failed, killed) and the final metrics (at ``step``, the
        last finished epoch's); close the run."""
        raise NotImplementedError

    def supersede(self, earlier: dict) -> None:
        """The run folder started over (rerun, a discarded checkpoint): mark ``earlier``, the state an
        earlier attempt's ``start`` returned, as replaced by this run. Optional: a no-op by default."""


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def run_meta(cfg, run_dir: Path, code_version: str) -> RunMeta:
    """What the trackers are told about a run (``cfg``: its ``runners.config.RunConfig``)."""
    results_dir = Path(cfg.results_dir)
    key = Path(run_dir).relative_to(results_dir).as_posix()
    config_key = key.rpartition("/")[0]
    tags = {
        "protocol": cfg.protocol,
        "dataset": cfg.data.name,
        "optimizer": cfg.optimizer.name,
        "model": cfg.model.name,
        "seed": str(cfg.seed),
        "code_version": code_version,
        "fingerprint": cfg.fingerprint(),
        "config": config_key,
        "run_dir": str(run_dir),
    }
    return RunMeta(key, config_key, results_dir, Path(run_dir), flatten(cfg.to_dict()), tags)
