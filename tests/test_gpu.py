"""CUDA checks (make test-gpu on a GPU machine; every test skips without CUDA)."""

import copy

import pytest
import torch

from runners import trainer as T
from thermolion import ThermoLion

from .test_harness import _metric_rows, config, read_metrics

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run make test-gpu there)")]


@pytest.mark.parametrize("noise", [True, False])
def test_fused_path_on_cuda_matches_the_per_tensor_reference(noise):
    gen = torch.Generator(device="cuda").manual_seed(0)
    shapes = [(4096, 1024), (1024,), (64, 3, 3, 3), (7,)]  # 4.2M elements: the fused path by size too
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, device="cuda")) for s in shapes]
    grads = [[torch.randn(s, generator=gen, device="cuda") for s in shapes] for _ in range(8)]
    twin = copy.deepcopy(params)
    fused = ThermoLion(params, fused=True, noise=noise, generator=torch.Generator(device="cuda").manual_seed(1))
    ref = ThermoLion(twin, foreach=False, noise=noise, generator=torch.Generator(device="cuda").manual_seed(1))
    for gs in grads:
        for p, q, g in zip(params, twin, gs):
            p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        ref.step()
    for p, q in zip(params, twin):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_end_to_end_run_on_cuda(tmp_path):
    result = T.train(config(tmp_path, "thermolion", device="cuda", epochs=3))
    rows = read_metrics(result.run_dir)
    assert result.status == "done" and float(rows[-1]["eval_acc"]) > 80
    assert float(rows[-1]["step_time_ms"]) > 0  # timed with CUDA events


def test_killed_run_on_cuda_resumes_and_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    reference = T.train(config(tmp_path / "ref", "thermolion", device="cuda", epochs=4, deterministic=True))
    cfg = config(tmp_path / "killed", "thermolion", device="cuda", epochs=4, deterministic=True)
    real_save = T.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(T, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg)
    monkeypatch.setattr(T, "save_checkpoint", real_save)
    assert T.train(cfg).status == "done"
    assert _metric_rows(cfg.run_dir()) == _metric_rows(reference.run_dir)


def test_bf16_autocast_and_channels_last_train(tmp_path):
    result = T.train(config(tmp_path, "adamw", device="cuda", epochs=3, amp=True, channels_last=True))
    rows = read_metrics(result.run_dir)
    assert result.status == "done" and float(rows[-1]["eval_acc"]) > 80
    assert "amp=True" in str(result.run_dir)  # bf16 changes the numbers: its own runs


def test_deterministic_mode_on_cuda_repeats_bit_for_bit(tmp_path):
    runs = [T.train(config(tmp_path / str(i), "thermolion", device="cuda", deterministic=True)) for i in range(2)]
    assert _metric_rows(runs[0].run_dir) == _metric_rows(runs[1].run_dir)
