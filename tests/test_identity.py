"""A run's identity: a finished run is reused only if running it again would give the same numbers.

Each hole the run-identity issue found has a test here that fails on the code before it: a setting that
changes numbers but was outside the identity (eval_every_steps with Schedule-Free), package versions,
and the edits that must not make finished runs stale (a progress default, an error message).
"""

import dataclasses
import hashlib
import inspect
import os
from pathlib import Path

import pytest
import torch
import torchvision

from models import MODELS
from runners import datafiles, identity
from runners import run_folder as rf
from runners.config import RunConfig
from runners.options import RunOptions
from runners.sweep import job as T
from runners.sweep.compose import compose_run
from runners.train.datasets import get_info
from runners.train.settings import DataConfig, TrainerConfig
from thermolion import OPTIMIZERS, get_spec
from thermolion.registry import FromPackage

from .test_harness import ROOT, config, read_metrics
from .test_reliability import copied_checkout

TIMING = ("train_time_s", "epoch_time_s", "step_time_ms")


def _numbers(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run_dir)]


# ------------------------------------------------------------------ settings
def test_schedule_free_relaunched_with_eval_every_steps_trains_again_and_its_numbers_differ(tmp_path):
    plain = T.train(config(tmp_path, "schedulefree_adamw", epochs=2))
    every = T.train(config(tmp_path, "schedulefree_adamw", epochs=2, eval_every_steps=5))
    assert plain.status == every.status == "done"  # trained, not "skipped ... already complete"
    assert every.run_dir != plain.run_dir
    # each mid-epoch evaluation does the eval()/train() round trip, which rounds the weights
    losses = [[float(r["train_loss"]) for r in read_metrics(d)] for d in (plain.run_dir, every.run_dir)]
    assert losses[0][0] == losses[1][0] and losses[0][1] != losses[1][1]


@pytest.mark.parametrize(
    "cls, section, left_out",
    [
        (TrainerConfig, "trainer", {"device"}),  # its resolved type is compared instead
        (DataConfig, "data", {"root", "cache_dir", "download"}),  # where the files are
    ],
)
def test_every_numeric_setting_changes_the_fingerprint(tmp_path, cls, section, left_out):
    base = config(tmp_path, "thermolion")
    changed = {
        bool: lambda v: not v,
        int: lambda v: v + 1,
        float: lambda v: v / 2 if v else 0.25,
        str: lambda v: v + "x",
        type(None): lambda v: 3,
    }
    for f in dataclasses.fields(cls):
        value = getattr(getattr(base, section), f.name)
        other = dataclasses.replace(getattr(base, section), **{f.name: changed[type(value)](value)})
        moved = dataclasses.replace(base, **{section: other})
        assert (moved.fingerprint() == base.fingerprint()) is (f.name in left_out), f"{section}.{f.name}"


def test_run_options_are_not_numeric_settings():
    assert not {f.name for f in dataclasses.fields(RunOptions)} & {f.name for f in dataclasses.fields(TrainerConfig)}
    assert "progress" not in inspect.getsource(TrainerConfig)  # no progress default inside the hashed core


TINY = ["dataset=digits", "data.image_size=8", "data.train_subset=300", "trainer.epochs=2", "trainer.batch_size=128"]


def _pair(tmp_path, *overrides):
    """The same run with the options one way and the other: checkpoints on, bar off, diagnostics on,
    then the reverse."""
    runs = []
    on = ["trainer.checkpoint=true", "trainer.progress=off", "trainer.track_stats=true"]
    for i, options in enumerate((on, ["trainer.checkpoint=false", "trainer.track_stats=false"])):
        cfg = compose_run(*TINY, *overrides, *options, f"results_dir={tmp_path / str(i)}")
        if i == 1:  # the bar drawn, as on a terminal (progress=on)
            cfg = dataclasses.replace(cfg, options=RunOptions(checkpoint=False, progress="on", track_stats=False))
        runs.append(T.train(cfg))
    return runs


