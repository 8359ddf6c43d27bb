"""ThermoLion's code paths: no host syncs, the phase diagnostics, torch.compile and the fused path."""

import copy
import math

import pytest
import torch
from torch.overrides import TorchFunctionMode

from thermolion import ThermoLion

from .noise_streams import NOISE_RNGS, noise_kwargs
from .test_thermolion import F_FIRST_STEP, NOISE_OFF, SHAPES, _apply, _model_and_grads


# ------------------------------------------------------------------ diagnostics and host syncs
class _NoHostSync(TorchFunctionMode):
    """Fails on any read of a tensor's value to the host, except of the tensors in ``allowed``."""

    FORBIDDEN = {"item", "tolist", "__bool__", "__float__", "__int__", "numpy", "cpu", "__index__"}

    def __init__(self, allowed=()):
        super().__init__()
        self.allowed = {id(t) for t in allowed}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.FORBIDDEN and not (args and id(args[0]) in self.allowed):
            raise AssertionError(f"host synchronisation inside step(): Tensor.{func.__name__}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("foreach", [False, True])
def test_step_reads_nothing_back_to_the_host(foreach):
    model, grads = _model_and_grads()
    opt = ThermoLion(model.parameters(), foreach=foreach, track_stats=True, bias_correction=True)
    _apply(model, opt, grads[:1])
    # torch.optim's convention: the step counts are CPU tensors (read without a device sync), on the
    # device with capturable; nothing else is read
    steps = [s["step"] for s in opt.state.values()]
    assert all(s.device.type == "cpu" and s.dtype == torch.float32 for s in steps)
    with _NoHostSync(allowed=steps):
        _apply(model, opt, grads[1:3])
    assert opt.read_stats()  # the single sync happens here, outside step()
    if foreach:  # capturable: not even those (the reference path reads its steps, by design)
        capturable = ThermoLion(model.parameters(), capturable=True, track_stats=True)
        with _NoHostSync():
            _apply(model, capturable, grads[:2])


@pytest.mark.parametrize("foreach", [False, True])
def test_track_stats_matches_hand_computed_first_steps(foreach):
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = ThermoLion([p], foreach=foreach, track_stats=True, temp_decay=0.5, noise=False)
    p.grad = torch.tensor([1.0, -2.0, 0.0, 0.0], dtype=torch.float64)
    opt.step()
    s = opt.read_stats()
    lam = math.tanh(1.0)
    assert s["gate_mean"] == pytest.approx(2 * lam / 4, rel=1e-6)
    assert s["gas_fraction"] == pytest.approx(0.5)  # the two untouched elements have lam = 0
    assert s["alignment_rate"] == pytest.approx(0.5)
    assert s["update_over_lr"] == pytest.approx(2 * F_FIRST_STEP / 4, rel=1e-6)
    assert s["temperature"] == pytest.approx(0.5)
    assert opt.read_stats() == {}  # reset after reading
    for _ in range(2):
        p.grad = torch.tensor([1.0, -2.0, 0.0, 0.0], dtype=torch.float64)
        opt.step()
    assert opt.read_stats()["temperature"] == pytest.approx((0.25 + 0.125) / 2)


# ------------------------------------------------------------------ torch.compile
@pytest.mark.slow
def test_compiled_step_matches_eager():
    model, grads = _model_and_grads()
    twin = copy.deepcopy(model)
    eager = ThermoLion(model.parameters(), **NOISE_OFF)
    compiled = ThermoLion(twin.parameters(), **NOISE_OFF)
    compiled_step = torch.compile(compiled.step, backend="inductor", fullgraph=False)
    for gs in grads[:4]:
        for p, q, g in zip(model.parameters(), twin.parameters(), gs):
            p.grad, q.grad = g.clone(), g.clone()
        eager.step()
        compiled_step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ fused (compiled) path
@pytest.mark.parametrize(
    "kw",
    [
        dict(track_stats=True),  # noise on, with diagnostics
        dict(temp_decay=0.9, bias_correction=True, maximize=True, boost=0.0, scale=1.5),
        dict(noise_scale="unit", track_stats=True),
    ],
)
@pytest.mark.parametrize("rng", NOISE_RNGS)
@pytest.mark.slow
def test_fused_path_matches_foreach_path_in_float64(kw, rng):
    gen_data = torch.Generator().manual_seed(11)
    inits = [torch.randn(s, generator=gen_data, dtype=torch.float64) for s in SHAPES]
    grads = [[torch.randn(s, generator=gen_data, dtype=torch.float64) for s in SHAPES] for _ in range(12)]
    runs = []
    for fused in (False, True):
        params = [torch.nn.Parameter(x.clone()) for x in inits]
        opt = ThermoLion(params, fused=fused, **noise_kwargs(rng, 4), **kw)
        for gs in grads:
            for p, g in zip(params, gs):
                p.grad = g.clone()
            opt.step()
        runs.append((params, opt.read_stats()))
    (p_fe, s_fe), (p_fu, s_fu) = runs
    for a, b in zip(p_fe, p_fu):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)
    assert s_fu.keys() == s_fe.keys()
    for key in s_fe:
        assert s_fu[key] == pytest.approx(s_fe[key], rel=1e-10)


