"""TensorBoard through torch.utils.tensorboard: one event folder per run, hyperparameters in the
HParams dashboard."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from .base import Points, RunMeta, Tracker

__all__ = ["TensorBoardTracker"]


def _hparam(value):
    return value if isinstance(value, (bool, int, float, str)) else str(value)


class TensorBoardTracker(Tracker):
    packages = ("tensorboard",)

    def __init__(self, log_dir: str = "outputs/tensorboard") -> None:
        self.root = Path(log_dir)
        self.writer = None

    def start(self, run: RunMeta, resume: Optional[dict], logged_step: int) -> dict:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        log_dir = self.root / run.key
        if resume is None and log_dir.exists():  # a fresh start: an earlier attempt's curves must not mix in
            shutil.rmtree(log_dir)
        # purge_step: events an interrupted attempt wrote past the last step run.json records are hidden
        self.writer = SummaryWriter(str(log_dir), purge_step=logged_step + 1 if resume is not None else None)
        # The HParams dashboard: the config, and the scalars it tabulates against it
        params = {k: _hparam(v) for k, v in {**run.params, **run.tags}.items()}
        experiment, session_start, self._end = hparams(params, {"eval/acc": 0.0, "eval/loss": 0.0, "train/loss": 0.0})
        if resume is None:
            self.writer.file_writer.add_summary(experiment)
            self.writer.file_writer.add_summary(session_start)
            self.writer.add_text("run", "\n".join(f"    {k}: {v}" for k, v in run.tags.items()), 0)
        return {"log_dir": str(log_dir)}

    def log(self, points: Points) -> None:
        for step, metrics in points:
            for name, value in metrics.items():
                self.writer.add_scalar(name, value, step)
        self.writer.flush()  # live: the epoch's points are on disk when the epoch ends

    def finish(self, status: str, final: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for name, value in final.items():
            self.writer.add_scalar(f"final/{name}", value, step)
        self.writer.add_text("status", status, step)
        self.writer.file_writer.add_summary(self._end)
        self.writer.close()
        self.writer = None
