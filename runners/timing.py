"""Timing a run's optimizer steps, outside the hashed numeric core (a clock changes no number)."""

from __future__ import annotations

import time

import torch

__all__ = ["StepTimer"]


class StepTimer:
    """Seconds spent inside ``optimizer.step()`` over an epoch.

    On the CPU the host clock around each step. On CUDA a pair of events per step, read once at the
    epoch's end: a host timer would need a sync per step, which would stall the queue it measures.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._seconds = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def step(self, optimizer) -> None:
        if not self.cuda:
            t0 = time.perf_counter()
            optimizer.step()
            self._seconds += time.perf_counter() - t0
            return
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        optimizer.step()
        end.record()
        self._events.append((start, end))

    def seconds(self) -> float:
        """The total so far (on CUDA this waits for the recorded steps to finish)."""
        return self._seconds + sum(s.elapsed_time(e) for s, e in self._events) / 1e3