def test_auto_mode_fuses_large_buckets_only(monkeypatch):
    import thermolion.functional as tl
    import thermolion.fused as tf

    used = []
    monkeypatch.setattr(tf, "fused_thermolion", lambda *a, **k: used.append("fused") or True)
    monkeypatch.setattr(tl, "_multi_tensor_thermolion", lambda *a, **k: used.append("foreach"))
    for n in (tl.FUSED_MIN_ELEMENTS - 1, tl.FUSED_MIN_ELEMENTS):
        p = torch.nn.Parameter(torch.zeros(n))
        p.grad = torch.ones(n)
        ThermoLion([p]).step()
    assert used == ["foreach", "fused"]
    with pytest.raises(ValueError, match="exclude"):
        ThermoLion([p], foreach=False, fused=True)


@pytest.mark.parametrize("rng", NOISE_RNGS)
def test_fused_fallback_after_a_failing_first_call_equals_the_foreach_step(monkeypatch, rng):
    import thermolion.fused as tl

    def half_run_then_fail(ps, gs, ms, vs, *args):  # as Dynamo does when a trace fails midway
        ms[0].add_(1.0)
        vs[-1].add_(1.0)
        raise RuntimeError("simulated compile failure")

    monkeypatch.setitem(tl._COMPILED, "kernel", half_run_then_fail)
    monkeypatch.setattr(tl, "_VERIFIED", set())
    model, grads = _model_and_grads()
    twin = copy.deepcopy(model)
    fused = ThermoLion(model.parameters(), fused=True, **noise_kwargs(rng, 2))
    plain = ThermoLion(twin.parameters(), fused=False, **noise_kwargs(rng, 2))
    with pytest.warns(UserWarning, match="failed to compile"):
        _apply(model, fused, grads[:1])
    _apply(model, fused, grads[1:3])  # later steps use foreach
    _apply(twin, plain, grads[:3])
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    assert tl._COMPILED["kernel"] is None


def test_a_new_layout_that_fails_to_compile_in_a_later_bucket_undoes_the_whole_step(monkeypatch):
    import thermolion.fused as tl

    calls = []

    def float32_only(ps, gs, ms, vs, *args):  # the eager bucket function; "fails to compile" for float64
        calls.append(ps[0].dtype)
        if ps[0].dtype == torch.float64:
            ms[0].add_(1.0)  # as Dynamo may, before failing
            raise RuntimeError("simulated: recompile limit reached")
        return tl._fused_bucket(ps, gs, ms, vs, *args)

    monkeypatch.setitem(tl._COMPILED, "kernel", float32_only)
    monkeypatch.setattr(tl, "_VERIFIED", {"another model's layout"})  # the compiler works in this process
    monkeypatch.setattr(tl, "_FAILED", set())

    def run(**kw):
        gen = torch.Generator().manual_seed(1)
        ps = [
            torch.nn.Parameter(torch.randn(6, 5, generator=gen)),
            torch.nn.Parameter(torch.randn(7, generator=gen).double()),
        ]
        opt = ThermoLion(ps, generator=torch.Generator().manual_seed(2), **kw)
        for _ in range(3):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            opt.step()
        return ps

    with pytest.warns(UserWarning, match="failed to compile"):
        fused = run(fused=True)
    assert calls == [torch.float32, torch.float64]  # the first bucket ran, the second failed: both undone
    assert tl._COMPILED["kernel"] is float32_only and len(tl._FAILED) == 1  # that layout only, on foreach
    for a, b in zip(fused, run(fused=False)):
        assert torch.equal(a, b)


