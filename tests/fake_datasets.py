"""Tiny dataset files in each dataset's real on-disk format, for torchvision's own parsers.

Every writer puts ``n`` images under ``root`` exactly where torchvision looks, with image i
filled with a distinct constant grey level plus a marker pixel (so that order, orientation
and labels can all be checked), and returns the labels it wrote. As in torchvision's own test
suite, md5 checks of archives are bypassed (see ``skip_md5``); the parsing code is the real one.
"""

from __future__ import annotations

import bz2
import csv
import pickle
import struct
from pathlib import Path

import numpy as np


def images(n: int, h: int, w: int, c: int) -> np.ndarray:
    """(n, h, w, c) uint8: image i is grey level 10+i with a bright pixel at row 1, col 2."""
    x = np.empty((n, h, w, c), dtype=np.uint8)
    for i in range(n):
        x[i] = 10 + i
        x[i, 1, 2] = 250
    return x


def labels(n: int, classes: int) -> np.ndarray:
    return (np.arange(n) * 7 + 3) % classes


def write_idx(path: Path, array: np.ndarray) -> None:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[array.dtype]
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def mnist_like(root: Path, folder: str, prefixes: dict, n: int, label_suffix="labels-idx1-ubyte"):
    out = {}
    for split, prefix in prefixes.items():
        x, y = images(n, 28, 28, 1)[..., 0], labels(n, 10)
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", x)
        if label_suffix == "labels-idx2-int":  # QMNIST: 8 int32 columns, the class first
            extra = np.stack([y] + [np.full(n, k) for k in range(1, 8)], axis=1).astype(">i4")
            write_idx(root / folder / "raw" / f"qmnist-{split}-labels-idx2-int", extra)
        else:
            write_idx(root / folder / "raw" / f"{prefix}-{label_suffix}", y.astype(np.uint8))
        out[split] = (x[:, None], y)
    return out


def write_mnist(root, n=6):
    return mnist_like(root, "MNIST", {"train": "train", "test": "t10k"}, n)


def write_fashionmnist(root, n=6):
    return mnist_like(root, "FashionMNIST", {"train": "train", "test": "t10k"}, n)


def write_kmnist(root, n=6):
    return mnist_like(root, "KMNIST", {"train": "train", "test": "t10k"}, n)


def write_emnist(root, n=6):
    return mnist_like(root, "EMNIST", {"train": "emnist-mnist-train", "test": "emnist-mnist-test"}, n)


def write_qmnist(root, n=6):
    return mnist_like(root, "QMNIST", {"train": "qmnist-train", "test": "qmnist-test"}, n, "labels-idx2-int")


def write_usps(root, n=6):
    out = {}
    for split, name in (("train", "usps.bz2"), ("test", "usps.t.bz2")):
        x, y = images(n, 16, 16, 1)[..., 0], labels(n, 10)
        lines = []
        for img, lab in zip(x, y):  # libsvm: label in 1..10, features in [-1, 1]
            # torchvision truncates (v+1)/2*255 to uint8: write the middle of each level
            feats = " ".join(f"{j + 1}:{(v + 0.5) / 255 * 2 - 1:.6f}" for j, v in enumerate(img.flatten()))
            lines.append(f"{lab + 1} {feats}\n")
        root.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(bz2.compress("".join(lines).encode()))
        out[split] = (x[:, None], y)
    return out


