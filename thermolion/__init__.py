"""ThermoLion optimizer and the paper's baselines, with a registry to build them by name."""

from .baselines import SWATS, Lion, Lookahead, MuAdam
from .optimizer import FUSED_MIN_ELEMENTS, STAT_NAMES, ThermoLion, thermolion
from .registry import OPTIMIZERS, PAPER_OPTIMIZERS, OptimizerSpec, build_optimizer, get_spec, param_groups

__version__ = "0.2.0"
__all__ = [
    "ThermoLion",
    "thermolion",
    "STAT_NAMES",
    "FUSED_MIN_ELEMENTS",
    "Lion",
    "MuAdam",
    "SWATS",
    "Lookahead",
    "OPTIMIZERS",
    "PAPER_OPTIMIZERS",
    "OptimizerSpec",
    "build_optimizer",
    "get_spec",
    "param_groups",
]
