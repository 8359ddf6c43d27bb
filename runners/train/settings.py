"""The settings a run's numbers depend on, as plain frozen dataclasses (data only, no behaviour).

They are part of the hashed numeric core, so a changed default here is a changed run. Settings of how
a run is carried out, not what it computes (a progress bar, checkpoints), are ``runners.options``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["DataConfig", "TrainerConfig"]


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"
    root: Optional[str] = None
    cache_dir: Optional[str] = None
    download: bool = True
    image_size: int = 32
    train_subset: Optional[int] = None  # paper protocol: the first N training samples
    eval_split: str = "test"  # "train": accuracy on the training set (paper); "test"; "val"
    val_fraction: float = 0.1  # held out of the training split when eval_split == "val"
    test_fraction: float = 0.2  # held-out test share for sets without an official test split
    label_noise: float = 0.0  # share of training labels replaced uniformly (seeded)
    augment: str = "none"  # none | crop | crop_flip | auto (crop_flip, or crop on digit/character/sign sets)


@dataclass(frozen=True)
class TrainerConfig:
    epochs: int = 12
    batch_size: int = 128
    device: str = "auto"  # auto: cuda when available, else cpu
    deterministic: bool = False
    compile: bool = False  # torch.compile the model (GPU)
    amp: bool = False  # bf16 autocast (GPU)
    channels_last: bool = False  # channels_last memory format (GPU)
    schedule: str = "constant"  # per-step lr: constant (the paper's) | cosine | warmup_cosine | recipe (registry's)
    warmup_steps: int = 0  # linear warmup steps of warmup_cosine
    grad_clip: Optional[float] = None  # clip the global gradient norm (off; ThermoLion's c = 2.0 assumes unclipped)
    eval_every_steps: Optional[int] = None  # also evaluate every this many steps (evals.csv; off by default)
    matmul_precision: str = "high"  # torch.set_float32_matmul_precision: highest | high (TF32 on GPUs) | medium