def _same_numbers(on: Path, off: Path) -> None:
    """Every number both runs wrote is equal; the diagnostics (track_stats) only add columns."""
    with_stats, without = _numbers(on), _numbers(off)
    assert len(with_stats) == len(without)
    for a, b in zip(with_stats, without):
        assert set(b) <= set(a) and {k: a[k] for k in b} == b


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_run_options_change_no_number_for_any_registered_optimizer(tmp_path, optimizer):
    on, off = _pair(tmp_path, f"optimizer={optimizer}")
    assert on.status == off.status and on.status in ("done", "diverged")
    assert on.run_dir.relative_to(tmp_path / "0") == off.run_dir.relative_to(tmp_path / "1")
    _same_numbers(on.run_dir, off.run_dir)
    if get_spec(optimizer).factory is get_spec("thermolion").factory and on.status == "done":  # the switch reached it
        assert "gate_mean" in read_metrics(on.run_dir)[0] and "gate_mean" not in read_metrics(off.run_dir)[0]


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("optimizer", ["thermolion", "schedulefree_adamw"])  # the modal one refreshes BatchNorm
def test_run_options_change_no_number_for_any_model_family(tmp_path, model, optimizer):
    small = {"convnet": ["model.width=4"], "resnet18": ["model.width=4"], "vit_tiny": ["model.width=12"]}[model]
    extra = ["model.depth=1"] if model == "vit_tiny" else []
    on, off = _pair(tmp_path, f"optimizer={optimizer}", f"model={model}", *small, *extra)
    assert on.status == off.status == "done"
    _same_numbers(on.run_dir, off.run_dir)


# ------------------------------------------------------------------ package versions
def _fake_version(monkeypatch, package: str, version: str):
    """Make importlib.metadata report another installed version of ``package`` (and forget cached lookups)."""
    real = identity.metadata.version
    monkeypatch.setattr(identity.metadata, "version", lambda name: version if name == package else real(name))
    identity.installed.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_versions():
    identity.installed.cache_clear()
    yield
    identity.installed.cache_clear()


def test_a_relaunch_under_another_version_of_an_optimizers_package_is_stale_naming_both(tmp_path, monkeypatch):
    cfg = config(tmp_path, "schedulefree_adamw", epochs=1)
    first = T.train(cfg)
    recorded = rf.read_info(first.run_dir)["packages"]
    assert recorded["schedulefree"] == identity.installed("schedulefree") and {"torch", "torchvision", "numpy"} <= set(
        recorded
    )
    assert "scikit-learn" in recorded  # digits is read by scikit-learn
    assert T.train(cfg).status == "skipped"

    _fake_version(monkeypatch, "schedulefree", "1.4")
    kept = T.train(cfg)
    assert kept.status == "stale" and f"schedulefree {recorded['schedulefree']}, now 1.4" in kept.error
    assert rf.read_info(first.run_dir)["packages"]["schedulefree"] == recorded["schedulefree"]  # kept as it was
    rerun = T.train(dataclasses.replace(cfg, rerun="stale"))
    assert rerun.status == "done" and rf.read_info(first.run_dir)["packages"]["schedulefree"] == "1.4"
    assert T.train(cfg).status == "skipped"  # current again


def test_a_package_only_some_optimizers_use_does_not_touch_the_others(tmp_path, monkeypatch):
    cfg = config(tmp_path, "adamw", epochs=1)
    T.train(cfg)
    assert "schedulefree" not in rf.read_info(cfg.run_dir())["packages"]
    _fake_version(monkeypatch, "schedulefree", "1.4")
    assert T.train(cfg).status == "skipped"
    _fake_version(monkeypatch, "torch", "0.0.1")
    assert T.train(cfg).status == "stale"


def test_every_registry_entry_declares_the_distribution_its_code_comes_from():
    from importlib import metadata

    owners = metadata.packages_distributions()
    for name, spec in OPTIMIZERS.items():
        factory = spec.factory
        module = factory.module if isinstance(factory, FromPackage) else factory.__module__
        top = module.split(".")[0]
        if name == "muon":  # built lazily inside thermolion.registry from timm
            top = "timm"
        declared = set(spec.packages)
        if top in ("thermolion", "torch"):
            assert declared == set(), name  # hashed by code_version, or torch (always recorded)
        else:
            assert declared == set(owners[top]), name


@pytest.mark.slow
def test_a_plug_in_records_its_top_level_package(tmp_path, monkeypatch):
    package = tmp_path / "my_opts"
    package.mkdir()
    (package / "__init__.py").write_text("from torch.optim import SGD as MySGD\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    make = [
        "optimizer=custom",
        "optimizer._target_=my_opts.MySGD",
        "optimizer.lr=0.05",
        "optimizer.name=mysgd",
        *TINY[:3],
        "trainer.epochs=1",
        f"results_dir={tmp_path / 'results'}",
    ]
    cfg = compose_run(*make)
    version = cfg.packages()["my_opts"]
    assert version.startswith("source ")
    assert T.train(cfg).status == "done" and T.train(cfg).status == "skipped"
    (package / "__init__.py").write_text("from torch.optim import SGD as MySGD  # edited\n")
    identity.installed.cache_clear()
    again = T.train(compose_run(*make))
    assert again.status == "stale" and f"my_opts {version}, now source " in again.error
    assert compose_run(*[m.replace("my_opts.MySGD", "torch.optim.SGD") for m in make]).packages().keys() == {
        "torch",
        "torchvision",
        "numpy",
        "scikit-learn",
    }


