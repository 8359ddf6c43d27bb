"""Trackers for the tests: a user's own tracker class, plugged in with ``+logger.<name>._target_=``."""

from runners.tracking.base import Tracker


class NeedsAMissingPackage(Tracker):
    packages = ("thermolion_tests_no_such_package",)

    def __init__(self, level: int = 1) -> None:
        self.level = level
