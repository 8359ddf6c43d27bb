"""Baselines against hand-computed steps; the registry; convergence smoke for every optimizer."""

import copy
import importlib.util
import math
import sys

import pytest
import torch

from thermolion import (
    OPTIMIZERS,
    PAPER_OPTIMIZERS,
    SWATS,
    Lion,
    Lookahead,
    MuAdam,
    ThermoLion,
    build_optimizer,
    registry,
)


def _param(values):
    return torch.nn.Parameter(torch.tensor(values, dtype=torch.float64))


def test_lion_matches_the_standard_update_on_a_hand_computed_example():
    p = _param([1.0, -1.0, 0.5])
    opt = build_optimizer("lion", [p], lr=0.1, weight_decay=0.1)
    assert isinstance(opt, Lion) and opt.defaults["betas"] == (0.9, 0.99)
    p.grad = torch.tensor([0.5, -2.0, 0.0], dtype=torch.float64)
    opt.step()  # c = 0.1*g -> sign [1, -1, 0]; theta*(1 - 0.01) - 0.1*sign; m = 0.01*g
    expected = [1.0 * 0.99 - 0.1, -1.0 * 0.99 + 0.1, 0.5 * 0.99]
    torch.testing.assert_close(p.detach(), torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(opt.state[p]["exp_avg"], torch.tensor([0.005, -0.02, 0.0], dtype=torch.float64))
    p.grad = torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64)
    opt.step()  # c = 0.9*m + 0.1*g = [-0.0955, -0.118, 0.1] -> sign [-1, -1, 1]
    expected = [e * 0.99 + s * -0.1 for e, s in zip(expected, [-1.0, -1.0, 1.0])]
    torch.testing.assert_close(p.detach(), torch.tensor(expected, dtype=torch.float64))


def test_lion_paper_default_lr_is_a_third_of_1e_3():
    assert OPTIMIZERS["lion"].defaults["lr"] == pytest.approx(1e-3 / 3)


def test_muadam_step_is_nesterov_momentum_over_unbiased_rms():
    p = _param([1.0, 2.0])
    opt = MuAdam([p], lr=0.1)
    g1, g2 = [2.0, -1.0], [1.0, 1.0]
    m = [0.0, 0.0]
    v = [0.0, 0.0]
    want = [1.0, 2.0]
    for g in (g1, g2):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        for i in range(2):
            m[i] = 0.9 * m[i] + 0.1 * g[i]
            v[i] = 0.999 * v[i] + 0.001 * g[i] ** 2
            want[i] -= 0.1 * (0.9 * m[i] + 0.1 * g[i]) / (math.sqrt(v[i]) + 1e-8)
    torch.testing.assert_close(p.detach(), torch.tensor(want, dtype=torch.float64))
    # first step by hand: (0.9*0.2 + 0.2) / (sqrt(0.004) + 1e-8) = 0.38/0.0632456 = 6.00833
    assert 1.0 - 0.1 * 0.38 / (math.sqrt(0.004) + 1e-8) == pytest.approx(1.0 - 0.600833, abs=1e-6)


def test_swats_is_adam_until_the_switch_then_plain_sgd():
    p, q = _param([1.0, -1.0]), _param([1.0, -1.0])
    swats = SWATS([p], lr=0.01, switch_step=3)
    adam = torch.optim.Adam([q], lr=0.01)
    grads = [[1.0, 2.0], [0.5, -1.0], [2.0, 2.0], [3.0, -4.0], [1.0, 1.0]]
    for t, g in enumerate(grads, start=1):
        before = p.detach().clone()
        p.grad = torch.tensor(g, dtype=torch.float64)
        q.grad = p.grad.clone()
        swats.step()
        adam.step()
        if t <= 3:  # the notebook's step-size form equals torch Adam's up to where eps sits
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-9)
        else:
            torch.testing.assert_close(p.detach(), before - 0.01 * p.grad)


def test_lookahead_interpolates_every_k_steps_textbook_and_notebook_timing():
    def run(late):
        p = _param([0.0])
        opt = Lookahead(torch.optim.SGD([p], lr=1.0), k=2, alpha=0.5, late_snapshot=late)
        trace = []
        for _ in range(4):
            p.grad = torch.tensor([-1.0], dtype=torch.float64)  # each inner step adds 1
            opt.step()
            trace.append(p.item())
        return trace

    # textbook: slow=0; steps -> 1, 2 -> sync to 0 + 0.5*(2-0) = 1; then 2, 3 -> 1 + 0.5*(3-1) = 2
    assert run(False) == [1.0, 1.0, 2.0, 2.0]
    # notebook: slow copied after the first step (1); after step 2: 1 + 0.5*(2-1) = 1.5; then
    # 2.5 (copied), 3.5 -> 2.5 + 0.5*(3.5-2.5) = 3.0
    assert run(True) == [1.0, 1.5, 2.5, 3.0]