@pytest.mark.slow
def test_a_checkpoint_from_other_package_versions_is_not_resumed(tmp_path, monkeypatch, capsys):
    cfg = config(tmp_path, "adamw", epochs=3)
    state = {}

    def keep_then_die(path, ckpt):
        state.update(ckpt)
        raise KeyboardInterrupt

    real = T.save_checkpoint
    monkeypatch.setattr(T, "save_checkpoint", keep_then_die)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg)
    monkeypatch.setattr(T, "save_checkpoint", real)
    real(cfg.run_dir() / rf.CHECKPOINT, {**state, "packages": {**state["packages"], "numpy": "1.0"}})
    assert T.train(cfg).status == "done"
    out = capsys.readouterr().out
    assert f"numpy 1.0, now {identity.installed('numpy')}" in out and "starting over" in out and "resuming" not in out


# ------------------------------------------------------------------ what is hashed, and what is not
def test_a_progress_default_or_an_error_message_edit_leaves_the_code_version_and_the_data_cache(tmp_path):
    copy, base = copied_checkout(tmp_path)
    edits = [
        ("runners/options.py", 'progress: str = "auto"', 'progress: str = "off"'),
        ("runners/datafiles.py", "could not be downloaded", "could not be fetched"),
        ("runners/checks.py", "must be >= 1, got", "must be at least 1, got"),
    ]
    for rel, old, new in edits:
        path = copy / rel
        text = path.read_text()
        assert old in text, rel
        path.write_text(text.replace(old, new))
        identity.code_version.cache_clear()
        assert identity.code_version(root=copy) == base, rel
    for rel in ("runners/train/settings.py", "runners/train/backend.py", "runners/train/convert.py"):
        path = copy / rel
        path.write_text(path.read_text() + "# edited\n")
        identity.code_version.cache_clear()
        assert identity.code_version(root=copy) != base, rel
        path.write_text(path.read_text().removesuffix("# edited\n"))
    identity.code_version.cache_clear()


def test_the_data_cache_key_is_the_conversion_code_and_the_reader_versions_only():
    def key(*parts):
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]

    convert = (ROOT / "runners" / "train" / "convert.py").read_text()
    assert datafiles.conversion_key(get_info("mnist")) == key(convert, torch.__version__, torchvision.__version__)
    sklearn = identity.installed("scikit-learn")
    assert datafiles.conversion_key(get_info("digits")) == key(
        convert, torch.__version__, torchvision.__version__, f"scikit-learn {sklearn}"
    )


def test_run_json_carries_its_schema_and_the_identity(tmp_path):
    result = T.train(config(tmp_path, "thermolion", epochs=1))
    info = rf.read_info(result.run_dir)
    assert info["schema"] == rf.SCHEMA and info["code_version"] == identity.code_version()
    assert info["packages"] == RunConfig.packages(config(tmp_path, "thermolion")) and info["environment"][
        "device_type"
    ] in ("cpu", "cuda")


def test_another_cpu_thread_count_is_recorded_and_shown_and_stale_only_under_exact_machine(tmp_path, capsys):
    """CPU reductions split their work by thread, so the count moves the last bits (ThermoLion's mean(v),
    resnet18's backward). By default that is shown, not enforced: the serial launcher (all cores) and the
    parallel one (1 thread a run) must not call each other's runs stale. exact_machine=true enforces it."""
    cfg = config(tmp_path, "adamw", epochs=1)
    exact = dataclasses.replace(cfg, exact_machine=True)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert T.train(cfg).status == "done" and rf.read_info(cfg.run_dir())["environment"]["torch_threads"] == 1
        torch.set_num_threads(2)
        assert T.train(cfg).status == "skipped"
        kept = T.train(exact)
        assert kept.status == "stale" and "CPU threads 1, now 2" in kept.error
        from runners import status

        status.main([str(tmp_path / "results")])
        out = capsys.readouterr().out
        assert "1 done" in out and "1 run(s): CPU threads 1, now 2" in out
    finally:
        torch.set_num_threads(before)
    gpu_run = {"code_version": "x", "packages": {}, "environment": {"device_type": "cuda", "torch_threads": 1}}
    assert identity.stale_reasons(gpu_run, "x", "cuda", machine={"torch_threads": 2}) == []  # not exact: shown only


def test_the_environment_names_the_machine_by_model_and_kernels(tmp_path):
    env = rf.read_info(T.train(config(tmp_path, "adamw", epochs=1)).run_dir)["environment"]
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["torch_threads"] == torch.get_num_threads()
    if Path("/proc/cpuinfo").exists():  # Linux: platform.processor() is empty there, the OS names the model
        models = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ":" in ln]
        assert env["cpu_model"] in models and env["device"] == env["cpu_model"] != "cpu"


