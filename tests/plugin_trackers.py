"""Trackers for the tests: a user's own tracker class, plugged in with ``+logger.<name>._target_=``."""

from runners.tracking.base import Tracker


class NeedsAMissingPackage(Tracker):
    packages = ("thermolion_tests_no_such_package",)

    def __init__(self, level: int = 1) -> None:
        self.level = level


class FailsOnFirstLog(Tracker):
    """Starts fine, raises on its first point: a server that went down mid-sweep."""

    def start(self, run, resume, logged_step):
        return {"opened": run.key}

    def log(self, points):
        raise ConnectionError("the tracking server went away (simulated)")

    def finish(self, status, final, step):
        pass