def test_lookahead_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer("lookahead", model)
    grads = [[torch.randn_like(p) for p in model.parameters()] for _ in range(12)]

    def apply(m, o, gs):
        for step in gs:
            for p, g in zip(m.parameters(), step):
                p.grad = g.clone()
            o.step()

    apply(model, opt, grads[:7])
    twin = copy.deepcopy(model)
    twin_opt = build_optimizer("lookahead", twin)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    apply(model, opt, grads[7:])
    apply(twin, twin_opt, grads[7:])
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_lr_scheduler_drives_wrapped_and_plain_optimizers():
    for name in ("lookahead", "thermolion", "lion"):
        opt = build_optimizer(name, [torch.nn.Parameter(torch.zeros(2))])
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        opt.step()
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(OPTIMIZERS[name].defaults["lr"] / 2)


# ------------------------------------------------------------------ registry
def _missing(name: str) -> list[str]:
    """The distributions an entry's code comes from that this environment lacks (``make test-compat``
    installs torch alone: the rivals' packages are the ``bench`` extra's)."""
    return [p for p in OPTIMIZERS[name].packages if importlib.util.find_spec(p) is None]


def test_registry_builds_every_name_with_the_papers_defaults():
    assert set(PAPER_OPTIMIZERS) <= set(OPTIMIZERS) and len(PAPER_OPTIMIZERS) == 9
    for name, spec in OPTIMIZERS.items():
        if _missing(name):
            with pytest.raises(ImportError, match=rf"is not installed: pip install {_missing(name)[0]} "):
                build_optimizer(name, [torch.nn.Parameter(torch.zeros(3))])
            continue
        opt = build_optimizer(name, [torch.nn.Parameter(torch.zeros(3))])
        assert opt.param_groups[0]["lr"] == pytest.approx(spec.defaults["lr"])
    assert isinstance(build_optimizer("thermolion", torch.nn.Linear(2, 2)), ThermoLion)
    assert OPTIMIZERS["swa"].averaging == {"start_epoch": 6, "swa_lr": 0.01}
    assert OPTIMIZERS["adamw"].defaults["weight_decay"] == 0.01
    assert OPTIMIZERS["swa"].defaults["lr"] == 1e-2


@pytest.mark.parametrize("name", sorted(n for n, spec in OPTIMIZERS.items() if spec.packages))
def test_an_entry_whose_package_is_missing_says_in_one_line_what_to_install(name, monkeypatch):
    for package in OPTIMIZERS[name].packages:  # a None in sys.modules makes `import package` fail
        monkeypatch.setitem(sys.modules, package, None)
        for loaded in [m for m in sys.modules if m.startswith(package + ".")]:
            monkeypatch.delitem(sys.modules, loaded)
    registry._muon_class.cache_clear()
    try:
        with pytest.raises(ImportError) as err:
            build_optimizer(name, [torch.nn.Parameter(torch.zeros(3))])
    finally:
        registry._muon_class.cache_clear()
    assert "\n" not in str(err.value) and f"pip install {OPTIMIZERS[name].packages[0]} " in str(err.value)
    assert err.value.__cause__ is None and "thermolion[bench]" in str(err.value)


def test_ablation_variants_are_overrides_of_one_factory():
    base = OPTIMIZERS["thermolion"]
    for name, key, value in [
        ("thermolion_noboost", "boost", 0.0),
        ("thermolion_nonoise", "noise", False),
        ("thermolion_bc", "bias_correction", True),
    ]:
        spec = OPTIMIZERS[name]
        assert spec.factory is base.factory and spec.variant_of == "thermolion"
        assert spec.defaults == {**base.defaults, key: value}
        assert build_optimizer(name, [torch.nn.Parameter(torch.zeros(1))]).defaults[key] == value


