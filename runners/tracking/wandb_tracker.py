"""Weights & Biases: offline by default (``WANDB_MODE`` decides), one group a study, the configuration
as job_type so that a configuration's seeds group together."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

from .base import Points, RunMeta, Tracker
from .wandb_records import last_step

__all__ = ["WandbTracker"]


def _short(text: str, limit: int = 64) -> str:
    """W&B caps a job_type and a tag at 64 characters: a long name keeps its start and a hash of all."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 9]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


MODES = ("online", "offline", "disabled", "shared")  # wandb.init's accepted modes


class WandbTracker(Tracker):
    packages = ("wandb",)

    @classmethod
    def check(cls, settings: dict) -> None:
        mode = settings.get("mode", "offline")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)} (or WANDB_MODE), got {mode!r}")

    def __init__(
        self,
        project: str = "thermolion",
        entity: Optional[str] = None,
        mode: str = "offline",
        dir: Optional[str] = None,  # noqa: A002 - wandb.init's own name
        group: Optional[str] = None,
    ) -> None:
        self.project, self.entity, self.mode, self.dir, self.group = project, entity, mode, dir, group
        self.run = None

    def start(self, run: RunMeta, resume: Optional[dict], logged_step: int) -> dict:
        import wandb

        folder = Path(self.dir) if self.dir else run.results_dir
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            dir=str(folder),
            group=self.group or run.results_dir.resolve().name,
            job_type=_short(run.config_key),
            name=run.key,
            id=resume["id"] if resume is not None else None,  # None: W&B draws one
            resume="allow" if resume is not None else None,
            config=run.params,
            tags=[_short(f"{k}:{run.tags[k]}") for k in ("protocol", "dataset", "optimizer", "model", "seed")],
            reinit="create_new",  # one W&B run per job of an in-process multirun
            settings=wandb.Settings(console="off", silent=True),  # the terminal stays the harness's own
        )
        state = {"id": self.run.id, "dir": str(folder)}
        if resume is not None:  # W&B writes offline points asynchronously: a kill loses the unwritten ones
            files = sorted((folder / "wandb").glob(f"offline-run-*-{self.run.id}/run-{self.run.id}.wandb"))
            state["logged_step"] = min(logged_step, last_step(files))
        return state

    def supersede(self, earlier: dict) -> None:
        """W&B offline runs cannot be changed once written: this run's config names the one it replaces
        (``supersedes``), so a synced project can filter the earlier one out."""
        if earlier.get("id"):
            self.run.config.update({"supersedes": earlier["id"]}, allow_val_change=True)

    def log(self, points: Points) -> None:
        for step, metrics in points:
            self.run.log(metrics, step=step)

    def finish(self, status: str, final: dict[str, float], step: int) -> None:
        if self.run is None:
            return
        self.run.summary.update({"status": status, **{f"final/{k}": v for k, v in final.items()}})
        self.run.finish(exit_code=1 if status in ("failed", "killed") else 0)
        self.run = None
