"""A finished epoch as tracker points: the kept per-step losses, the mid-epoch evaluations and the
epoch's row, merged by global step, under the names every tracker shows."""

from __future__ import annotations

from .base import Points

__all__ = ["METRIC_NAMES", "metric_name", "epoch_points", "history_points"]

# metrics.csv's columns as trackers name them; ThermoLion's diagnostics go under diagnostics/.
METRIC_NAMES = {
    "epoch": "epoch",
    "train_loss": "train/loss",
    "train_acc": "train/acc",
    "eval_loss": "eval/loss",
    "eval_acc": "eval/acc",
    "lr": "lr",
    "effective_lr": "effective_lr",
    "train_time_s": "time/train_s",
    "epoch_time_s": "time/epoch_s",
    "step_time_ms": "time/step_ms",
}
STEP_LOSS = "train/loss_step"


def metric_name(column: str) -> str:
    return METRIC_NAMES.get(column, f"diagnostics/{column}")


def epoch_points(row: dict | None, evals: list[dict], step_losses: list[tuple[int, float]]) -> Points:
    """Points of one epoch (``row`` None: an epoch that diverged, whose losses are still shown)."""
    by_step: dict[int, dict[str, float]] = {}
    for step, loss in step_losses:
        by_step.setdefault(step, {})[STEP_LOSS] = loss
    for point in evals:  # evals.csv's points; the epoch ends among them carry the row's values
        by_step.setdefault(int(point["step"]), {}).update(
            {"eval/loss": point["eval_loss"], "eval/acc": point["eval_acc"], "epoch": point["epoch"]}
        )
    if row is not None:
        by_step.setdefault(int(row["step"]), {}).update(
            {metric_name(k): float(v) for k, v in row.items() if k != "step"}
        )
    return sorted(by_step.items())


def history_points(rows: list[dict], evals: list[dict]) -> Points:
    """The points of every epoch a run has already trained (metrics.csv's rows and evals.csv's points),
    without per-step losses, which are not kept: what a tracker added at a resume is back-filled with."""
    by_step: dict[int, dict[str, float]] = {}
    for row in rows:
        for step, metrics in epoch_points(row, [], []):
            by_step.setdefault(step, {}).update(metrics)
    for step, metrics in epoch_points(None, evals, []):
        by_step.setdefault(step, {}).update(metrics)
    return sorted(by_step.items())
