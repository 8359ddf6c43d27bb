"""Sweep-level progress: runs done, failed, skipped and stale out of the total, with an ETA.

The ETA is the mean wall time of the runs that actually trained (skipped, stale and
running-elsewhere runs take no time and would make it optimistic) times the runs left, divided by
the runs that go at once (``parallel``: the parallel launcher's workers). Like the per-run bars it is
drawn only when stderr is a terminal.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Optional

from tqdm import tqdm

__all__ = ["SweepProgress", "sweep_size", "show_progress"]

TRAINED = ("done", "diverged", "failed")
SHOWN = ("done", "failed", "interrupted", "diverged", "skipped", "stale", "running elsewhere", "taken over")


def show_progress(setting: str = "auto") -> bool:
    return {"on": True, "off": False}.get(setting, sys.stderr.isatty())


def sweep_size(config) -> Optional[int]:
    """How many jobs Hydra's basic sweeper will launch for this multirun config (None if unknown)."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        params = config.hydra.sweeper.get("params") or {}
        # As BasicSweeper.sweep: the config's sweep params first, then the command line's overrides.
        args = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
        batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
        return sum(len(batch) for batch in batches)
    except Exception:  # noqa: BLE001 - a progress total is a nicety, never a failure
        return None


class SweepProgress:
    def __init__(self, total: Optional[int], enabled: bool, parallel: int = 1):
        self.total, self.parallel = total, parallel
        self.running = 0  # set by a launcher that runs several at once
        self.counts: Counter = Counter()
        self.trained_seconds: list[float] = []
        self.bar = tqdm(
            total=total,
            desc="",
            unit="run",
            disable=not enabled,
            dynamic_ncols=True,
            bar_format="sweep {n_fmt}/{total_fmt} runs |{bar:20}| {desc}",
        )

    def update(self, status: str, seconds: Optional[float] = None) -> None:
        self.counts[status] += 1
        if status in TRAINED and seconds is not None:
            self.trained_seconds.append(seconds)
        self.bar.set_description_str(self.text(), refresh=False)
        self.bar.update(1)

    def eta_seconds(self) -> Optional[float]:
        if self.total is None or not self.trained_seconds:
            return None
        left = self.total - sum(self.counts.values())
        return left * sum(self.trained_seconds) / len(self.trained_seconds) / self.parallel

    def text(self) -> str:
        parts = [f"{self.counts[s]} {s}" for s in SHOWN if self.counts[s] or s in ("done", "failed")]
        if self.running:
            parts.insert(1, f"{self.running} running")
        eta = self.eta_seconds()
        if eta is not None:
            parts.append(f"ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}")
        return ", ".join(parts)

    def refresh(self) -> None:
        self.bar.set_description_str(self.text())

    def close(self) -> None:
        self.bar.close()