def test_unknown_name_and_bad_override_are_clear_errors():
    with pytest.raises(ValueError, match="unknown optimizer 'adamx'.*thermolion"):
        build_optimizer("adamx", [torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match="invalid arguments for optimizer 'lion'.*momentum"):
        build_optimizer("lion", [torch.nn.Parameter(torch.zeros(1))], momentum=0.9)
    with pytest.raises(ValueError, match="lr"):
        build_optimizer("muadam", [torch.nn.Parameter(torch.zeros(1))], lr=-1.0)


@pytest.mark.parametrize("cls", [Lion, MuAdam, SWATS])
def test_baselines_reject_invalid_arguments_and_sparse_grads(cls):
    with pytest.raises(ValueError, match="betas"):
        cls([torch.nn.Parameter(torch.zeros(1))], betas=(0.9, 1.0))
    emb = torch.nn.Embedding(4, 2, sparse=True)
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        cls(emb.parameters()).step()


# ------------------------------------------------------------------ convergence smoke
# Rates at which each optimizer is stable on these problems (SGD and SWATS' SGD phase need small
# steps on Rosenbrock's curvature; ThermoLion's noise scales with sqrt(mean v), i.e. with the
# gradient, so it needs a smaller lr where gradients are in the hundreds).
ROSENBROCK_LR = {
    "lion": 3e-3,
    "swa": 5e-4,
    "swats": 5e-4,
    "sgd": 3e-4,
    "lookahead": 3e-2,
    "lookahead_textbook": 3e-2,
    "thermolion_bc": 3e-4,
    "schedulefree_adamw": 3e-2,  # at 1e-2 or below it is still on its way after 3000 steps
}


# D-Adapt Adam at its own defaults misses both toy targets: its estimate d overshoots on the noisy
# quadratic (d ~ 8 after 1000 steps, the distance only 5x shorter) and stalls Rosenbrock at 0.61 of
# the start. Strict: the day it passes, the expectation is revisited. Real training: tests/test_rivals.py.
def _converges(name: str):
    if _missing(name):
        return pytest.param(name, marks=pytest.mark.skip(reason=f"{name} needs {', '.join(_missing(name))}"))
    if name == "dadapt_adam":
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason="D-Adapt's d overshoots on toy problems"))
    return name


CONVERGES = [_converges(n) for n in sorted(OPTIMIZERS)]


def _kwargs(name, lr):
    if name in ("prodigy", "dadapt_adam"):  # learning-rate-free: they run at their own lr 1.0 (a multiplier)
        return {}
    kw = {"lr": lr}
    if name.startswith("thermolion"):
        kw["seed"] = 0
    if name == "muon":  # a list of 1-D tensors: all of it goes to Muon's AdamW fallback
        kw["fallback_lr"] = lr
    return kw


def _build(name, params, lr):
    opt = build_optimizer(name, params, **_kwargs(name, lr))
    if callable(getattr(opt, "train", None)):  # Schedule-Free steps in train mode only
        opt.train()
    return opt


@pytest.mark.parametrize("name", CONVERGES)
def test_rosenbrock_from_1_5_1_5_gets_at_least_1_4x_closer_to_the_optimum(name):
    # ThermoLion at its default lr 1e-3: at 3e-3 its gradient-scaled noise (sigma ~ 34 at the first step
    # here) throws x off the valley and it diverges in about half of the seeds (10/20 on torch's stream,
    # 9/20 on the counter-based one); at 1e-3 none of 20 seeds does, on either stream
    lr = ROSENBROCK_LR.get(name, 1e-3 if name.startswith("thermolion") else 1e-2)
    x = torch.nn.Parameter(torch.tensor([1.5, 1.5], dtype=torch.float64))
    opt = _build(name, [x], lr)
    start = (x.detach() - 1).norm().item()
    for _ in range(3000):
        opt.zero_grad()
        ((1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2).backward()
        opt.step()
    assert (x.detach() - 1).norm().item() <= start / 1.4


@pytest.mark.parametrize("name", CONVERGES)
def test_noisy_quadratic_shrinks_the_distance_tenfold(name):
    gen = torch.Generator().manual_seed(1)
    y = torch.nn.Parameter(torch.full((50,), 3.0, dtype=torch.float64))
    curvature = torch.linspace(0.1, 2.0, 50, dtype=torch.float64)
    opt = _build(name, [y], 1e-2)
    start = y.detach().norm().item()
    for _ in range(1000):
        opt.zero_grad()
        y.grad = curvature * y.detach() + 0.1 * torch.randn(50, generator=gen, dtype=torch.float64)
        opt.step()
    assert y.detach().norm().item() <= start / 10


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_rosenbrock_at_lr_1e_2_the_authors_noise_diverges_and_unit_noise_converges(seed):
    def run(name):
        x = torch.nn.Parameter(torch.tensor([1.5, 1.5], dtype=torch.float64))
        opt = build_optimizer(name, [x], lr=1e-2, seed=seed)
        for _ in range(3000):
            opt.zero_grad()
            ((1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2).backward()
            opt.step()
        return (x.detach() - 1).norm().item()

    start = math.sqrt(0.5)
    assert not math.isfinite(run("thermolion"))  # noise in gradient units: ~sqrt(mean v) ~ 100s here
    assert run("thermolion_unitnoise") <= start / 4  # noise in lr units: scale-free
