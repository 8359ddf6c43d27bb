"""The identity holds exactly what changes numbers, checked by mutation on tiny runs.

* Every setting in the identity (the trainer and data fields of ``RunConfig.result_settings``) is
  flipped on a tiny run. Either the numbers move (for the optimizer and setting named in ``MOVES``), or
  the field is in ``NOT_ON_THIS_CPU`` with the reason it cannot move a number here. A new field must join
  one table or the other: the tables are checked against the dataclasses.
* Every recorded environment input that moves the numbers (the thread count, ATen's CPU kernels) is
  either in the identity or one of ``runners.identity.MACHINE_KEYS``: recorded, shown by
  ``runners.status`` and enforced under ``exact_machine=true``.
"""

import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from runners import identity
from runners import run_folder as rf
from runners.config import _FILE_KEYS, _IDENTITY_TRAINER_KEYS
from runners.sweep import job as T
from runners.sweep.compose import compose_run
from runners.train.settings import DataConfig

from .test_harness import ROOT, TIMING

pytestmark = pytest.mark.slow

BASE = ("dataset=digits", "data.image_size=8", "model.width=4", "trainer.batch_size=256", "trainer.epochs=1")

# field -> (overrides both runs share, the flipped override, the optimizer under which it moves a number)
MOVES = {
    "trainer.epochs": ((), "trainer.epochs=2", "thermolion"),
    "trainer.batch_size": ((), "trainer.batch_size=128", "thermolion"),
    "trainer.schedule": ((), "trainer.schedule=cosine", "thermolion"),
    "trainer.warmup_steps": (
        ("trainer.schedule=warmup_cosine", "trainer.epochs=2", "trainer.warmup_steps=1"),
        "trainer.warmup_steps=4",
        "adamw",
    ),
    "trainer.grad_clip": ((), "trainer.grad_clip=0.01", "adamw"),
    # each mid-epoch evaluation switches Schedule-Free to its evaluation weights and back, which rounds them
    "trainer.eval_every_steps": ((), "trainer.eval_every_steps=2", "schedulefree_adamw"),
    "data.image_size": ((), "data.image_size=12", "thermolion"),
    "data.train_subset": ((), "data.train_subset=500", "thermolion"),
    "data.eval_split": ((), "data.eval_split=val", "thermolion"),
    "data.val_fraction": (("data.eval_split=val",), "data.val_fraction=0.2", "thermolion"),
    "data.test_fraction": ((), "data.test_fraction=0.3", "thermolion"),
    "data.label_noise": ((), "data.label_noise=0.3", "thermolion"),
    "data.augment": ((), "data.augment=crop", "thermolion"),
}
# In the identity, but no number moves on a CPU: each is read by code that runs on CUDA only, or costs a
# C++ compile. They stay in the identity because on a GPU they choose kernels.
NOT_ON_THIS_CPU = {
    "trainer.deterministic": "chooses cuDNN and CUDA kernels (torch.use_deterministic_algorithms)",
    "trainer.compile": "Inductor's fused kernels reorder float operations; costs a C++ compile per run here",
    "trainer.amp": "bf16 autocast, refused on the CPU",
    "trainer.matmul_precision": "TF32 matmuls on CUDA (torch.set_float32_matmul_precision)",
    "trainer.channels_last": "NHWC convolutions for tensor cores; measured here: the same bits as NCHW on the CPU",
}


def test_every_identity_field_is_in_one_table():
    fields = {f"trainer.{k}" for k in _IDENTITY_TRAINER_KEYS}
    fields |= {f"data.{f.name}" for f in dataclasses.fields(DataConfig) if f.name not in _FILE_KEYS}
    assert set(MOVES) | set(NOT_ON_THIS_CPU) == fields
    assert not set(MOVES) & set(NOT_ON_THIS_CPU)


def _numbers(run_dir) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rf.read_metrics(run_dir)[0]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny runs by their overrides, each trained once for the module."""
    root, done = tmp_path_factory.mktemp("mutations"), {}

    def run(*overrides: str):
        if overrides not in done:
            cfg = compose_run(
                *BASE, *overrides, f"results_dir={root / str(len(done))}", f"data.cache_dir={root / 'cache'}"
            )
            result = T.train(cfg)
            assert result.status == "done", f"{overrides}: {result.status} {result.error}"
            done[overrides] = (cfg, _numbers(result.run_dir))
        return done[overrides]

    return run


@pytest.mark.parametrize("field", sorted(MOVES))
def test_every_identity_field_moves_a_number_and_the_fingerprint(trained, field):
    shared, flipped, optimizer = MOVES[field]
    base_cfg, base = trained(f"optimizer={optimizer}", *shared)
    cfg, moved = trained(f"optimizer={optimizer}", *shared, flipped)
    assert moved != base, f"{flipped} changed no number for {optimizer}: move it to NOT_ON_THIS_CPU with a reason"
    assert cfg.fingerprint() != base_cfg.fingerprint() and cfg.run_dir().name == base_cfg.run_dir().name


def test_a_thread_count_that_moves_numbers_is_a_recorded_machine_key(trained, tmp_path):
    """Numbers changed => identity changed, or the input is a machine key (recorded, shown, enforced under
    exact_machine). Measured here: ThermoLion's mean(v) and the convolutions' backward split by thread."""
    cfg, two = trained("optimizer=thermolion", "trainer.epochs=2")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if before > 1 else 2)
        other = T.train(dataclasses.replace(cfg, results_dir=str(tmp_path / "threads")))
    finally:
        torch.set_num_threads(before)
    assert other.status == "done"
    if _numbers(other.run_dir) != two:
        assert "torch_threads" in identity.MACHINE_KEYS
    info, env_now = rf.read_info(other.run_dir), {"device_type": "cpu", "torch_threads": before}
    assert info["environment"]["torch_threads"] != before
    # whatever the numbers did on this CPU: recorded, and named as stale under exact_machine
    reasons = identity.stale_reasons(info, info["code_version"], "cpu", machine=env_now, exact_machine=True)
    assert any(r.startswith("CPU threads ") for r in reasons), reasons


def test_aten_cpu_kernels_are_a_recorded_machine_key(tmp_path):
    """ATEN_CPU_CAPABILITY=default against this CPU's best kernels: recorded in run.json, and a key that
    exact_machine compares (measured on an AVX512 CPU: eval_loss moves in its 7th digit)."""
    best = torch.backends.cpu.get_cpu_capability()
    if best == "DEFAULT":
        pytest.skip("this CPU has no vector kernels beyond the default: nothing to compare")
    runs = {}
    for capability in (None, "default"):
        env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
        if capability:
            env["ATEN_CPU_CAPABILITY"] = capability
        results = tmp_path / (capability or "best")
        args = [*BASE, "optimizer=thermolion", "trainer.progress=off", "hydra.callbacks.sweep_summary.report=false"]
        proc = subprocess.run(
            [sys.executable, "run.py", *args, f"results_dir={results}", f"data.cache_dir={tmp_path / 'cache'}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        (run_dir,) = [p.parent for p in results.rglob(rf.RUN_JSON)]
        runs[capability] = (rf.read_info(run_dir)["environment"], _numbers(run_dir))
    assert runs[None][0]["cpu_capability"] == best and runs["default"][0]["cpu_capability"] == "DEFAULT"
    if runs[None][1] != runs["default"][1]:
        assert "cpu_capability" in identity.MACHINE_KEYS
    notes = identity.machine_notes(runs["default"][0], runs[None][0])
    assert f"ATen CPU kernels DEFAULT, now {best}" in notes  # shown by status, compared under exact_machine
