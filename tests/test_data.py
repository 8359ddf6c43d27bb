"""Data layer: every paper dataset through torchvision's own parsers, caching, splits, loader."""

import os
import urllib.error

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from runners import datafiles as DS
from runners.train import data as D
from runners.train.datasets import DATASETS, PAPER_DATASETS, get_info
from tests import fake_datasets as fake

REAL_ROOT = DS.resolve_root()
HAS_REAL_MNIST = (REAL_ROOT / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()
real_data = pytest.mark.skipif(
    not HAS_REAL_MNIST,
    reason=f"real MNIST/FashionMNIST not found under DATA_ROOT={REAL_ROOT} "
    "(set DATA_ROOT to ../shared/data to run these)",
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("THERMOLION_CACHE", str(d))
    return d


def _reference(name, root, split, size):
    """torchvision's per-sample path (the notebook's): PIL image -> Resize -> uint8 tensor."""
    ds = get_info(name).build(str(root), split, False)
    out = []
    for i in range(len(ds)):
        img = ds[i][0]
        if not isinstance(img, Image.Image):
            img = Image.fromarray(np.asarray(img))
        t = TF.pil_to_tensor(img)
        if t.shape[-2:] != (size, size):
            t = TF.pil_to_tensor(img.resize((size, size), Image.BILINEAR))
        out.append(t)
    return torch.stack(out)


@pytest.mark.parametrize("name", sorted(fake.WRITERS))
def test_each_paper_dataset_loads_from_its_real_file_format(name, tmp_path, cache, monkeypatch):
    fake.skip_md5(monkeypatch)
    root = tmp_path / "data"
    written = fake.WRITERS[name](root)
    info = DATASETS[name]
    for split, (x_written, y_written) in written.items():
        native = x_written.shape[-1]
        for size in sorted({native, 32}):
            x, y = DS.load_split(name, split, root=str(root), download=False, image_size=size)
            assert x.dtype == torch.uint8 and y.dtype == torch.int64
            assert x.shape == (len(y_written), info.channels, size, size)
            assert y.tolist() == list(y_written)
            assert int(y.max()) < info.num_classes
            if size == native and name != "gtsrb":  # exact pixels, right orientation and order
                assert torch.equal(x, torch.from_numpy(np.ascontiguousarray(x_written)).expand_as(x))
            ref = _reference(name, root, split, size)
            if size == native or name == "gtsrb":
                assert torch.equal(x, ref)
            else:  # batched antialiased bilinear vs PIL's: the same image to within rounding
                assert (x.int() - ref.int()).abs().max() <= 3
                assert (x.float() - ref.float()).abs().mean() < 0.5


def test_cache_hit_returns_identical_tensors_without_reading_the_files(tmp_path, cache):
    root = tmp_path / "data"
    fake.write_mnist(root)
    first = DS.load_split("mnist", "train", root=str(root), download=False)
    assert (cache / "mnist-train-32.pt").exists()
    for f in (root / "MNIST" / "raw").iterdir():
        f.unlink()
    second = DS.load_split("mnist", "train", root=str(root), download=False)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    other_size = cache / "mnist-train-28.pt"
    with pytest.raises(DS.DatasetNotFound):  # another size is another cache entry
        DS.load_split("mnist", "train", root=str(root), download=False, image_size=28)
    assert not other_size.exists()


def _rewrite_keeping_times(path, flip_at: int) -> None:
    """Another byte at ``flip_at``, same size, the old access and modification times put back, as
    ``cp -p``, ``rsync -a`` and ``shutil.copytree`` leave a replaced file."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[flip_at] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size


@pytest.mark.parametrize(
    "name, changed",
    [
        ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
        ("gtsrb", "gtsrb/GTSRB/Training/00000/00000_00000.ppm"),  # a file inside a folder entry
    ],
)
def test_a_file_replaced_with_its_old_mtime_and_size_is_read_again(tmp_path, cache, name, changed):
    root = tmp_path / "data"
    getattr(fake, f"write_{name}")(root)
    x, _ = DS.load_split(name, "train", root=str(root), download=False)
    digest = DS.source_digest(name, "train", str(root))
    _rewrite_keeping_times(root / changed, flip_at=-1 if name == "gtsrb" else 16 + 28 * 28 - 1)
    assert DS.source_digest(name, "train", str(root)) != digest
    x2, _ = DS.load_split(name, "train", root=str(root), download=False)
    assert not torch.equal(x, x2)  # the cache was not trusted: the new pixel is there


def test_the_source_digest_is_the_content_wherever_the_files_are(tmp_path, cache):
    import hashlib

    a, b = tmp_path / "a", tmp_path / "b"
    fake.write_mnist(a)
    fake.write_mnist(b)  # the same bytes under another root
    expected = hashlib.sha256()
    for rel in get_info("mnist").files["train"]:
        expected.update(rel.encode() + b"\0" + (a / rel).read_bytes() + b"\0")
    assert DS.source_digest("mnist", "train", str(a)) == expected.hexdigest()[:16]
    assert DS.source_digest("mnist", "train", str(b)) == expected.hexdigest()[:16]
    assert DS.source_digest("mnist", "train", str(tmp_path / "nowhere")) is None


def test_an_interrupted_cache_write_is_never_read(tmp_path, cache, monkeypatch):
    root = tmp_path / "data"
    fake.write_mnist(root)
    real_save = torch.save

    def dying_save(obj, f):
        f.write(b"half a file")  # torch_save hands torch.save its open temporary file
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        DS.load_split("mnist", "train", root=str(root), download=False)
    assert [p.name for p in cache.iterdir()] == ["sources"]  # no partial file under the final name, no temp left
    monkeypatch.setattr(torch, "save", real_save)
    x, y = DS.load_split("mnist", "train", root=str(root), download=False)
    assert len(y) == 6
    (cache / "mnist-train-32.pt").write_bytes(b"garbage from elsewhere")  # unreadable: rebuilt
    x2, _ = DS.load_split("mnist", "train", root=str(root), download=False)
    assert torch.equal(x, x2)


def test_missing_dataset_offline_gives_one_clear_error(tmp_path, cache, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    root = tmp_path / "empty"
    with pytest.raises(DS.DatasetNotFound) as err:
        DS.load_split("kmnist", "train", root=str(root), download=True)
    msg = str(err.value)
    assert "'kmnist'" in msg and str(root) in msg and "scripts/prefetch_data.py kmnist" in msg
    assert "could not be downloaded" in msg and err.value.__cause__ is None
    assert not root.exists()  # the failed download's KMNIST/raw folders removed, the root as it was
    (root / "KMNIST" / "raw").mkdir(parents=True)  # what was there before a failed download stays
    (root / "KMNIST" / "raw" / "notes.txt").write_text("mine")
    with pytest.raises(DS.DatasetNotFound):
        DS.load_split("kmnist", "train", root=str(root), download=True)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "KMNIST",
        "KMNIST/raw",
        "KMNIST/raw/notes.txt",
    ]
    with pytest.raises(DS.DatasetNotFound, match="missing .*cifar-10-batches-py/data_batch_1"):
        DS.load_split("cifar10", "test" if False else "train", root=str(root), download=False)


def test_truncated_file_gives_an_error_naming_it(tmp_path, cache):
    root = tmp_path / "data"
    fake.write_fashionmnist(root)
    bad = root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(DS.DatasetCorrupt, match=f"the file {bad} is truncated or corrupt"):
        DS.load_split("fashionmnist", "train", root=str(root), download=False)


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*mnist.*digits"):
        DS.load_split("imagenet", "train")
    assert len(PAPER_DATASETS) == 12 and set(PAPER_DATASETS) | {"digits"} == set(DATASETS)


def test_digits_loads_offline_with_a_fixed_stratified_holdout(cache):
    x, y = DS.load_split("digits", "all", image_size=8)
    assert x.shape == (1797, 1, 8, 8) and x.max() == 255 and y.bincount().tolist()[0] == 178
    p = D.prepare(D.DataConfig(name="digits"))
    assert len(p.train_y) + len(p.eval_y) == 1797 and len(p.eval_y) == pytest.approx(359, abs=5)
    assert p.train_x.shape[1:] == (1, 32, 32) and p.notes
    # stratified: every class keeps ~20% in the held-out part, and the split ignores the run seed
    share = p.eval_y.bincount().float() / (p.eval_y.bincount() + p.train_y.bincount()).float()
    assert torch.all((share - 0.2).abs() < 0.01)
    assert torch.equal(D.prepare(D.DataConfig(name="digits"), seed=5).eval_y, p.eval_y)


def test_paper_subset_is_the_first_n_samples_normalised_to_minus_one_one(tmp_path, cache):
    root = tmp_path / "data"
    fake.mnist_like(root, "MNIST", {"train": "train", "test": "t10k"}, n=240)
    cfg = D.DataConfig(name="mnist", root=str(root), download=False, train_subset=200, eval_split="train")
    p = D.prepare(cfg)
    full_x, full_y = DS.load_split("mnist", "train", root=str(root), download=False)
    assert p.train_x.shape == (200, 1, 32, 32) and p.train_x.dtype == torch.float32
    assert torch.equal(p.train_y, full_y[:200])
    torch.testing.assert_close(p.train_x, full_x[:200].float() / 255 * 2 - 1)  # Normalize(0.5, 0.5)
    assert p.train_x.min() >= -1 and p.train_x.max() <= 1
    assert p.train_x[0, 0, 16, 16].item() == pytest.approx(10 / 255 * 2 - 1)  # image 0 is grey 10
    assert p.eval_x is p.train_x  # evaluated on the training subset, normalised once


def test_validation_split_is_held_out_of_training_and_label_noise_is_seeded(tmp_path, cache):
    x, y = DS.load_split("digits", "all")
    keep, held = D.stratified_split(y, 0.1, seed=3)
    assert len(set(keep.tolist()) & set(held.tolist())) == 0 and len(keep) + len(held) == len(y)
    noisy = D.corrupt_labels(y, 0.2, 10, seed=1)
    changed = (noisy != y).float().mean().item()
    assert 0.2 * 0.8 < changed <= 0.2  # 20% redrawn uniformly; ~1/10 of those land on the old class
    assert torch.equal(noisy, D.corrupt_labels(y, 0.2, 10, seed=1))
    assert not torch.equal(noisy, D.corrupt_labels(y, 0.2, 10, seed=2))
    p = D.prepare(D.DataConfig(name="digits", eval_split="val", val_fraction=0.1, label_noise=0.2), seed=1)
    assert len(p.eval_y) == pytest.approx(0.1 * (len(y) - 359), abs=10)


def test_tensor_loader_same_seed_same_batches_every_sample_once_last_batch_kept():
    x = torch.arange(10).float().view(10, 1)
    y = torch.arange(10)
    a = D.TensorLoader(x, y, batch_size=4, seed=7)
    b = D.TensorLoader(x, y, batch_size=4, seed=7)
    assert len(a) == 3
    batches = list(a.epoch(0))
    assert [len(yb) for _, yb in batches] == [4, 4, 2]
    assert sorted(torch.cat([yb for _, yb in batches]).tolist()) == list(range(10))
    assert all(torch.equal(xb.squeeze(1).long(), yb) for xb, yb in batches)
    assert all(torch.equal(p[1], q[1]) for p, q in zip(batches, b.epoch(0)))
    assert not torch.equal(a.order(0), a.order(1))
    assert not torch.equal(a.order(0), D.TensorLoader(x, y, 4, seed=8).order(0))
    assert len(D.TensorLoader(x, y, 4, drop_last=True)) == 2


# ------------------------------------------------------------------ real data (../shared/data)
@pytest.mark.slow
@real_data
@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashionmnist", "FashionMNIST")])
def test_real_mnist_and_fashionmnist_have_official_sizes_and_first_labels(name, folder, cache):
    x, y = DS.load_split(name, "train", download=False)
    xt, yt = DS.load_split(name, "test", download=False)
    assert x.shape == (60000, 1, 32, 32) and xt.shape == (10000, 1, 32, 32)
    raw = (REAL_ROOT / folder / "raw" / "train-labels-idx1-ubyte").read_bytes()
    assert y[:20].tolist() == list(raw[8:28])  # the idx label file: 8-byte header, then 1 byte each
    if name == "mnist":
        assert y[:5].tolist() == [5, 0, 4, 1, 9]
    assert y.bincount().sum() == 60000 and yt.bincount().min() > 800


def test_sets_without_a_test_split_keep_the_fixed_holdout_out_of_tuning_and_subset_runs():
    from runners.train.data import prepare
    from runners.train.settings import DataConfig

    paper = prepare(DataConfig("digits", train_subset=5000, eval_split="train"))
    assert len(paper.train_y) == 1797 and paper.eval_x is paper.train_x  # the paper: the whole set, as training
    test = prepare(DataConfig("digits", train_subset=5000, eval_split="test"))  # the paper's budget, test split
    full = prepare(DataConfig("digits", eval_split="test"))
    assert torch.equal(test.eval_x, full.eval_x) and len(test.eval_y) == 359
    tuned = prepare(DataConfig("digits", train_subset=5000, eval_split="val"), seed=0)
    assert len(tuned.train_y) + len(tuned.eval_y) == 1797 - 359  # validation drawn from the 80%, never the test
    held = {tuple(x.flatten().tolist()) for x in full.eval_x}
    assert not held & {tuple(x.flatten().tolist()) for x in tuned.eval_x}
