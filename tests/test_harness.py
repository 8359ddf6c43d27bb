"""The harness end to end: run.py with Hydra, run folders, pairing, resume, divergence, failures."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models import MODELS
from runners.config import PROTOCOLS, ConfigError, RunConfig
from runners.datafiles import resolve_root
from runners.sweep import job as T
from runners.sweep.compose import compose_run, override
from runners.train import build as B
from runners.train.datasets import DATASETS
from runners.train.settings import DataConfig, TrainerConfig
from thermolion import OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.image_size=16", "trainer.epochs=2", "trainer.progress=off"]
TIMING = {"epoch_time_s", "train_time_s", "step_time_ms"}


def run_py(*args, results, env=None, check=True):
    flags = [a for a in args if a.startswith("-")]  # Hydra wants flags before overrides
    overrides = [a for a in args if not a.startswith("-")]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *flags, f"results_dir={results}", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"run.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def read_metrics(run_dir: Path) -> list[dict]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def config(tmp_path, optimizer="thermolion", dataset="digits", protocol="rigorous", **trainer):
    """What ``run.py`` would run (composed from conf/), small: 16x16 images and 2 epochs."""
    return compose_run(
        f"optimizer={optimizer}",
        f"dataset={dataset}",
        f"protocol={protocol}",
        f"results_dir={tmp_path / 'results'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.image_size=16",
        "trainer.epochs=2",
        "trainer.progress=off",
        *(override(f"trainer.{k}", v) for k, v in trainer.items()),
    )


# ------------------------------------------------------------------ run.py end to end
def die_after_checkpoint(monkeypatch, epoch: int):
    """Make the checkpoint of ``epoch`` the last thing a run writes, as a SIGKILL right after it would
    (a KeyboardInterrupt, which the trainer does not catch); returns the real writer to restore."""
    real_save = T.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        if state["epoch"] == epoch:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(T, "save_checkpoint", save_then_die)
    return real_save


@pytest.mark.slow
def test_single_run_writes_metrics_run_json_and_done(tmp_path):
    proc = run_py(*TINY, results=tmp_path)
    run_dir = tmp_path / "rigorous" / "digits" / "thermolion+epochs=2,image_size=16" / "seed0"
    assert "done" in proc.stdout and str(run_dir) in proc.stdout
    rows = read_metrics(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"]) < 2.5  # ln(10) = 2.30 at start
    assert 50 < float(rows[1]["eval_acc"]) <= 100 and 0 < float(rows[1]["gate_mean"]) < 1
    assert float(rows[1]["temperature"]) == pytest.approx(0.99**18, rel=0.2)  # ~12 steps/epoch
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "done" and info["final"]["epoch"] == 2 and info["seed"] == 0
    assert info["config"]["optimizer"]["name"] == "thermolion" and info["sizes"]["eval_split"] == "test"
    for key in ("python", "torch", "torchvision", "hydra", "git_commit", "git_dirty", "device", "cpu_count"):
        assert key in info["environment"]
    assert (run_dir / "DONE").read_text().strip() == "done"
    assert not (run_dir / "checkpoint.pt").exists()


@pytest.mark.slow
def test_multirun_2x2_makes_4_run_dirs_and_a_relaunch_skips_them(tmp_path):
    args = ["-m", "optimizer=adamw,lion", "seed=0,1", *TINY]
    first = run_py(*args, results=tmp_path)
    dones = sorted(tmp_path.glob("rigorous/digits/*/seed*/DONE"))
    assert len(dones) == 4 and "4 done" in first.stdout
    before = {p: p.stat().st_mtime_ns for p in dones}
    second = run_py(*args, results=tmp_path)
    assert second.stdout.count("already complete (DONE exists)") == 4 and "4 skipped" in second.stdout
    assert {p: p.stat().st_mtime_ns for p in dones} == before


@pytest.mark.slow
def test_failed_and_diverged_runs_do_not_stop_the_sweep_and_failures_set_the_exit_code(tmp_path):
    proc = run_py(
        "-m",
        "optimizer=swa",
        "optimizer.lr=1000,0.01",
        "dataset=digits,mnist",
        f"data.root={_corrupt_mnist(tmp_path / 'data')}",  # files present (the check passes), unreadable
        "data.download=false",
        f"data.cache_dir={tmp_path / 'cache'}",  # an MNIST cache left by earlier runs would serve it
        *TINY,
        results=tmp_path,
        check=False,
    )
    assert proc.returncode == 1
    assert "1 diverged, 1 done, 2 failed" in proc.stdout
    assert proc.stderr.count("FAILED") == 2 and "dataset 'mnist'" in proc.stderr and "Traceback" not in proc.stderr
    assert "final table, rigorous protocol, with epochs 2" in proc.stdout  # the sweep ends with its table
    diverged = next(tmp_path.glob("rigorous/digits/swa_lr=1000*/seed0"))
    info = json.loads((diverged / "run.json").read_text())
    assert info["status"] == "diverged" and (diverged / "DONE").exists()
    failed = next(tmp_path.glob("rigorous/mnist/swa_lr=1000*/seed0"))
    info = json.loads((failed / "run.json").read_text())
    assert info["status"] == "failed" and "DatasetCorrupt" in info["error"]
    assert not (failed / "DONE").exists()  # a relaunch retries it


def _corrupt_mnist(root: Path) -> Path:
    """MNIST's four files, present but truncated: a failure that only reading them finds."""
    from runners.train.datasets import get_info

    for rel in (f for files in get_info("mnist").files.values() for f in files):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"\x00\x00\x08\x03")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("group, bad", [("optimizer", "adamx"), ("dataset", "imagenet")])