def test_the_fused_threshold_is_public_as_the_readme_names_it():
    import thermolion
    from thermolion import functional

    assert thermolion.FUSED_MIN_ELEMENTS == functional.FUSED_MIN_ELEMENTS == 1 << 22


# ------------------------------------------------------------------ capturable, compiled buckets, cheap diagnostics
def _run(steps, shapes=SHAPES, dtype=torch.float64, seed=4, rng="torch", **kw):
    gen_data = torch.Generator().manual_seed(11)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen_data, dtype=dtype)) for s in shapes]
    opt = ThermoLion(params, **noise_kwargs(rng, seed), **kw)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen_data, dtype=dtype)
        opt.step()
    return params, opt


@pytest.mark.slow
def test_a_compiled_capturable_step_never_recompiles_across_the_end_of_the_noise():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    fused, opt = _run(500, fused=True, capturable=True)  # the noise ends at step 459
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    assert all(torch.is_tensor(s["step"]) and s["step"].item() == 500 for s in opt.state.values())
    reference, _ = _run(500, foreach=False)
    for a, b in zip(reference, fused):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_capturable_on_the_cpu_equals_the_default_path():
    for kw in (dict(), dict(bias_correction=True, noise_scale="unit", track_stats=True)):
        default, d_opt = _run(470, fused=False, **kw)
        capt, c_opt = _run(470, fused=False, capturable=True, **kw)
        for a, b in zip(default, capt):
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)
        if kw.get("track_stats"):
            want, got = d_opt.read_stats(), c_opt.read_stats()
            assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.slow
def test_the_cheap_diagnostics_equal_the_plain_sums_on_the_same_step():
    shapes = [(64, 32, 3, 3), (64,), (10, 256)]
    for fused in (False, True):
        _, cheap = _run(3, shapes, torch.float32, track_stats=True, fused=fused)
        _, plain = _run(3, shapes, torch.float32, track_stats=True, foreach=False)
        got, want = cheap.read_stats(), plain.read_stats()
        assert got.keys() == want.keys()
        for key in want:  # float32 sums (|u|: a serial float32 norm) against float64 sums
            assert got[key] == pytest.approx(want[key], rel=2e-5 if key == "update_over_lr" else 1e-6), key


def test_stats_every_samples_the_diagnostics_of_every_nth_step():
    _, every = _run(4, track_stats=True, stats_every=2, noise=False)
    per_step = []
    gen_data = torch.Generator().manual_seed(11)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen_data, dtype=torch.float64)) for s in SHAPES]
    opt = ThermoLion(params, track_stats=True, noise=False)
    for _ in range(4):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen_data, dtype=torch.float64)
        opt.step()
        per_step.append(opt.read_stats())
    sampled = every.read_stats()
    for key in sampled:  # steps 1 and 3 (the 0th and 2nd calls), equally weighted
        assert sampled[key] == pytest.approx((per_step[0][key] + per_step[2][key]) / 2, rel=1e-12)
    with pytest.raises(ValueError, match="stats_every"):
        ThermoLion(params, stats_every=0)


@pytest.mark.slow
@pytest.mark.parametrize("rng", NOISE_RNGS)
def test_channels_last_parameters_take_the_fused_path(rng):
    import thermolion.fused as tf

    calls = []
    real = tf.fused_kernel()
    tf._COMPILED["kernel"] = lambda *a: calls.append(1) or real(*a)
    try:
        runs = []
        for fused in (True, False):
            gen = torch.Generator().manual_seed(3)
            w = torch.nn.Parameter(torch.randn(8, 4, 3, 3, generator=gen).to(memory_format=torch.channels_last))
            opt = ThermoLion([w], fused=fused, **noise_kwargs(rng, 1))
            for _ in range(3):
                w.grad = torch.randn(8, 4, 3, 3, generator=gen).to(memory_format=torch.channels_last)
                opt.step()
            runs.append(w)
    finally:
        tf._COMPILED["kernel"] = real
    assert len(calls) == 3 and runs[0].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-5, atol=1e-6)
