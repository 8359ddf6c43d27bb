"""What the config boundary and its checks share, in a module both import: the error type, the
protocols' defaults, the accepted values, and the run options that change no number.

``RunOptions`` holds the settings of *how* a run is carried out (a progress bar, per-epoch
checkpoints, ThermoLion's diagnostics, which add columns and change no number). They are read from
the ``trainer:`` group like the rest, but live here, outside the hashed numeric core
(``runners/train``), and outside a run's identity: a test shows, for every
registered optimizer and each model family, that they change no number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ConfigError", "RunOptions", "EVAL_SPLITS", "PROTOCOLS", "PROTOCOL_DOCS", "RERUN", "SCHEDULES", "is_number"]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names it and the accepted values."""


@dataclass(frozen=True)
class RunOptions:
    checkpoint: bool = True  # per-epoch checkpoint, so that a killed run resumes
    progress: str = "auto"  # auto: a tqdm bar when attached to a terminal; "on"/"off"
    track_stats: bool = True  # ThermoLion's phase diagnostics, per epoch (extra columns; no number changes)


# What a relaunch trains again: None, finished runs none; stale, those made by other code or packages;
# all, every one; failed, only the runs that failed (nothing new is started).
RERUN = (None, "stale", "all", "failed")
EVAL_SPLITS = ("train", "test", "val")  # what a run is evaluated on: the paper's training set, test, validation
SCHEDULES = ("constant", "cosine", "warmup_cosine", "recipe")  # recipe: each optimizer's own (registry)


# Each protocol's defaults, written once: conf/protocol/<name>.yaml is generated from these by
# scripts/write_configs.py, and run folders name only what differs from them.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "paper": dict(train_subset=5000, eval_split="train", batch_size=1024, epochs=12),
    "rigorous": dict(train_subset=None, eval_split="test", batch_size=128, epochs=12),
    "tuned": dict(train_subset=None, eval_split="val", batch_size=128, epochs=12),
}
PROTOCOL_DOCS = {
    "paper": "The paper's protocol, quirks included: first 5000 training samples (SEMEION whole), 32x32,\n"
    "batch 1024 (60 steps in 12 epochs), accuracy reported on the same training subset.",
    "rigorous": "Full training split; loss and accuracy on the held-out test split every epoch.",
    "tuned": "Tuning runs: full training split minus a seeded stratified validation share (data.val_fraction),\n"
    "evaluated on that validation split.",
}


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