def test_unknown_group_option_says_the_choices_in_one_line(tmp_path, group, bad):
    proc = run_py(f"{group}={bad}", results=tmp_path, check=False)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert f"{group}={bad} is not an option of {group} (conf/{group}/); choose one of: " in proc.stderr
    assert ("thermolion" if group == "optimizer" else "fashionmnist") in proc.stderr


# ------------------------------------------------------------------ pairing and determinism
def test_same_seed_gives_every_optimizer_identical_init_and_batches(tmp_path):
    from runners.train.data import TensorLoader, prepare

    a, b = config(tmp_path, "thermolion"), config(tmp_path, "adamw")
    data = prepare(a.data, seed=0)
    model_a, opt_a, _ = B.build_run(a, data, torch.device("cpu"))
    model_b, opt_b, _ = B.build_run(b, data, torch.device("cpu"))
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p, q)
    assert type(opt_a).__name__ == "ThermoLion" and type(opt_b).__name__ == "AdamW"
    seeds = [B.derive_seed(c.seed, c.data.name, "batches") for c in (a, b)]
    orders = [TensorLoader(data.train_x, data.train_y, 128, seed=s).order(0) for s in seeds]
    assert torch.equal(orders[0], orders[1])
    other = config(tmp_path, "thermolion")
    other = RunConfig(**{**other.__dict__, "seed": 1})
    model_c, _, _ = B.build_run(other, data, torch.device("cpu"))
    assert not torch.equal(next(model_c.parameters()), next(model_a.parameters()))


def _metric_rows(run_dir):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run_dir)]


def test_same_seed_same_optimizer_deterministic_gives_identical_metrics(tmp_path):
    cfgs = [config(tmp_path / str(i), "thermolion", deterministic=True) for i in range(2)]
    results = [T.train(c) for c in cfgs]
    assert all(r.status == "done" for r in results)
    assert _metric_rows(results[0].run_dir) == _metric_rows(results[1].run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer, epochs, kill_after", [("thermolion", 4, 2), ("swa", 8, 7)])
def test_killed_run_resumes_at_the_next_epoch_and_matches_an_uninterrupted_run(
    tmp_path, monkeypatch, optimizer, epochs, kill_after
):
    reference = T.train(config(tmp_path / "ref", optimizer, epochs=epochs, deterministic=True))
    cfg = config(tmp_path / "killed", optimizer, epochs=epochs, deterministic=True)
    real_save = die_after_checkpoint(monkeypatch, kill_after)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg)
    run_dir = cfg.run_dir()
    assert not (run_dir / "DONE").exists() and len(read_metrics(run_dir)) == kill_after
    monkeypatch.setattr(T, "save_checkpoint", real_save)
    resumed = T.train(cfg)
    assert resumed.status == "done"
    assert _metric_rows(run_dir) == _metric_rows(reference.run_dir)
    assert T.train(cfg).status == "skipped"


def test_nan_loss_marks_the_run_diverged_and_keeps_the_epochs_done(tmp_path, monkeypatch):
    real_ce = F.cross_entropy
    calls = {"n": 0}

    def poisoned(out, y, *args, **kwargs):
        calls["n"] += 1
        loss = real_ce(out, y, *args, **kwargs)
        return loss * float("nan") if calls["n"] > 15 else loss  # epoch 1 has 12 steps

    monkeypatch.setattr(F, "cross_entropy", poisoned)
    result = T.train(config(tmp_path, "adamw", epochs=3))
    assert result.status == "diverged"
    assert len(read_metrics(result.run_dir)) == 1
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["diverged_at_epoch"] == 2 and info["final"]["epoch"] == 1


