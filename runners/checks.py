"""The checks a run's configuration passes at the boundary, before any data is loaded.

Each failure is a ``ConfigError`` naming the full option (``data.label_noise``, ``trainer.device``,
...) and what to set instead, so that a bad value never leaves a failed run folder behind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from thermolion import build_optimizer, get_spec

from .options import EVAL_SPLITS, PROTOCOLS, RERUN, SCHEDULES, ConfigError, is_number
from .train.augment import AUGMENTATIONS
from .train.datasets import TRAIN_SIZES, get_info

if TYPE_CHECKING:
    from .config import RunConfig

__all__ = ["check_run", "estimated_steps"]


def check_run(run: RunConfig) -> None:
    """Raise ConfigError, naming the option, for any value that would fail only once the run started."""
    if run.protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {run.protocol!r}; choose one of {sorted(PROTOCOLS)}")
    try:
        model = run.model.resolved()
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for name in ("epochs", "batch_size"):
        if getattr(run.trainer, name) < 1:
            raise ConfigError(f"trainer.{name} must be >= 1, got {getattr(run.trainer, name)}")
    if run.options.progress not in ("auto", "on", "off"):
        raise ConfigError(f"trainer.progress must be auto, on or off, got {run.options.progress!r}")
    if isinstance(run.seed, bool) or not isinstance(run.seed, int) or run.seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {run.seed!r}")
    if run.rerun not in RERUN:
        raise ConfigError(f"rerun must be stale, all or failed (or null: keep finished runs), got {run.rerun!r}")
    if run.threads is not None and (
        isinstance(run.threads, bool) or not isinstance(run.threads, int) or run.threads < 1
    ):
        raise ConfigError(f"threads must be an integer >= 1 (or null: torch's default), got {run.threads!r}")
    for flag in ("tune_on_test", "exact_machine"):
        if not isinstance(getattr(run, flag), bool):
            raise ConfigError(f"{flag} must be true or false, got {getattr(run, flag)!r}")
    if run.data.image_size < 8 or (model["name"] != "resnet18" and run.data.image_size % 4):
        raise ConfigError(
            f"data.image_size must be a multiple of 4 and >= 8 (the convnet pools twice by 2, "
            f"the ViT's patches are 4x4), got {run.data.image_size}"
        )
    if run.data.augment not in AUGMENTATIONS:
        raise ConfigError(f"data.augment must be one of {', '.join(AUGMENTATIONS)}, got {run.data.augment!r}")
    t = run.trainer
    if t.schedule not in SCHEDULES:
        raise ConfigError(f"trainer.schedule must be one of {', '.join(SCHEDULES)}, got {t.schedule!r}")
    if t.warmup_steps < 0 or (t.warmup_steps > 0) != (t.schedule == "warmup_cosine"):
        raise ConfigError(
            f"trainer.warmup_steps must be >= 1 with schedule=warmup_cosine and 0 otherwise, "
            f"got {t.warmup_steps} with schedule={t.schedule}"
        )
    if run.optimizer.target and "lr" not in run.optimizer.kwargs and t.schedule not in ("constant", "recipe"):
        raise ConfigError(
            f"trainer.schedule={t.schedule} schedules an lr, and {run.optimizer.target} takes none; "
            "use trainer.schedule=constant"
        )
    steps = estimated_steps(run)
    if t.warmup_steps and steps is not None and t.warmup_steps >= steps:
        raise ConfigError(
            f"trainer.warmup_steps={t.warmup_steps} is not shorter than the run: {run.data.name} under "
            f"protocol={run.protocol} takes about {steps} steps ({t.epochs} epochs of batch {t.batch_size}); "
            "lower trainer.warmup_steps or raise trainer.epochs"
        )
    _check_data_and_device(run)
    if t.eval_every_steps is not None and t.eval_every_steps < 1:
        raise ConfigError(f"trainer.eval_every_steps must be >= 1 (or null: per epoch only), got {t.eval_every_steps}")
    if t.grad_clip is not None and not t.grad_clip > 0:
        raise ConfigError(f"trainer.grad_clip must be > 0 (or null: off), got {t.grad_clip}")
    if run.optimizer.target is None and get_spec(run.optimizer.name).averaging:
        if t.schedule not in ("constant", "recipe"):  # its recipe is constant, then SWALR
            raise ConfigError(f"{run.optimizer.name} runs its own SWA lr schedule; use trainer.schedule=constant")
        if model["name"] != "convnet":
            raise ConfigError(
                f"{run.optimizer.name} evaluates the averaged weights without recomputing "
                f"BatchNorm statistics (as the notebook); use it with model=convnet"
            )
    for key, value in run.optimizer.kwargs.items():
        if key == "betas" and not (
            isinstance(value, (list, tuple)) and len(value) == 2 and all(is_number(b) for b in value)
        ):
            raise ConfigError(f"optimizer.betas must be a pair [beta1, beta2], e.g. [0.9,0.99], got {value!r}")
        if key in ("lr", "weight_decay", "eps", "momentum") and not is_number(value):
            raise ConfigError(f"optimizer.{key} must be a number, got {value!r}")
    if not run.optimizer.kwargs.get("lr", 1.0) > 0:
        raise ConfigError(f"optimizer.lr must be > 0, got {run.optimizer.kwargs['lr']}")
    if run.optimizer.target is None:  # plug-ins were built once when resolved
        import torch

        try:
            build_optimizer(run.optimizer.name, [torch.nn.Parameter(torch.zeros(1))], **run.optimizer.kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"optimizer {run.optimizer.name}: {err}") from None


def _check_data_and_device(run: RunConfig) -> None:
    d = run.data
    if d.eval_split not in EVAL_SPLITS:
        raise ConfigError(
            f"data.eval_split must be one of {', '.join(EVAL_SPLITS)} (train: the paper's training-set accuracy), "
            f"got {d.eval_split!r}"
        )
    _check_train_subset(run)
    if not (is_number(d.label_noise) and 0.0 <= d.label_noise <= 1.0):
        raise ConfigError(f"data.label_noise must be a share in [0, 1] (0.2: 20% of labels), got {d.label_noise}")
    for key in ("val_fraction", "test_fraction"):
        value = getattr(d, key)
        if not (is_number(value) and 0.0 < value < 1.0):
            raise ConfigError(f"data.{key} must be a share in (0, 1) (0.1: 10%), got {value}")
    if run.trial is not None and d.eval_split != "val" and not run.tune_on_test:
        raise ConfigError(
            f"trial={run.trial} under protocol={run.protocol} would choose hyperparameters on the "
            f"{d.eval_split} split; tune with protocol=tuned (a validation split), or set tune_on_test=true "
            "to do it anyway"
        )
    if run.trainer.matmul_precision not in ("highest", "high", "medium"):
        raise ConfigError(
            f"trainer.matmul_precision must be highest, high or medium, got {run.trainer.matmul_precision!r}"
        )
    device = run.trainer.device
    if device != "auto" and not device.startswith(("cpu", "cuda")):
        raise ConfigError(f"trainer.device must be auto, cpu or cuda[:N], got {device!r}")
    if run.trainer.amp and not _uses_cuda(device):
        raise ConfigError(
            "trainer.amp=true trains in bf16 autocast, which is for GPUs: on the CPU it is slow and changes the "
            "numbers; drop trainer.amp (or run on a CUDA device)"
        )
    if not d.download:
        _check_files_present(run)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.device={device} but this machine has no usable CUDA device "
                "(torch.cuda.is_available() is False); use trainer.device=auto or cpu"
            )
        index = torch.device(device).index
        if index is not None and index >= torch.cuda.device_count():
            raise ConfigError(f"trainer.device={device}: only {torch.cuda.device_count()} CUDA device(s) here")


def _uses_cuda(device: str) -> bool:
    if device.startswith("cuda"):
        return True
    if device != "auto":
        return False
    import torch

    return torch.cuda.is_available()


def _train_split_size(run: RunConfig) -> Optional[int]:
    """Samples of the split train_subset is taken from (before any validation hold-out), if known."""
    size = TRAIN_SIZES.get(run.data.name)
    if size is not None and not get_info(run.data.name).has_test_split and run.data.eval_split != "train":
        size -= round(size * run.data.test_fraction)
    return size


def _check_train_subset(run: RunConfig) -> None:
    n = run.data.train_subset
    if n is None:
        return
    if n < 1:
        raise ConfigError(f"data.train_subset must be >= 1 (the first N training samples), or null for all; got {n}")
    size = _train_split_size(run)
    # The paper's budget, 5000, is a cap that experiments apply to every dataset ("the first 5000, or the
    # whole set where it is smaller", as the paper does for SEMEION): any other size must exist.
    if size is not None and n > size and n != PROTOCOLS["paper"]["train_subset"]:
        raise ConfigError(
            f"data.train_subset={n} is larger than {run.data.name}'s training split ({size} samples under "
            f"eval_split={run.data.eval_split}); use at most {size}, or data.train_subset=null for all of it "
            "(5000, the paper's budget, is the one cap accepted everywhere: the whole set where it is smaller)"
        )


def _check_files_present(run: RunConfig) -> None:
    """With download=false, the files (or their converted tensors) must be here before a run starts."""
    from .datafiles import cache_file, resolve_root

    info = get_info(run.data.name)
    root = resolve_root(run.data.root)
    for split, files in info.files.items():
        missing = [f for f in files if not (root / f).exists()]
        cached = cache_file(info.name, split, run.data.image_size, run.data.cache_dir).exists()
        if missing and not cached:
            raise ConfigError(
                f"dataset {info.name} ({split} split) is not in {root} (missing {missing[0]}) and data.download=false; "
                f"point DATA_ROOT or data.root at a folder that has it, fetch it with "
                f"python scripts/prefetch_data.py {info.name} --root {root}, or allow data.download=true"
            )


def estimated_steps(run: RunConfig) -> Optional[int]:
    """Optimizer steps of the whole run, from the dataset's known training size (None if unknown)."""
    size = _train_split_size(run)
    if size is None:
        return None
    if run.data.train_subset is not None:
        size = min(size, run.data.train_subset)
    if run.data.eval_split == "val":
        size -= round(size * run.data.val_fraction)
    return run.trainer.epochs * -(-size // run.trainer.batch_size)
