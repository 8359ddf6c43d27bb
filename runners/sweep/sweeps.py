"""The sweeps that wrote a results folder, and the command that re-runs each as it ran.

Hydra keeps each sweep's config in ``<results_dir>/.hydra/sweeps/<time>/multirun.yaml``; its
overrides give the command: ``python run.py -m`` with the launcher's and sweeper's overrides
(``hydra/launcher=parallel hydra.launcher.workers=2``), then the task's. The report and
``runners.status`` show it; nothing here imports Hydra.
"""

from __future__ import annotations

import shlex
from pathlib import Path

__all__ = ["command_of", "recorded_sweeps"]

# Hydra's own overrides that decide how a sweep ran: re-running the shown command must run it the same way.
LAUNCH = ("hydra/launcher=", "hydra.launcher.", "hydra/sweeper=", "hydra.sweeper.")


def command_of(hydra_overrides: list[str], task_overrides: list[str]) -> str:
    """The command that re-runs a sweep as it ran, from Hydra's two override lists."""
    launch = [o for o in hydra_overrides if o.startswith(LAUNCH)]
    return shlex.join(["python", "run.py", "-m", *launch, *task_overrides])


def recorded_sweeps(results_dir: Path) -> list[tuple[str, str]]:
    """(when, command) of every sweep Hydra recorded under ``results_dir``, oldest first; a record that
    cannot be read is named as such, never skipped."""
    import yaml

    found = []
    for path in sorted(Path(results_dir).glob(".hydra/sweeps/*/multirun.yaml")):
        try:
            overrides = yaml.safe_load(path.read_text())["hydra"]["overrides"]
            found.append((path.parent.name, command_of(overrides["hydra"] or [], overrides["task"] or [])))
        except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
            found.append((path.parent.name, f"(unreadable {path.name}: {type(err).__name__})"))
    return found
