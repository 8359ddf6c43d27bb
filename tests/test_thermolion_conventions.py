"""torch.optim's own conventions, as its generic tests (test/test_optim.py, common_optimizers.py) check
them for every optimizer, here for ThermoLion: tensor lr, tensor steps, foreach/fused against the
for-loop path, meta-device construction, zero-element parameters, flag conflicts, older state dicts,
and a global RNG left alone."""

import copy
import pickle
from pathlib import Path

import pytest
import torch

from thermolion import ThermoLion
from thermolion.generators import device_seed as _device_seed

DATA = Path(__file__).parent / "data"
QUIET = dict(temp_decay=0.01)  # the noise off from step 1: exact comparisons


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


def _run(opt_kw, steps=4, lr=1e-2, schedule=None, seed=0):
    model = _model()
    opt = ThermoLion(model.parameters(), lr=lr, generator=torch.Generator().manual_seed(seed), **opt_kw)
    sched = schedule(opt) if schedule else None
    gen = torch.Generator().manual_seed(7)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
        if sched:
            sched.step()
    return [p.detach().clone() for p in model.parameters()], opt


# ------------------------------------------------------------------ lr as a Tensor
@pytest.mark.parametrize(
    "kw",
    [dict(foreach=False), dict(capturable=True), dict(foreach=True, capturable=True), dict(fused=True), dict()],
    ids=["forloop", "capturable", "foreach-capturable", "fused", "default"],
)
@pytest.mark.slow
def test_a_tensor_lr_is_taken_where_torch_takes_one_and_steps_as_the_number(kw):
    want, _ = _run(kw)
    got, opt = _run(kw, lr=torch.tensor(1e-2))
    assert torch.is_tensor(opt.param_groups[0]["lr"])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_a_tensor_lr_is_refused_with_torchs_messages():
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="^lr as a Tensor is not supported for capturable=False and foreach=True$"):
        ThermoLion(params, lr=torch.tensor(1e-3), foreach=True)
    with pytest.raises(ValueError, match="^Tensor lr must be 1-element$"):
        ThermoLion(params, lr=torch.tensor([1e-3, 1e-3]))
    torch.optim.Adam(params, lr=torch.tensor(1e-3), foreach=True, capturable=True)  # the same rules as torch
    opt = ThermoLion(params, foreach=True)
    opt.param_groups[0]["lr"] = torch.tensor(1e-3)  # set later, as a scheduler may: refused at the step
    params[0].grad = torch.ones(2)
    with pytest.raises(RuntimeError, match="lr as a Tensor is not supported for capturable=False and foreach=True"):
        opt.step()


