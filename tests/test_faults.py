"""Faults and device paths that a 2-core CPU never shows by itself: each test fails on the code before its fix."""

import errno
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from runners import datafiles as DS
from runners.atomic import torch_save
from runners.config import RunConfig
from runners.identity import code_version
from runners.report import build_report
from runners.sweep import job as T
from runners.sweep.lock import RunLock
from runners.train import loop as L
from runners.tuning.tune import setting_override
from tests import fake_datasets as fake
from thermolion import Lion, ThermoLion

from .test_harness import ROOT, config, read_metrics
from .test_report import fake_run


# ------------------------------------------------------------------ device paths, checked on the CPU
def test_checkpoint_rng_and_generator_states_load_as_cpu_tensors_whatever_the_device(tmp_path):
    cfg = config(tmp_path, "thermolion")
    opt = ThermoLion([torch.nn.Parameter(torch.zeros(3))], noise_rng="torch")  # the stream with generator states
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()  # the owned generator is made at the first step
    identity = {
        "fingerprint": cfg.fingerprint(),
        "code_version": code_version(),
        "packages": cfg.packages(),
        "environment": {"device_type": "meta"},
    }
    state = {**identity, "rng_cpu": torch.get_rng_state(), "optimizer": opt.state_dict()}
    path = tmp_path / "checkpoint.pt"
    torch_save(state, path)
    # "meta" stands in for a CUDA device: whatever the run's device, set_rng_state and
    # Generator.set_state need CPU byte tensors.
    ckpt = T._load_checkpoint(path, cfg, identity)
    assert ckpt["rng_cpu"].device.type == "cpu" and ckpt["optimizer"]["generator_states"]["cpu"].device.type == "cpu"
    torch.set_rng_state(ckpt["rng_cpu"])
    ThermoLion([torch.nn.Parameter(torch.zeros(3))], noise_rng="torch").load_state_dict(ckpt["optimizer"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_parameters_keep_float32_moments_across_a_state_dict_round_trip(dtype):
    p = torch.nn.Parameter(torch.randn(64, dtype=dtype))
    opt = ThermoLion([p], temp_decay=0.01)
    for _ in range(3):
        p.grad = torch.randn(64, dtype=dtype)
        opt.step()
    q = torch.nn.Parameter(p.detach().clone())
    twin = ThermoLion([q], temp_decay=0.01)
    twin.load_state_dict(opt.state_dict())
    for key in ("exp_avg", "exp_avg_sq"):
        assert twin.state[q][key].dtype == torch.float32 and torch.equal(twin.state[q][key], opt.state[p][key])


def test_deterministic_mode_does_not_leak_into_later_runs_and_settings_are_recorded(tmp_path):
    assert not torch.are_deterministic_algorithms_enabled()
    result = T.train(config(tmp_path, "adamw", epochs=1, deterministic=True))
    assert result.status == "done" and not torch.are_deterministic_algorithms_enabled()
    env = json.loads((result.run_dir / "run.json").read_text())["environment"]
    assert env["cudnn_benchmark"] is False and env["matmul_precision"] == "high"
    assert torch.get_float32_matmul_precision() == "highest"  # restored after the run


def test_complex_parameters_are_refused_with_one_line():
    z = torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))
    for cls in (ThermoLion, Lion):
        with pytest.raises(ValueError, match="does not support complex parameters") as err:
            cls([z])
        assert "\n" not in str(err.value)


