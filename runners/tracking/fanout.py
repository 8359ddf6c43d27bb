"""One run's trackers: each point to each tracker, and a failing tracker off with one warning.

One tracker run per run folder. A resumed run continues its tracker runs: their ids, and each
tracker's own last logged step, are kept in run.json (``record``); a tracker is never sent a point at
or before its own step. A tracker added at a resume starts at step 0, so the job back-fills it with
the epochs already trained. A fresh start (rerun, a discarded checkpoint) opens new tracker runs
and lets each tracker mark the one it supersedes (``Tracker.supersede``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from ..train.build import load_class
from .base import Points, RunMeta, Tracker
from .config import LoggerConfig

__all__ = ["Trackers", "forget_failures"]

# Trackers that failed in this process, by (results folder, section name): off for the rest of that sweep
# (every later job of an in-process multirun, or of one parallel worker), so a broken server is paid for
# once. A new sweep starts with none (``forget_failures``, called when a multirun starts); another results
# folder is another study and tries again.
_FAILED: dict[tuple[str, str], str] = {}


def forget_failures() -> None:
    _FAILED.clear()


class Trackers:
    def __init__(self, config: LoggerConfig) -> None:
        self.config = config
        self.open: dict[str, Tracker] = {}
        self.states: dict[str, dict] = {}  # each tracker's run id (or error) and its own logged_step
        self.seconds = 0.0  # spent inside the trackers' calls: what watching this run cost it
        self.study = ""  # the results folder: a tracker that failed is off for the rest of its sweep

    @property
    def every_steps(self) -> int:
        """How often the trainer keeps a step's loss for the trackers; 0 when there are none."""
        return self.config.every_steps if self.config.trackers else 0

    @property
    def logged_step(self) -> int:
        """The step every open tracker has logged up to (the least of theirs)."""
        return min((self.step(name) for name in self.open), default=0)

    def step(self, name: str) -> int:
        return int(self.states.get(name, {}).get("logged_step", 0))

    def start(self, run: RunMeta, previous: Optional[dict], resumed: bool) -> None:
        """Open each tracker; ``previous`` is run.json's record of an earlier attempt, continued when
        the run resumes from its checkpoint. A fresh start opens new tracker runs, and each tracker may
        mark the earlier attempt's run as superseded."""
        previous = previous or {}
        self.study = str(Path(run.results_dir).resolve())
        self.seconds = float(previous.get("seconds", 0.0)) if resumed else 0.0
        shared_step = int(previous.get("logged_step", 0))  # run.json written before per-tracker steps
        for spec in self.config.trackers:
            if (self.study, spec.name) in _FAILED:  # said once when it failed; recorded in every later run
                self.states[spec.name] = {
                    "error": f"off for this sweep after an earlier run's failure: {_FAILED[self.study, spec.name]}"
                }
                continue
            earlier = previous.get(spec.name)
            earlier = earlier if isinstance(earlier, dict) and "error" not in earlier else None
            resume = earlier if resumed else None
            step = int(resume.get("logged_step", shared_step)) if resume is not None else 0

            def start(spec=spec, resume=resume, step=step) -> None:
                tracker = load_class(spec.target)(**spec.kwargs)
                # a tracker may report less than was sent (what it made durable): it is re-sent the rest
                self.states[spec.name] = {"logged_step": step, **tracker.start(run, resume, step)}
                self.open[spec.name] = tracker

            self._guard(spec.name, start)
            if spec.name in self.open and not resumed and earlier is not None:
                self._guard(spec.name, lambda t=self.open[spec.name], e=earlier: t.supersede(e))

    def behind(self, step: int) -> dict[str, int]:
        """The open trackers whose last kept step is before ``step`` (added at a resume, or whose points
        were lost in a kill), with that step: the caller back-fills them from the run's own rows."""
        return {name: self.step(name) for name in self.open if self.step(name) < step}

    def log(self, points: Points) -> None:
        for name, tracker in list(self.open.items()):
            mine = [(step, metrics) for step, metrics in points if step > self.step(name)]
            if mine:
                self._guard(name, lambda t=tracker, m=mine: t.log(m))
                if name in self.open:  # logged (a failed call switched it off instead)
                    self.states[name]["logged_step"] = mine[-1][0]

    def finish(self, status: str, final: dict[str, float], step: int) -> None:
        for name, tracker in list(self.open.items()):
            self._guard(name, lambda t=tracker: t.finish(status, final, step))
        self.open.clear()

    def record(self) -> dict[str, Any]:
        """What run.json keeps: each tracker's state (its run's id and logged_step) or its error."""
        return {**{k: dict(v) for k, v in self.states.items()}, "seconds": round(self.seconds, 3)}

    def _guard(self, name: str, call: Callable[[], None]) -> None:
        """A tracker's failure (disk full, server down, database locked) never reaches the run."""
        t0 = time.perf_counter()
        try:
            call()
        except Exception as err:  # noqa: BLE001 - any tracker error: the run goes on without it
            error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            print(
                f"warning: logger {name} failed ({error[:300]}); it is off for the rest of this sweep, "
                "whose runs go on and write their own files as without it",
                file=sys.stderr,
                flush=True,
            )
            _FAILED[self.study, name] = error[:300]
            tracker = self.open.pop(name, None)
            if tracker is not None:
                try:
                    tracker.finish("failed", {}, self.step(name))
                except Exception:  # noqa: BLE001, S110 - closing a broken tracker is best effort
                    pass
            self.states[name] = {**self.states.get(name, {}), "error": error}
        finally:
            self.seconds += time.perf_counter() - t0
