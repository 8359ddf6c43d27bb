"""CUDA checks (make test-gpu on a GPU machine; every test skips without CUDA)."""

import copy

import pytest
import torch

from runners.sweep import job as T
from thermolion import ThermoLion
from thermolion.philox import noise_key, range_normals

from .noise_streams import NOISE_RNGS, noise_kwargs
from .test_harness import _metric_rows, config, die_after_checkpoint, read_metrics

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run make test-gpu there)"),
]


@pytest.mark.parametrize("rng", NOISE_RNGS)
@pytest.mark.parametrize("noise", [True, False])
def test_fused_path_on_cuda_matches_the_per_tensor_reference(noise, rng):
    gen = torch.Generator(device="cuda").manual_seed(0)
    shapes = [(4096, 1024), (1024,), (64, 3, 3, 3), (7,)]  # 4.2M elements: the fused path by size too
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, device="cuda")) for s in shapes]
    grads = [[torch.randn(s, generator=gen, device="cuda") for s in shapes] for _ in range(8)]
    twin = copy.deepcopy(params)
    fused = ThermoLion(params, fused=True, noise=noise, **noise_kwargs(rng, 1, "cuda"))
    ref = ThermoLion(twin, foreach=False, noise=noise, **noise_kwargs(rng, 1, "cuda"))
    for gs in grads:
        for p, q, g in zip(params, twin, gs):
            p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        ref.step()
    for p, q in zip(params, twin):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_counter_based_noise_on_cuda_is_the_cpus():
    # the same integers on any device (Philox in int64 on Triton as in C++); the float part to rounding
    for n, start in ((1, 0), (1000, 7), (3_000_001, 2**32 - 5)):
        cpu = range_normals(n, start, noise_key(12345, 9, 2, torch.device("cpu")))
        cuda = range_normals(n, start, noise_key(12345, 9, 2, torch.device("cuda")))
        torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=2e-6)


def test_a_cuda_run_with_counter_based_noise_equals_the_cpu_run_to_rounding():
    runs = []
    for device in ("cpu", "cuda"):
        gen = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s, generator=gen).to(device)) for s in ((300, 200), (50,))]
        opt = ThermoLion(params, seed=3)
        for _ in range(5):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen).to(device)
            opt.step()
        runs.append([p.detach().cpu() for p in params])
    for a, b in zip(*runs):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_end_to_end_run_on_cuda(tmp_path):
    result = T.train(config(tmp_path, "thermolion", device="cuda", epochs=3))
    rows = read_metrics(result.run_dir)
    assert result.status == "done" and float(rows[-1]["eval_acc"]) > 80
    assert float(rows[-1]["step_time_ms"]) > 0  # timed with CUDA events


def test_killed_run_on_cuda_resumes_and_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    reference = T.train(config(tmp_path / "ref", "thermolion", device="cuda", epochs=4, deterministic=True))
    cfg = config(tmp_path / "killed", "thermolion", device="cuda", epochs=4, deterministic=True)
    real_save = die_after_checkpoint(monkeypatch, 2)
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


@pytest.mark.parametrize(
    "kw",
    [dict(), dict(fused=False), dict(noise=False, track_stats=True), dict(capturable=True, track_stats=True)],
)
def test_thermolion_step_never_syncs_with_the_host_on_cuda(kw):
    params = [torch.nn.Parameter(torch.randn(s, device="cuda")) for s in [(256, 64), (64,), (5_000_000,)]]
    opt = ThermoLion(params, **kw)
    for _ in range(2):  # the first step builds state (and compiles the fused path) outside the check
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_bf16_parameters_keep_float32_moments_across_a_cuda_resume():
    p = torch.nn.Parameter(torch.randn(4096, device="cuda", dtype=torch.bfloat16))
    opt = ThermoLion([p])
    for _ in range(3):
        p.grad = torch.randn_like(p)
        opt.step()
    saved = copy.deepcopy(opt.state_dict())
    q = torch.nn.Parameter(p.detach().clone())
    resumed = ThermoLion([q])
    resumed.load_state_dict(saved)
    for key in ("exp_avg", "exp_avg_sq"):
        assert resumed.state[q][key].dtype == torch.float32
        assert torch.equal(resumed.state[q][key], opt.state[p][key])
    g = torch.randn_like(p)
    p.grad, q.grad = g, g.clone()
    opt.step()
    resumed.step()
    assert torch.equal(p, q)  # the same noise too: the generator state travelled with the state dict


def test_a_capturable_step_replays_in_a_cuda_graph_as_it_runs_eagerly():
    shapes = [(256, 64), (64,), (8, 4, 3, 3)]
    gen = torch.Generator(device="cuda").manual_seed(0)
    inits = [torch.randn(s, device="cuda", generator=gen) for s in shapes]
    grads = [torch.randn(s, device="cuda", generator=gen) for s in shapes]
    eager_params = [torch.nn.Parameter(x.clone()) for x in inits]
    graph_params = [torch.nn.Parameter(x.clone()) for x in inits]
    eager = ThermoLion(eager_params, capturable=True, noise=False, fused=False)
    graphed = ThermoLion(graph_params, capturable=True, noise=False, fused=False)
    for p, q, g in zip(eager_params, graph_params, grads):
        p.grad, q.grad = g.clone(), g.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up builds the state outside the capture, as torch's recipe does
        graphed.step()
    torch.cuda.current_stream().wait_stream(side)
    eager.step()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graphed.step()
    for _ in range(5):
        graph.replay()
        eager.step()
    torch.cuda.synchronize()
    for a, b in zip(eager_params, graph_params):
        torch.testing.assert_close(b, a)


def test_the_parallel_launcher_puts_runs_per_gpu_workers_on_each_gpu(tmp_path):
    """hydra/launcher=parallel on a GPU machine: runs_per_gpu workers per GPU, round-robin through
    CUDA_VISIBLE_DEVICES, every run on CUDA and done."""
    import json
    import os
    import subprocess
    import sys

    from .test_harness import ROOT

    gpus = torch.cuda.device_count()
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "run.py", "-m", "hydra/launcher=parallel", "hydra.launcher.runs_per_gpu=2",
         "optimizer=adamw,thermolion", "seed=0,1", "trainer.epochs=1", "data.image_size=16",
         "trainer.progress=off", "hydra.callbacks.sweep_summary.report=false", f"results_dir={results}"],
        cwd=ROOT, env={**os.environ, "THERMOLION_CACHE": str(tmp_path / "cache")}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0 and "4 done" in proc.stdout, proc.stderr[-2000:]
    assert f"2 per GPU on {gpus} GPU(s)" in proc.stdout
    infos = [json.loads(p.read_text()) for p in results.rglob("run.json") if ".hydra" not in p.parts]
    assert len(infos) == 4 and {i["environment"]["device_type"] for i in infos} == {"cuda"}
    logs = sorted(results.rglob(".workers/worker*.log"))
    said = [log.read_text().splitlines()[0] for log in logs]
    assert [line.rsplit("GPU ", 1)[1] for line in said] == [str(k % gpus) for k in range(min(2 * gpus, 4))]