# ------------------------------------------------------------------ configuration
@pytest.mark.slow
def test_yaml_defaults_are_generated_from_their_one_source_and_up_to_date(tmp_path, monkeypatch):
    files = {p.stem for p in (ROOT / "conf" / "optimizer").glob("*.yaml")}
    assert files == set(OPTIMIZERS) | {"custom"}  # custom: the plug-in template
    assert {p.stem for p in (ROOT / "conf" / "dataset").glob("*.yaml")} == set(DATASETS)
    check = subprocess.run(
        [sys.executable, "scripts/write_configs.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stderr
    # A hand edit of a generated file is caught (in a copy of conf/).
    sys.path.insert(0, str(ROOT / "scripts"))
    import write_configs

    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    monkeypatch.setattr(write_configs, "CONF", tmp_path / "conf")
    paper = tmp_path / "conf" / "protocol" / "paper.yaml"
    paper.write_text(paper.read_text().replace("batch_size: 1024", "batch_size: 512"))
    assert write_configs.main(["--check"]) == 1
    assert write_configs.main([]) == 0 and "batch_size: 1024" in paper.read_text()


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_composing_conf_gives_the_python_defaults(protocol):
    cfg = compose_run(f"protocol={protocol}", "optimizer=lion", "model=vit_tiny")
    assert cfg.trainer == TrainerConfig(
        epochs=PROTOCOLS[protocol]["epochs"], batch_size=PROTOCOLS[protocol]["batch_size"]
    )
    root, cache = os.environ.get("DATA_ROOT"), os.environ.get("THERMOLION_CACHE")
    assert cfg.data == DataConfig(
        name="digits",
        root=root,
        cache_dir=cache,
        train_subset=PROTOCOLS[protocol]["train_subset"],
        eval_split=PROTOCOLS[protocol]["eval_split"],
    )
    assert cfg.optimizer.kwargs == {
        k: list(v) if isinstance(v, tuple) else v for k, v in OPTIMIZERS["lion"].defaults.items()
    }
    assert cfg.model.resolved() == {"name": "vit_tiny", **MODELS["vit_tiny"]}
    assert cfg.setting_overrides() == {"model": "vit_tiny"}


def test_run_dir_names_protocol_dataset_optimizer_overrides_and_seed(tmp_path):
    cfg = config(tmp_path, "thermolion")
    assert cfg.run_dir().parts[-4:] == ("rigorous", "digits", "thermolion+epochs=2,image_size=16", "seed0")
    tuned = RunConfig(
        **{
            **cfg.__dict__,
            "optimizer": type(cfg.optimizer)("thermolion", {**cfg.optimizer.kwargs, "lr": 0.003, "boost": 0.0}),
        }
    )
    assert tuned.run_dir().parts[-2] == "thermolion_boost=0,lr=0.003+epochs=2,image_size=16"
    assert tuned.fingerprint() != cfg.fingerprint()


def test_invalid_config_values_are_clear_errors(tmp_path):
    base = config(tmp_path).to_dict()
    base["dataset"] = {"name": base["data"].pop("name")}
    bad_trainer = {**base, "trainer": {**base["trainer"], "epochz": 3}}
    with pytest.raises(ConfigError, match="unknown trainer settings \\['epochz'\\]"):
        RunConfig.from_dict(bad_trainer)
    with pytest.raises(ConfigError, match="protocol"):
        RunConfig.from_dict({**base, "protocol": "fancy"})


# ------------------------------------------------------------------ real data
@pytest.mark.slow
@pytest.mark.skipif(
    not (resolve_root() / "MNIST" / "raw" / "train-images-idx3-ubyte").exists(),
    reason="real MNIST not found under DATA_ROOT (set DATA_ROOT=../shared/data)",
)
@pytest.mark.slow
def test_paper_protocol_on_real_mnist_thermolion_reaches_97_percent(tmp_path):
    proc = run_py(
        "protocol=paper",
        "dataset=mnist",
        "optimizer=thermolion",
        "trainer.progress=off",
        f"data.cache_dir={tmp_path / 'cache'}",
        results=tmp_path,
    )
    info = json.loads((tmp_path / "paper" / "mnist" / "thermolion" / "seed0" / "run.json").read_text())
    assert info["sizes"] == {"train": 5000, "eval": 5000, "eval_split": "train"}, proc.stdout
    assert len(read_metrics(tmp_path / "paper" / "mnist" / "thermolion" / "seed0")) == 12
    assert info["final"]["eval_acc"] >= 97.0


@pytest.mark.slow
def test_evaluating_every_few_steps_leaves_thermolions_numbers_and_writes_evals_csv(tmp_path):
    plain = T.train(config(tmp_path / "plain", "thermolion", epochs=2, deterministic=True))
    every = T.train(config(tmp_path / "every", "thermolion", epochs=2, deterministic=True, eval_every_steps=5))
    assert _metric_rows(plain.run_dir) == _metric_rows(every.run_dir)  # noise, batches and steps as before
    # still its own run: for an optimizer with train/eval modes it changes numbers (tests/test_identity.py)
    assert every.run_dir.parent.name == plain.run_dir.parent.name.replace("epochs=2", "epochs=2,eval_every_steps=5")
    with (every.run_dir / "evals.csv").open() as f:
        evals = list(csv.DictReader(f))
    assert [int(r["step"]) for r in evals] == [5, 10, 12, 15, 20, 24]  # 12 steps an epoch, plus epoch ends
    assert [float(r["epoch"]) for r in evals][2] == 1.0 and float(evals[0]["epoch"]) == pytest.approx(5 / 12)
    seconds = [float(r["train_seconds"]) for r in evals]
    assert seconds == sorted(seconds) and seconds[0] > 0
    ends = [r for r in evals if float(r["epoch"]).is_integer()]
    assert [r["eval_acc"] for r in ends] == [r["eval_acc"] for r in read_metrics(every.run_dir)]
    assert [int(r["step"]) for r in read_metrics(plain.run_dir)] == [12, 24] and not (
        plain.run_dir / "evals.csv"
    ).exists()
