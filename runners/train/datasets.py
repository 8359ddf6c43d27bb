"""The datasets a run can train on: what each is (channels, classes, splits) and how torchvision reads it.

A table of facts, part of the hashed numeric core: which torchvision class and arguments read a
split decides the numbers. Finding the files, the tensor cache and the errors are
``runners.datafiles``'s; turning a reading into tensors is ``runners.train.convert``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "DATASETS",
    "PAPER_DATASETS",
    "TRAIN_SIZES",
    "DatasetInfo",
    "get_info",
]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    num_classes: int
    has_test_split: bool
    files: dict[str, tuple[str, ...]]  # split -> paths under the root that torchvision reads
    build: Callable[[str, str, bool], object]  # (root, split, download) -> torchvision dataset
    packages: tuple[str, ...] = ()  # distributions that read it beyond torch and torchvision (run identity)


def _tv(cls_name: str, split_arg: Callable[[str], dict]) -> Callable[[str, str, bool], object]:
    def build(root: str, split: str, download: bool):
        import torchvision.datasets as tvd

        return getattr(tvd, cls_name)(root=root, download=download, **split_arg(split))

    return build


def _train_flag(split: str) -> dict:
    return {"train": split == "train"}


def _idx_files(folder: str, prefixes: dict[str, str], label_suffix: str = "labels-idx1-ubyte") -> dict:
    return {s: (f"{folder}/{p}-images-idx3-ubyte", f"{folder}/{p}-{label_suffix}") for s, p in prefixes.items()}


_MNIST_LIKE = {"train": "train", "test": "t10k"}

DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo(
            "gtsrb",
            3,
            43,
            True,
            {"train": ("gtsrb/GTSRB/Training",), "test": ("gtsrb/GTSRB/Final_Test/Images", "gtsrb/GT-final_test.csv")},
            _tv("GTSRB", lambda s: {"split": s}),
            ("pillow",),  # decoded and resized by PIL
        ),
        DatasetInfo("semeion", 1, 10, False, {"all": ("semeion.data",)}, _tv("SEMEION", lambda s: {})),
        DatasetInfo("mnist", 1, 10, True, _idx_files("MNIST/raw", _MNIST_LIKE), _tv("MNIST", _train_flag)),
        DatasetInfo(
            "fashionmnist", 1, 10, True, _idx_files("FashionMNIST/raw", _MNIST_LIKE), _tv("FashionMNIST", _train_flag)
        ),
        DatasetInfo("kmnist", 1, 10, True, _idx_files("KMNIST/raw", _MNIST_LIKE), _tv("KMNIST", _train_flag)),
        DatasetInfo(
            "emnist",
            1,
            10,
            True,
            _idx_files("EMNIST/raw", {"train": "emnist-mnist-train", "test": "emnist-mnist-test"}),
            _tv("EMNIST", lambda s: {"split": "mnist", "train": s == "train"}),
        ),
        DatasetInfo(
            "qmnist",
            1,
            10,
            True,
            _idx_files("QMNIST/raw", {"train": "qmnist-train", "test": "qmnist-test"}, "labels-idx2-int"),
            _tv("QMNIST", lambda s: {"what": s, "compat": True}),
        ),
        DatasetInfo("usps", 1, 10, True, {"train": ("usps.bz2",), "test": ("usps.t.bz2",)}, _tv("USPS", _train_flag)),
        DatasetInfo(
            "cifar10",
            3,
            10,
            True,
            {
                "train": tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
                "test": ("cifar-10-batches-py/test_batch",),
            },
            _tv("CIFAR10", _train_flag),
        ),
        DatasetInfo(
            "cifar100",
            3,
            100,
            True,
            {"train": ("cifar-100-python/train",), "test": ("cifar-100-python/test",)},
            _tv("CIFAR100", _train_flag),
        ),
        DatasetInfo(
            "svhn",
            3,
            10,
            True,
            {"train": ("train_32x32.mat",), "test": ("test_32x32.mat",)},
            _tv("SVHN", lambda s: {"split": s}),
        ),
        DatasetInfo(
            "stl10",
            3,
            10,
            True,
            {
                "train": ("stl10_binary/train_X.bin", "stl10_binary/train_y.bin", "stl10_binary/unlabeled_X.bin"),
                "test": ("stl10_binary/test_X.bin", "stl10_binary/test_y.bin", "stl10_binary/unlabeled_X.bin"),
            },
            _tv("STL10", lambda s: {"split": s}),
        ),
        DatasetInfo("digits", 1, 10, False, {"all": ()}, lambda root, split, download: None, ("scikit-learn",)),
    ]
}
# Training-split sizes (the whole set for those without a test split), to check settings such as
# warmup_steps against a run's length before any data is loaded.
TRAIN_SIZES = {
    "gtsrb": 26640,
    "semeion": 1593,
    "mnist": 60000,
    "fashionmnist": 60000,
    "kmnist": 60000,
    "emnist": 60000,
    "qmnist": 60000,
    "usps": 7291,
    "cifar10": 50000,
    "cifar100": 50000,
    "svhn": 73257,
    "stl10": 5000,
    "digits": 1797,
}
PAPER_DATASETS = (
    "gtsrb",
    "semeion",
    "mnist",
    "fashionmnist",
    "kmnist",
    "emnist",
    "qmnist",
    "usps",
    "cifar10",
    "cifar100",
    "svhn",
    "stl10",
)


def get_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None