@pytest.mark.slow
def test_a_scheduled_tensor_lr_changes_a_compiled_capturable_step_without_recompiling():
    from torch._dynamo.utils import counters

    def halve(opt):
        return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)

    want, _ = _run(dict(capturable=True, noise=False), steps=5, schedule=halve)
    torch._dynamo.reset()
    counters.clear()
    model = _model()
    opt = ThermoLion(model.parameters(), lr=torch.tensor(1e-2), capturable=True, noise=False)
    sched, step = halve(opt), torch.compile(opt.step)
    gen = torch.Generator().manual_seed(7)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    graphs = []
    for _ in range(5):
        for p in model.parameters():  # in place, as a backward pass accumulates into .grad
            p.grad.copy_(torch.randn(p.shape, generator=gen))
        step()
        sched.step()  # fill_ on the tensor: the compiled step reads the new value
        graphs.append(counters["stats"]["unique_graphs"])
    assert opt.param_groups[0]["lr"].item() == pytest.approx(1e-2 / 32)
    assert graphs[0] >= 1 and graphs[1:] == graphs[:1] * 4  # compiled once, never again
    for a, b in zip(model.parameters(), want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------ steps as tensors; paths agree
@pytest.mark.parametrize(
    "kw, device_steps",
    [(dict(foreach=True), False), (dict(fused=True), True), (dict(capturable=True), True), (dict(fused=False), False)],
)
@pytest.mark.slow
def test_steps_are_float32_tensors_and_every_path_matches_the_for_loop(kw, device_steps):
    want, ref = _run(dict(foreach=False), steps=6)
    got, opt = _run(kw, steps=6)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    for p_ref, p in zip(ref.state.values(), opt.state.values()):
        assert p["step"].dtype == torch.float32 and p["step"].shape == () and p["step"].item() == 6
        torch.testing.assert_close(p["exp_avg_sq"], p_ref["exp_avg_sq"], rtol=1e-5, atol=1e-9)
    assert all(s["step"].device.type == "cpu" for s in ref.state.values())  # the for-loop: on the CPU


@pytest.mark.parametrize("version", ["0.1", "1a46874"])  # 0.1.0; the last commit before the counter-based stream
def test_a_state_dict_saved_by_an_older_version_loads_and_continues_draw_for_draw(version):
    # both drew from torch's generator: a state without noise_rng continues on that stream
    saved = torch.load(DATA / f"thermolion_{version}_state.pt", weights_only=False)
    for name, case in saved.items():
        model = torch.nn.Linear(4, 3)
        model.load_state_dict(case["saved"]["model"])
        kw = {"capturable": True, "generator": torch.Generator()} if name == "capturable" else {}
        opt = ThermoLion(model.parameters(), **kw)
        opt.load_state_dict(case["saved"]["optimizer"])  # int steps and one generator_state, as 0.1 wrote them
        for g in case["grads"][3:]:
            for p, gi in zip(model.parameters(), g):
                p.grad = gi.clone()
            opt.step()
        for key, value in case["final"].items():  # the noise is on: the same draws as 0.1 made
            torch.testing.assert_close(model.state_dict()[key], value, rtol=1e-6, atol=1e-8)
        assert all(torch.is_tensor(s["step"]) and s["step"].item() == 5 for s in opt.state.values())
        assert opt.param_groups[0]["noise_rng"] == "torch"


def test_a_loaded_optimizer_makes_the_same_draws_on_every_device_it_saved():
    model = _model()
    torch.manual_seed(3)
    opt = ThermoLion(model.parameters(), noise_rng="torch")  # the stream with one generator per device
    _ = [setattr(p, "grad", torch.ones_like(p)) for p in model.parameters()]
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    assert sd["generator_seed"] == 3 and set(sd["generator_states"]) == {"cpu"}
    twin_model = copy.deepcopy(model)
    twin = ThermoLion(twin_model.parameters(), noise_rng="torch")
    twin.load_state_dict(sd)
    for o, m in ((opt, model), (twin, twin_model)):
        for p in m.parameters():
            p.grad = torch.ones_like(p)
        o.step()
    for a, b in zip(model.parameters(), twin_model.parameters()):
        assert torch.equal(a, b)


# ------------------------------------------------------------------ construction
def test_building_on_meta_parameters_then_materialising_trains(tmp_path):
    with torch.device("meta"):
        model = torch.nn.Linear(4, 3)
    opt = ThermoLion(model.parameters())  # torch's Adam builds here too
    model.to_empty(device="cpu")
    torch.nn.init.ones_(model.weight)
    torch.nn.init.zeros_(model.bias)
    # to_empty replaces the parameters: the optimizer is built again on them, as FSDP2's recipe does
    opt = ThermoLion(model.parameters())
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    assert torch.isfinite(model.weight).all() and not torch.equal(model.weight, torch.ones(3, 4))


def test_building_leaves_the_global_rng_as_building_adamw_does():
    params = [torch.nn.Parameter(torch.zeros(3))]
    torch.manual_seed(0)
    torch.optim.AdamW(params)
    after_adamw = torch.get_rng_state()
    torch.manual_seed(0)
    opt = ThermoLion(params)
    assert torch.equal(torch.get_rng_state(), after_adamw)
    params[0].grad = torch.ones(3)
    opt.step()  # stepping draws from the optimizer's own generator only
    assert torch.equal(torch.get_rng_state(), after_adamw)


def test_each_device_gets_its_own_noise_stream_from_one_seed():
    opt = ThermoLion([torch.nn.Parameter(torch.zeros(3))], seed=5)
    gen = opt._noise_generator(torch.device("cpu"))
    assert gen is opt._noise_generator(torch.device("cpu"))  # one per device, made once
    assert gen.initial_seed() == _device_seed(5, "cpu")
    seeds = {_device_seed(5, d) for d in ("cpu", "cuda:0", "cuda:1")}
    assert len(seeds) == 3  # parameter groups on two devices no longer replay one noise


@pytest.mark.slow
@pytest.mark.parametrize("kw", [dict(foreach=False), dict(foreach=True), dict(fused=True), dict(capturable=True)])
def test_a_zero_element_parameter_with_a_gradient_is_skipped(kw):
    empty, full = torch.nn.Parameter(torch.zeros(0)), torch.nn.Parameter(torch.ones(3))
    opt = ThermoLion([empty, full], **kw)
    empty.grad, full.grad = torch.zeros(0), torch.ones(3)
    opt.step()
    assert empty not in opt.state and full in opt.state and not torch.equal(full, torch.ones(3))


def test_foreach_and_fused_both_true_raise_as_torch_does():
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(RuntimeError, match="^`fused` and `foreach` cannot be `True` together.$"):
        ThermoLion(params, foreach=True, fused=True)
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together."):
        torch.optim.Adam(params, foreach=True, fused=True)


def test_an_explicit_generator_on_another_device_is_one_clear_error():
    p = torch.nn.Parameter(torch.zeros(2, device="meta"))
    opt = ThermoLion([p], generator=torch.Generator())
    with pytest.raises(ValueError, match="generator is on cpu but parameters are on meta"):
        opt._noise_generator(p.device)
    with pytest.raises(ValueError, match="only without generator"):
        ThermoLion([p], generator=torch.Generator(), seed=1)


def test_deepcopy_and_pickle_keep_the_noise_stream():
    model = _model()
    opt = ThermoLion(model.parameters(), seed=11)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    copies = [copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))]
    draws = [o._noise_generator(torch.device("cpu")).get_state() for o in (opt, *copies)]
    assert all(torch.equal(d, draws[0]) for d in draws)


@pytest.mark.parametrize(  # Adam refuses capturable on a CPU; the fused case compiles a kernel (~12 s)
    "kw", [dict(), dict(foreach=False), pytest.param(dict(fused=True), marks=pytest.mark.slow)]
)
def test_the_step_dtype_follows_the_default_dtype_as_torch_optim_does(kw):
    before = torch.get_default_dtype()
    try:
        for default in (torch.float32, torch.float64):
            torch.set_default_dtype(default)
            p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
            p.grad, q.grad = torch.ones(3), torch.ones(3)
            ours, theirs = ThermoLion([p], **kw), torch.optim.Adam([q], **kw)
            ours.step()
            theirs.step()
            assert ours.state[p]["step"].dtype == theirs.state[q]["step"].dtype, default
    finally:
        torch.set_default_dtype(before)


def test_fused_on_a_device_without_fused_kernels_raises_torchs_message():
    messages = []
    for cls in (ThermoLion, torch.optim.Adam):
        p = torch.nn.Parameter(torch.zeros(3, device="meta"))
        p.grad = torch.zeros(3, device="meta")
        with pytest.raises(RuntimeError) as err:
            cls([p], fused=True).step()
        messages.append(str(err.value))
    assert messages[0] == messages[1] and "supported devices" in messages[0]
