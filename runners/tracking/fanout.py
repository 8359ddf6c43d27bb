"""One run's trackers: each point to each tracker, and a failing tracker off with one warning.

A resumed run continues its tracker runs: their ids, and the last step logged, are kept in run.json
(``record``); points up to that step are not logged again.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Optional

from ..train.build import load_class
from .base import Points, RunMeta, Tracker
from .config import LoggerConfig

__all__ = ["Trackers"]


class Trackers:
    def __init__(self, config: LoggerConfig) -> None:
        self.config = config
        self.open: dict[str, Tracker] = {}
        self.states: dict[str, dict] = {}
        self.logged_step = 0
        self.seconds = 0.0  # spent inside the trackers' calls: what watching this run cost it

    @property
    def every_steps(self) -> int:
        """How often the trainer keeps a step's loss for the trackers; 0 when there are none."""
        return self.config.every_steps if self.config.trackers else 0

    def start(self, run: RunMeta, previous: Optional[dict], resumed: bool) -> None:
        """Open each tracker; ``previous`` is run.json's record of an earlier attempt, continued when
        the run resumes from its checkpoint (a fresh start opens new tracker runs)."""
        previous = (previous or {}) if resumed else {}
        self.logged_step = int(previous.get("logged_step", 0))
        self.seconds = float(previous.get("seconds", 0.0))
        for spec in self.config.trackers:
            resume = previous.get(spec.name)
            resume = resume if isinstance(resume, dict) and "error" not in resume else None

            def start(spec=spec, resume=resume) -> None:
                tracker = load_class(spec.target)(**spec.kwargs)
                self.states[spec.name] = tracker.start(run, resume, self.logged_step)
                self.open[spec.name] = tracker

            self._guard(spec.name, start)

    def log(self, points: Points) -> None:
        points = [(step, metrics) for step, metrics in points if step > self.logged_step]
        if not points:
            return
        for name, tracker in list(self.open.items()):
            self._guard(name, lambda t=tracker: t.log(points))
        self.logged_step = points[-1][0]

    def finish(self, status: str, final: dict[str, float], step: int) -> None:
        for name, tracker in list(self.open.items()):
            self._guard(name, lambda t=tracker: t.finish(status, final, step))
        self.open.clear()

    def record(self) -> dict[str, Any]:
        """What run.json keeps: each tracker's state (its run's id) or its error, and the last step logged."""
        return {**self.states, "logged_step": self.logged_step, "seconds": round(self.seconds, 3)}

    def _guard(self, name: str, call: Callable[[], None]) -> None:
        """A tracker's failure (disk full, server down, database locked) never reaches the run."""
        t0 = time.perf_counter()
        try:
            call()
        except Exception as err:  # noqa: BLE001 - any tracker error: the run goes on without it
            error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            print(
                f"warning: logger {name} failed ({error[:300]}); it is off for the rest of this run, "
                "which goes on and writes its own files as without it",
                file=sys.stderr,
                flush=True,
            )
            tracker = self.open.pop(name, None)
            if tracker is not None:
                try:
                    tracker.finish("failed", {}, self.logged_step)
                except Exception:  # noqa: BLE001, S110 - closing a broken tracker is best effort
                    pass
            self.states[name] = {**self.states.get(name, {}), "error": error}
        finally:
            self.seconds += time.perf_counter() - t0