# ------------------------------------------------------------------ locks under faults
def test_the_heartbeat_survives_passing_filesystem_errors(tmp_path, monkeypatch):
    real_utime, calls = os.utime, {"n": 0}

    def flaky(path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= 3:
            raise OSError(errno.ESTALE, "Stale file handle")
        return real_utime(path, *args, **kwargs)

    lock = RunLock(tmp_path, heartbeat_s=0.05)
    monkeypatch.setattr(os, "utime", flaky)
    assert lock.acquire()
    real_utime(lock.path, (time.time() - 100, time.time() - 100))
    time.sleep(0.6)
    assert calls["n"] > 3 and lock._thread.is_alive() and lock.holder()["age_s"] < 5
    lock.release()


def test_an_unreadable_lock_ages_by_its_file_and_is_taken_over(tmp_path):
    (tmp_path / "LOCK").write_text("")  # its creator died between create and write
    old = time.time() - 1000
    os.utime(tmp_path / "LOCK", (old, old))
    lock = RunLock(tmp_path, stale_after_s=60)
    assert lock.holder()["age_s"] > 900
    assert lock.acquire()
    lock.release()


def test_a_run_taken_over_by_another_process_stops_writing(tmp_path, monkeypatch):
    cfg = config(tmp_path, "adamw", epochs=3)
    real_save, real_utime = T.save_checkpoint, os.utime

    def broken_utime(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    def stall_then_lose_the_lock(path, state):
        real_save(path, state)
        if state["epoch"] == 1:  # the heartbeat fails from here on; the lock ages; another process takes over
            old = time.time() - 1000
            real_utime(path.parent / "LOCK", (old, old))
            monkeypatch.setattr(os, "utime", broken_utime)
            code = (
                "import sys; from runners.sweep.lock import RunLock; "
                f"sys.exit(0 if RunLock(r'{path.parent}', stale_after_s=60).acquire() else 3)"
            )
            assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0

    monkeypatch.setattr(T, "save_checkpoint", stall_then_lose_the_lock)
    result = T.train(cfg)
    assert result.status == "taken over" and "taken over by" in result.error
    run_dir = cfg.run_dir()
    assert len(read_metrics(run_dir)) == 1 and not (run_dir / "DONE").exists()  # nothing written after epoch 1
    assert (run_dir / "LOCK").exists()  # the new owner's lock is left alone


# ------------------------------------------------------------------ run identity
def test_close_floats_get_their_own_folders_and_a_foreign_finished_run_is_an_error(tmp_path):
    a, b = (config(tmp_path, "adamw") for _ in range(2))
    a = RunConfig(**{**a.__dict__, "optimizer": type(a.optimizer)("adamw", {**a.optimizer.kwargs, "lr": 0.0010000001})})
    b = RunConfig(**{**b.__dict__, "optimizer": type(b.optimizer)("adamw", {**b.optimizer.kwargs, "lr": 0.0010000002})})
    assert a.run_dir() != b.run_dir() and "lr=0.0010000001" in str(a.run_dir())
    plain = config(tmp_path, "adamw", epochs=1)
    done = T.train(plain)
    info_path = done.run_dir / "run.json"
    info_path.write_text(json.dumps({**json.loads(info_path.read_text()), "fingerprint": "0" * 16}))
    again = T.train(plain)
    assert again.status == "failed" and "holds a finished run with other settings" in again.error


def test_the_data_cache_follows_the_source_files_and_the_conversion_code(tmp_path, monkeypatch):
    root, cache = tmp_path / "data", tmp_path / "cache"
    fake.write_mnist(root)
    first = DS.load_split("mnist", "train", root=str(root), download=False, cache_dir=str(cache))
    _perturb(root)
    second = DS.load_split("mnist", "train", root=str(root), download=False, cache_dir=str(cache))
    assert not torch.equal(first[0], second[0])  # new files: converted again, not the old tensors
    monkeypatch.setattr(DS, "conversion_key", lambda info: "other-code")
    for f in (root / "MNIST" / "raw").iterdir():
        f.unlink()
    with pytest.raises(DS.DatasetNotFound):  # a cache from other conversion code is not trusted
        DS.load_split("mnist", "train", root=str(root), download=False, cache_dir=str(cache))


def _perturb(root):
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    data = bytearray(images.read_bytes())
    data[16:] = bytes(255 - b for b in data[16:])
    time.sleep(0.01)
    images.write_bytes(bytes(data))


def test_a_table_that_mixes_hardware_says_so_and_keeps_timings_apart(tmp_path, capsys):
    root = tmp_path / "results"
    for seed, (device, kind) in enumerate((("cpu", "cpu"), ("NVIDIA H200", "cuda"))):
        for opt in ("adamw", "thermolion"):
            fake_run(root, "mnist", opt, seed, 90.0 + seed)
            info_path = root / "paper" / "mnist" / opt / f"seed{seed}" / "run.json"
            info = json.loads(info_path.read_text())
            info_path.write_text(
                json.dumps({**info, "environment": {"device": device, "device_type": kind, "torch_threads": 2}})
            )
    summary = build_report(root, tmp_path / "out")
    table = (tmp_path / "out" / "paper" / "table_final.md").read_text()
    assert "mixes hardware" in table and "mixes hardware" in capsys.readouterr().err
    overhead = summary["protocols"]["paper"]["overhead"]
    assert {"thermolion on cpu (2 threads)", "thermolion on NVIDIA H200"} <= set(overhead)
    assert "Seconds are left out" in (tmp_path / "out" / "paper" / "time_to_target.md").read_text()


def test_tuning_rerun_commands_name_every_setting_by_its_section():
    settings = ["batch_size=1024", "train_subset=5000", "model=resnet18", "width=12", "augment=auto"]
    assert [setting_override(s) for s in settings] == [
        "trainer.batch_size=1024",
        "data.train_subset=5000",
        "model=resnet18",
        "model.width=12",
        "data.augment=auto",
    ]


# ------------------------------------------------------------------ what the curves mean
@pytest.mark.slow
def test_swa_evaluates_the_averaged_model_at_every_point_once_averaging_began(tmp_path):
    result = T.train(config(tmp_path, "swa", epochs=8, eval_every_steps=4))
    evals = [{k: float(v) for k, v in r.items()} for r in _rows(result.run_dir / "evals.csv")]
    ends = {int(r["epoch"]): r["eval_acc"] for r in evals if r["epoch"].is_integer()}
    mids = [r for r in evals if not r["epoch"].is_integer() and r["epoch"] > 7]  # epoch 8, after averaging
    assert mids and all(r["eval_acc"] == ends[7] for r in mids)  # the averaged model changes at epoch ends only


def _rows(path):
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))


def test_a_blow_up_on_the_last_steps_is_diverged_not_truncated(tmp_path, monkeypatch):
    real = L.evaluate
    calls = {"n": 0}

    def nan_at_the_end(*args, **kwargs):
        calls["n"] += 1
        loss, acc = real(*args, **kwargs)
        return (float("nan"), acc) if calls["n"] == 2 else (loss, acc)

    monkeypatch.setattr(L, "evaluate", nan_at_the_end)
    result = T.train(config(tmp_path, "adamw", epochs=2))
    assert result.status == "diverged" and len(read_metrics(result.run_dir)) == 1
    assert json.loads((result.run_dir / "run.json").read_text())["diverged_at_epoch"] == 2