@pytest.mark.parametrize(
    "key, was, now",
    [
        ("device", "AMD EPYC", "Intel Xeon"),
        ("cpu_capability", "AVX512", "DEFAULT"),
        ("torch_threads", 1, 2),
        ("gpu_capability", "9.0", "8.0"),
        ("cuda", "13.0", "12.8"),
        ("cudnn", 91000, 90100),
    ],
)
def test_every_machine_key_is_shown_and_enforced_only_under_exact_machine(key, was, now):
    keys = {"device", "cpu_capability", "torch_threads", "gpu_capability", "cuda", "cudnn"}
    assert set(identity.MACHINE_KEYS) == keys
    info = {"code_version": "x", "packages": {}, "data_sha": {}, "environment": {"device_type": "cpu", key: was}}
    here = {"device_type": "cpu", key: now}
    assert identity.stale_reasons(info, "x", "cpu", machine=here) == []
    enforced = identity.stale_reasons(info, "x", "cpu", machine=here, exact_machine=True)
    assert len(enforced) == 1 and str(was) in enforced[0] and str(now) in enforced[0]
    recorded = {**info, "config": {"exact_machine": True}}  # the run's own setting, when the caller has none
    assert identity.stale_reasons(recorded, "x", "cpu", machine=here) == enforced


# ------------------------------------------------------------------ the data's content
def _mnist_run(tmp_path, root: Path, *extra):
    return compose_run(
        "dataset=mnist",
        "data.image_size=8",
        "trainer.epochs=1",
        "trainer.progress=off",
        "optimizer=adamw",
        f"data.root={root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"results_dir={tmp_path / 'results'}",
        *extra,
    )


def test_a_finished_run_is_reused_only_on_data_of_the_same_content(tmp_path):
    from . import fake_datasets as fake

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    fake.write_mnist(a)
    fake.write_mnist(b)  # the same bytes under another root
    fake.write_mnist(c, n=8)  # other files
    first = T.train(_mnist_run(tmp_path, a))
    assert first.status == "done"
    recorded = rf.read_info(first.run_dir)["data_sha"]
    assert set(recorded) == {"train", "test"} and all(len(v) == 16 for v in recorded.values())
    assert T.train(_mnist_run(tmp_path, b)).status == "skipped"  # data.root is where, not what
    other = T.train(_mnist_run(tmp_path, c))
    assert other.status == "stale" and f"data train files {recorded['train']}, now " in other.error
    # new files copied over the old path, times kept (cp -p): stale too, never "already complete"
    for f in (c / "MNIST" / "raw").iterdir():
        target = a / "MNIST" / "raw" / f.name
        st = target.stat()
        target.write_bytes(f.read_bytes())
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = T.train(_mnist_run(tmp_path, a))
    assert again.status == "stale" and recorded["train"] in again.error
    rerun = T.train(_mnist_run(tmp_path, a, "rerun=stale"))
    assert rerun.status == "done" and rf.read_info(rerun.run_dir)["data_sha"] != recorded


def test_a_run_json_without_a_data_hash_is_stale():
    info = {"code_version": "x", "packages": {}, "environment": {"device_type": "cpu"}}
    assert identity.stale_reasons(info, "x", "cpu", data={"train": "abc"}) == [
        "no recorded data hash (written before the data's content was recorded)"
    ]
    assert identity.stale_reasons(info, "x", "cpu") == []  # a reader without the files compares nothing


def test_threads_fixes_a_runs_thread_count_and_reproduces_a_one_thread_run_bit_for_bit(tmp_path):
    """threads=1 under a 2-thread process gives the numbers of a process with 1 thread (what the parallel
    launcher's workers run with), is recorded, and is not part of the identity (a machine key)."""
    if torch.get_num_threads() < 2:
        pytest.skip("one CPU thread here: nothing to compare")
    base = config(tmp_path / "a", "thermolion", epochs=2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = T.train(base)
    finally:
        torch.set_num_threads(before)
    pinned = dataclasses.replace(config(tmp_path / "b", "thermolion", epochs=2), threads=1)
    result = T.train(pinned)
    assert torch.get_num_threads() == before  # the next job of an in-process sweep gets its default back
    assert rf.read_info(result.run_dir)["environment"]["torch_threads"] == 1
    assert _numbers(result.run_dir) == _numbers(one.run_dir)
    assert pinned.fingerprint() == base.fingerprint() and pinned.run_dir().name == base.run_dir().name