def _pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def write_cifar10(root, n=6):
    base = root / "cifar-10-batches-py"
    _pickle(base / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    out = {}
    x, y = images(5 * n, 32, 32, 3), labels(5 * n, 10)
    for b in range(5):
        sl = slice(b * n, (b + 1) * n)
        _pickle(
            base / f"data_batch_{b + 1}", {"data": x[sl].transpose(0, 3, 1, 2).reshape(n, -1), "labels": y[sl].tolist()}
        )
    out["train"] = (x.transpose(0, 3, 1, 2), y)
    xt, yt = images(n, 32, 32, 3), labels(n, 10)[::-1].copy()
    _pickle(base / "test_batch", {"data": xt.transpose(0, 3, 1, 2).reshape(n, -1), "labels": yt.tolist()})
    out["test"] = (xt.transpose(0, 3, 1, 2), yt)
    return out


def write_cifar100(root, n=6):
    base = root / "cifar-100-python"
    _pickle(base / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    out = {}
    for split in ("train", "test"):
        x, y = images(n, 32, 32, 3), labels(n, 100) * 11 % 100
        _pickle(
            base / split,
            {
                "data": x.transpose(0, 3, 1, 2).reshape(n, -1),
                "fine_labels": y.tolist(),
                "coarse_labels": (y // 5).tolist(),
            },
        )
        out[split] = (x.transpose(0, 3, 1, 2), y)
    return out


def write_svhn(root, n=6):
    import scipy.io

    out = {}
    for split in ("train", "test"):
        x, y = images(n, 32, 32, 3), labels(n, 10)
        root.mkdir(parents=True, exist_ok=True)
        # SVHN's .mat: X is (32, 32, 3, N), y in 1..10 with 10 meaning digit 0
        scipy.io.savemat(
            root / f"{split}_32x32.mat", {"X": x.transpose(1, 2, 3, 0), "y": np.where(y == 0, 10, y).reshape(-1, 1)}
        )
        out[split] = (x.transpose(0, 3, 1, 2), y)
    return out


def write_stl10(root, n=4):
    base = root / "stl10_binary"
    base.mkdir(parents=True, exist_ok=True)
    out = {}
    for split in ("train", "test"):
        x, y = images(n, 96, 96, 3), labels(n, 10)
        chw = x.transpose(0, 3, 1, 2)
        # STL-10 stores each channel column-major: torchvision transposes (0, 1, 3, 2) on reading
        (base / f"{split}_X.bin").write_bytes(np.ascontiguousarray(chw.transpose(0, 1, 3, 2)).tobytes())
        (base / f"{split}_y.bin").write_bytes((y + 1).astype(np.uint8).tobytes())
        out[split] = (chw, y)
    (base / "unlabeled_X.bin").write_bytes(b"")  # torchvision checks that it exists for any split
    (base / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)))
    return out


def write_gtsrb(root, n=6):
    from PIL import Image

    out = {}
    x, y = images(n, 40, 36, 3), np.sort(labels(n, 43) % 5)  # folders are read in class order
    for i, (img, lab) in enumerate(zip(x, y)):
        folder = root / "gtsrb" / "GTSRB" / "Training" / f"{lab:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"00000_{i:05d}.ppm")
    # torchvision numbers the classes by the sorted folder names present
    present = sorted(set(y.tolist()))
    out["train"] = (x.transpose(0, 3, 1, 2), np.array([present.index(v) for v in y]))
    test_dir = root / "gtsrb" / "GTSRB" / "Final_Test" / "Images"
    test_dir.mkdir(parents=True, exist_ok=True)
    xt, yt = images(n, 30, 33, 3), labels(n, 43)
    with (root / "gtsrb" / "GT-final_test.csv").open("w", newline="") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow(["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"])
        for i, (img, lab) in enumerate(zip(xt, yt)):
            Image.fromarray(img).save(test_dir / f"{i:05d}.ppm")
            w.writerow([f"{i:05d}.ppm", 33, 30, 0, 0, 33, 30, int(lab)])
    out["test"] = (xt.transpose(0, 3, 1, 2), yt)
    return out


def write_semeion(root, n=6):
    x = (np.arange(n * 256).reshape(n, 16, 16) % 3 == 0).astype(np.uint8)  # SEMEION is binary
    y = labels(n, 10)
    lines = []
    for img, lab in zip(x, y):
        onehot = " ".join("1" if k == lab else "0" for k in range(10))
        lines.append(" ".join(f"{v:.4f}" for v in img.flatten()) + " " + onehot + "\n")
    root.mkdir(parents=True, exist_ok=True)
    (root / "semeion.data").write_text("".join(lines))
    return {"all": ((x * 255)[:, None], y)}


WRITERS = {
    "gtsrb": write_gtsrb,
    "semeion": write_semeion,
    "mnist": write_mnist,
    "fashionmnist": write_fashionmnist,
    "kmnist": write_kmnist,
    "emnist": write_emnist,
    "qmnist": write_qmnist,
    "usps": write_usps,
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "svhn": write_svhn,
    "stl10": write_stl10,
}


def skip_md5(monkeypatch) -> None:
    """Let torchvision accept our files: existence instead of the real archives' md5 sums."""
    import os

    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.semeion as semeion
    import torchvision.datasets.stl10 as stl10
    import torchvision.datasets.svhn as svhn

    for module in (cifar, semeion, stl10, svhn):
        monkeypatch.setattr(module, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
