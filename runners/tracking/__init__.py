"""Trackers a researcher watches runs in (TensorBoard, MLflow, W&B), fed from what the trainer has.

``logger=`` picks them (``conf/logger/``); ``parse_loggers`` turns that section into a
``LoggerConfig`` at the config boundary, and ``Trackers`` fans a run's points out to each. They
never change a run: a tracker that fails is switched off with one warning, and none is part of a
run's identity (``RunConfig.result_settings``) or of the hashed numeric core.
"""

from .config import LoggerConfig, TrackerSpec, parse_loggers
from .fanout import Trackers
from .points import epoch_points

__all__ = ["LoggerConfig", "TrackerSpec", "Trackers", "epoch_points", "parse_loggers"]
