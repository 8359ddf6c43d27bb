"""ThermoLion against hand-computed values, math identities and its per-tensor reference path."""

import copy
import math

import pytest
import torch

from thermolion import ThermoLion
from thermolion.functional import NOISE_RNGS

from .noise_streams import noise_kwargs

LR = 1e-3
F_FIRST_STEP = 1.5 + 0.5 * math.tanh(1.0)  # (1-tanh 1)(1+0.5) + 2*1*tanh 1 = 1.88079707797788
RHO_MAX = 0.1 / math.sqrt(0.01 * (1 - 0.9**2 / 0.99))  # Cauchy-Schwarz bound for betas (0.9, 0.99)
NOISE_OFF = dict(temp_decay=0.01)  # T = 0.01 at step 1, never > t_min: deterministic


def scalar_reference(theta, grads, lr, wd=0.0, b1=0.9, b2=0.99, eps=1e-8, boost=0.5, c=2.0, bias_correction=False):
    """The update rule in plain Python floats, element by element (noise off)."""
    theta = list(theta)
    m = [0.0] * len(theta)
    v = [0.0] * len(theta)
    for t, g in enumerate(grads, start=1):
        for i, gi in enumerate(g):
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            mh = m[i] / (1 - b1**t) if bias_correction else m[i]
            vh = v[i] / (1 - b2**t) if bias_correction else v[i]
            d = math.sqrt(vh) + eps
            rho = abs(mh) / d
            lam = math.tanh(rho)
            s = (mh > 0) - (mh < 0)
            a = 1.0 if (m[i] != 0 and gi != 0 and (m[i] > 0) == (gi > 0)) else 0.0
            u = lr * (1 - lam) * s * (1 + boost * a) + lr * lam * c * mh / d
            theta[i] = theta[i] * (1 - lr * wd) - u
    return theta


def run(params_init, grad_seq, **kw):
    p = torch.nn.Parameter(torch.tensor(params_init, dtype=torch.float64))
    opt = ThermoLion([p], **kw)
    for g in grad_seq:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return p.detach(), opt


# ------------------------------------------------------------------ hand-computed steps
@pytest.mark.parametrize("foreach", [False, True])
def test_first_step_moves_each_element_by_lr_times_1_8808_plus_decay(foreach):
    theta0 = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
    p = torch.nn.Parameter(theta0.clone())
    p.grad = torch.tensor([0.3, -2.0, 5.0, 1.0], dtype=torch.float64)
    ThermoLion([p], lr=LR, weight_decay=0.01, foreach=foreach, **NOISE_OFF).step()
    decayed = theta0 * (1 - LR * 0.01)
    step = decayed - p.detach()
    assert F_FIRST_STEP == pytest.approx(1.8808, abs=1e-4)
    torch.testing.assert_close(
        step, LR * F_FIRST_STEP * torch.sign(p.grad), rtol=1e-6, atol=0
    )  # eps shifts rho by ~1e-7


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("bias_correction", [False, True])
def test_two_steps_mixed_signs_zeros_and_misaligned_elements(foreach, bias_correction):
    # e0: momentum and gradient disagree at step 2 (a = 0); e1: agree (a = 1);
    # e2: zero gradient then positive; e3: positive then zero gradient (a = 0); e4: always zero.
    theta = [1.0, -0.5, 0.25, 2.0, 3.0]
    grads = [[1.0, -2.0, 0.0, 0.5, 0.0], [-0.5, -2.0, 3.0, 0.0, 0.0]]
    got, opt = run(
        theta, grads, lr=0.1, weight_decay=0.1, foreach=foreach, bias_correction=bias_correction, **NOISE_OFF
    )
    want = scalar_reference(theta, grads, lr=0.1, wd=0.1, bias_correction=bias_correction)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-13, atol=1e-15)
    assert got[4] == pytest.approx(3.0 * (1 - 0.01) ** 2)  # only decay moves an all-zero element
    if not bias_correction:  # a few numbers worked by hand for the record
        m2 = 0.9 * 0.1 + 0.1 * -0.5  # e0: 0.04 > 0 while g < 0, so a = 0
        v2 = 0.99 * 0.01 + 0.01 * 0.25
        rho = m2 / (math.sqrt(v2) + 1e-8)
        lam = math.tanh(rho)
        u2 = 0.1 * ((1 - lam) * 1.0 + 2.0 * lam * rho)
        theta1 = 1.0 * 0.99 - 0.1 * F_FIRST_STEP
        assert got[0].item() == pytest.approx(theta1 * 0.99 - u2, rel=1e-6)
    assert opt.state[opt.param_groups[0]["params"][0]]["step"] == 2


def test_bias_correction_changes_second_step_but_not_first():
    theta, g1, g2 = [1.0, 1.0], [2.0, -1.0], [0.5, 0.5]
    first_plain, _ = run(theta, [g1], **NOISE_OFF)
    first_bc, _ = run(theta, [g1], bias_correction=True, **NOISE_OFF)
    torch.testing.assert_close(first_plain, first_bc, rtol=1e-6, atol=0)  # rho = 1 either way
    second_plain, _ = run(theta, [g1, g2], **NOISE_OFF)
    second_bc, _ = run(theta, [g1, g2], bias_correction=True, **NOISE_OFF)
    assert not torch.allclose(second_plain, second_bc, rtol=1e-6, atol=0)


# ------------------------------------------------------------------ identities
@pytest.mark.parametrize("foreach", [False, True])
def test_deterministic_update_points_along_sign_m_with_magnitude_F(foreach):
    gen = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(400, generator=gen, dtype=torch.float64))
    opt = ThermoLion([p], lr=LR, weight_decay=0.0, foreach=foreach, **NOISE_OFF)
    for _ in range(30):
        g = torch.randn(400, generator=gen, dtype=torch.float64) * torch.rand(400, generator=gen, dtype=torch.float64)
        g[::7] = 0.0
        before = p.detach().clone()
        p.grad = g
        opt.step()
        u = before - p.detach()
        st = opt.state[p]
        m, v = st["exp_avg"], st["exp_avg_sq"]
        assert torch.equal(torch.sign(u), torch.sign(m))
        rho = m.abs() / (v.sqrt() + 1e-8)
        lam = torch.tanh(rho)
        a = ((torch.sign(m) * torch.sign(g)) > 0).double()
        F = (1 - lam) * (1 + 0.5 * a) + 2.0 * rho * lam
        nz = m != 0
        torch.testing.assert_close(u.abs()[nz] / LR, F[nz], rtol=1e-12, atol=0)


def test_rho_never_exceeds_its_bound_and_an_adversarial_sequence_approaches_it():
    assert RHO_MAX == pytest.approx(2.345, abs=1e-3)
    gen = torch.Generator().manual_seed(1)
    p = torch.nn.Parameter(torch.zeros(2000, dtype=torch.float64))
    opt = ThermoLion([p], **NOISE_OFF)
    worst = 0.0
    for t in range(400):
        scale = torch.exp(torch.randn(2000, generator=gen, dtype=torch.float64) * 3)
        g = torch.randn(2000, generator=gen, dtype=torch.float64) * scale
        g[:100] = (0.99 / 0.9) ** t  # growing same-sign gradients: the Cauchy-Schwarz extremal
        p.grad = g
        opt.step()
        st = opt.state[p]
        rho = st["exp_avg"].abs() / (st["exp_avg_sq"].sqrt() + 1e-8)
        worst = max(worst, rho.max().item())
    assert worst <= RHO_MAX + 1e-9
    assert worst > 0.99 * RHO_MAX


# ------------------------------------------------------------------ the two paths agree
SHAPES = [(7,), (3, 5), (2, 3, 5, 1), (1,), (11, 13)]


def _twin_runs(steps, seed, rng="torch", **kw):
    gen_data = torch.Generator().manual_seed(seed)
    inits = [torch.randn(s, generator=gen_data, dtype=torch.float64) for s in SHAPES]
    grads = [[torch.randn(s, generator=gen_data, dtype=torch.float64) for s in SHAPES] for _ in range(steps)]
    for gs in grads[::5]:
        gs[0][::2] = 0.0  # sprinkle exact zeros
    results = []
    for foreach in (False, True):
        params = [torch.nn.Parameter(x.clone()) for x in inits]
        groups = [{"params": params[:3]}, {"params": params[3:], "lr": 3e-3, "weight_decay": 0.0}]
        opt = ThermoLion(groups, foreach=foreach, **noise_kwargs(rng, 123), **kw)
        for step, gs in enumerate(grads):
            for i, (p, g) in enumerate(zip(params, gs)):
                p.grad = None if (i == 1 and step % 4 == 0) else g.clone()  # p1 skips some steps
            opt.step()
        results.append((params, opt))
    return results


@pytest.mark.parametrize(
    "kw",
    [
        dict(),  # noise on, the author's defaults
        dict(noise=False),
        dict(temp_decay=0.9, bias_correction=True, maximize=True, boost=0.0, scale=1.5),
        dict(noise_scale="unit", bias_correction=True),
    ],
)
@pytest.mark.parametrize("rng", NOISE_RNGS)
def test_foreach_path_matches_per_tensor_reference_in_float64(kw, rng):
    (p_ref, o_ref), (p_fe, o_fe) = _twin_runs(steps=60, seed=7, rng=rng, **kw)
    for a, b in zip(p_ref, p_fe):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)
        sa, sb = o_ref.state[a], o_fe.state[b]
        assert sa["step"] == sb["step"]
        torch.testing.assert_close(sb["exp_avg_sq"], sa["exp_avg_sq"], rtol=1e-12, atol=1e-16)
    assert o_ref.state[p_ref[1]]["step"] == 45  # skipped every 4th of 60 steps


# ------------------------------------------------------------------ noise
@pytest.mark.parametrize("rng", NOISE_RNGS)
def test_noise_has_the_stated_per_element_scale(rng):
    n = 200_000
    gen = torch.Generator().manual_seed(3)
    p = torch.nn.Parameter(torch.zeros(n, dtype=torch.float64))
    opt = ThermoLion([p], lr=LR, weight_decay=0.0, **noise_kwargs(rng, 9))
    for _ in range(2):
        p.grad = torch.randn(n, generator=gen, dtype=torch.float64)
        opt.step()
    p.grad = torch.randn(n, generator=gen, dtype=torch.float64) * 0.3
    quiet = copy.deepcopy(opt)
    for group in quiet.param_groups:
        group["noise"] = False
    quiet_p = quiet.param_groups[0]["params"][0]
    quiet_p.grad = p.grad.clone()
    opt.step()
    quiet.step()
    st = opt.state[p]
    v = st["exp_avg_sq"]
    lam = torch.tanh(st["exp_avg"].abs() / (v.sqrt() + 1e-8))
    sigma = math.sqrt(0.99**3 * v.mean().item() + 1e-10)  # T = delta^t at t = 3
    z = (quiet_p.detach() - p.detach()) / (LR * (1 - lam) * sigma)
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert z.std().item() == pytest.approx(1.0, abs=0.01)


def test_noise_stops_after_the_step_where_temperature_reaches_t_min():
    assert 0.99**458 > 0.01 >= 0.99**459  # on for steps 1..458 with the defaults
    p = torch.nn.Parameter(torch.zeros(3))
    gen = torch.Generator().manual_seed(0)
    opt = ThermoLion([p], generator=gen)
    drew = []
    for _ in range(460):
        p.grad = torch.ones(3)
        before = gen.get_state()
        opt.step()
        drew.append(not torch.equal(before, gen.get_state()))
    assert all(drew[:458]) and not any(drew[458:])


def test_temp_decay_at_or_below_t_min_is_deterministic_from_step_one():
    a, _ = run([1.0, 2.0], [[0.1, -0.2]] * 3, temp_decay=0.01)
    b, _ = run([1.0, 2.0], [[0.1, -0.2]] * 3, noise=False)
    assert torch.equal(a, b)


# ------------------------------------------------------------------ state
def _model_and_grads(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    gen = torch.Generator().manual_seed(seed + 1)
    grads = [[torch.randn(p.shape, generator=gen) for p in model.parameters()] for _ in range(20)]
    return model, grads


def _apply(model, opt, grads):
    for gs in grads:
        for p, g in zip(model.parameters(), gs):
            p.grad = g.clone()
        opt.step()


@pytest.mark.parametrize("foreach", [False, True])
def test_state_dict_round_trip_and_deepcopy_continue_bit_identically(foreach):
    model, grads = _model_and_grads()
    opt = ThermoLion(model.parameters(), foreach=foreach, generator=torch.Generator().manual_seed(5))
    _apply(model, opt, grads[:10])
    saved_opt = copy.deepcopy(opt.state_dict())
    saved_model = copy.deepcopy(model.state_dict())
    twin_model, twin_opt = copy.deepcopy((model, opt))  # one memo: the state stays keyed by the twin's params
    _apply(model, opt, grads[10:])

    fresh_model, _ = _model_and_grads(seed=99)  # same shapes, other values
    fresh_model.load_state_dict(saved_model)
    fresh_opt = ThermoLion(fresh_model.parameters(), foreach=foreach, generator=torch.Generator())
    fresh_opt.load_state_dict(saved_opt)
    _apply(fresh_model, fresh_opt, grads[10:])

    for a, b in zip(model.parameters(), fresh_model.parameters()):
        assert torch.equal(a, b)
    _apply(twin_model, twin_opt, grads[10:])
    for a, b in zip(model.parameters(), twin_model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("noise_rng", NOISE_RNGS)
def test_owned_noise_makes_state_dict_round_trips_continue_identically_with_noise_on(noise_rng):
    # timm's generic check: load one optimizer's state into another, then step both in lockstep.
    model, grads = _model_and_grads()
    torch.manual_seed(0)
    opt = ThermoLion(model.parameters(), noise_rng=noise_rng)  # no generator given: the optimizer owns its noise
    _apply(model, opt, grads[:5])
    twin = copy.deepcopy(model)
    torch.manual_seed(12345)  # a different global seed: must not matter after loading
    twin_opt = ThermoLion(twin.parameters(), noise_rng=noise_rng)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    saved = opt.state_dict()
    assert saved["generator_seed"] == 0  # torch.initial_seed(), read when the noise was first needed
    # the author's stream: one owned generator per device; the counter-based one: the seed and the steps
    assert set(saved["generator_states"]) == ({"cpu"} if noise_rng == "torch" else set())
    _apply(model, opt, grads[5:])
    _apply(twin, twin_opt, grads[5:])
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_owned_generator_is_seeded_from_torch_manual_seed_without_drawing_from_it():
    def trajectory(seed):
        model, grads = _model_and_grads()
        torch.manual_seed(seed)
        opt = ThermoLion(model.parameters())
        _apply(model, opt, grads[:3])
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(trajectory(1), trajectory(1))
    assert not torch.equal(trajectory(1), trajectory(2))  # the noise differs with the seed


def _one_step(grad, seed, **kw):
    p = torch.nn.Parameter(torch.linspace(-1, 1, 64, dtype=torch.float64))
    opt = ThermoLion(
        [p], eps=1e-30, noise_floor=0.0, weight_decay=0.0, generator=torch.Generator().manual_seed(seed), **kw
    )
    before = p.detach().clone()
    for g in (grad, 0.5 * grad.flip(0)):  # two steps so that m and v differ from the gradient
        p.grad = g.clone()
        opt.step()
    return before - p.detach()


@pytest.mark.slow
@pytest.mark.parametrize("foreach, fused", [(False, None), (True, False), (None, True)])
def test_loss_scale_multiplies_grad_noise_and_leaves_unit_noise_and_the_deterministic_step_alone(foreach, fused):
    g = torch.randn(64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    kw = dict(foreach=foreach, fused=fused)
    det = {k: _one_step(k * g, 0, noise=False, **kw) for k in (1.0, 100.0)}
    torch.testing.assert_close(det[100.0], det[1.0], rtol=1e-10, atol=0)  # deterministic: scale-free
    noisy = {k: _one_step(k * g, 0, **kw) for k in (1.0, 100.0)}
    noise = {k: noisy[k] - det[k] for k in noisy}
    assert noise[1.0].abs().min() > 0
    torch.testing.assert_close(noise[100.0], 100.0 * noise[1.0], rtol=1e-8, atol=0)  # "grad": x100
    unit = {k: _one_step(k * g, 0, noise_scale="unit", **kw) for k in (1.0, 100.0)}
    torch.testing.assert_close(unit[100.0], unit[1.0], rtol=1e-10, atol=0)  # "unit": invariant
    assert not torch.allclose(unit[1.0], det[1.0])  # and it does add noise


@pytest.mark.parametrize("rng", NOISE_RNGS)
def test_unit_noise_has_scale_sqrt_t_per_element(rng):
    n = 200_000
    p = torch.nn.Parameter(torch.zeros(n, dtype=torch.float64))
    opt = ThermoLion([p], noise_scale="unit", weight_decay=0.0, **noise_kwargs(rng, 1))
    p.grad = torch.full((n,), 1e-3, dtype=torch.float64)  # rho = 1 at step 1: lam = tanh(1)
    opt.step()
    noise = -p.detach() - LR * F_FIRST_STEP  # every element's deterministic step is lr*F
    expected = LR * (1 - math.tanh(1.0)) * math.sqrt(0.99 + 1e-10)
    assert noise.std().item() == pytest.approx(expected, rel=0.01)
    with pytest.raises(ValueError, match="noise_scale"):
        ThermoLion([p], noise_scale="gradient")


def test_params_without_grad_are_skipped_and_their_temperature_does_not_advance():
    a = torch.nn.Parameter(torch.ones(3))
    b = torch.nn.Parameter(torch.ones(3))
    opt = ThermoLion([a, b], **NOISE_OFF)
    for step in range(5):
        a.grad = torch.ones(3)
        b.grad = torch.ones(3) if step >= 3 else None
        opt.step()
    assert opt.state[a]["step"] == 5 and opt.state[b]["step"] == 2
    # b's two steps equal a fresh tensor's first two steps
    c, _ = run([1.0, 1.0, 1.0], [[1.0] * 3] * 2, **NOISE_OFF)
    torch.testing.assert_close(b.detach().double(), c, rtol=1e-6, atol=0)


def test_closure_is_evaluated_with_grad_and_its_loss_returned():
    p = torch.nn.Parameter(torch.tensor([2.0]))
    opt = ThermoLion([p], **NOISE_OFF)
    calls = []

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        calls.append(loss.item())
        return loss

    loss = opt.step(closure)
    assert loss.item() == 4.0 and calls == [4.0]
    assert p.item() < 2.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("foreach", [False, True])
def test_low_precision_params_keep_float32_state(dtype, foreach):
    init, grads = torch.randn(64), [torch.randn(64) for _ in range(5)]
    low = torch.nn.Parameter(init.to(dtype))
    full = torch.nn.Parameter(init.to(dtype).float())
    o_low = ThermoLion([low], foreach=foreach, lr=1e-2, **NOISE_OFF)
    o_full = ThermoLion([full], foreach=foreach, lr=1e-2, **NOISE_OFF)
    for g in grads:
        low.grad, full.grad = g.to(dtype), g.to(dtype).float()
        o_low.step()
        o_full.step()
        full.data = full.data.to(dtype).float()  # the low-precision run rounds once per step
    assert o_low.state[low]["exp_avg"].dtype == torch.float32
    assert o_low.state[low]["exp_avg_sq"].dtype == torch.float32
    assert low.dtype == dtype
    torch.testing.assert_close(low.float(), full.detach(), rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(lr=-1e-3), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(betas=(1.0, 0.99)), "betas[0]"),
        (dict(betas=(0.9, -0.1)), "betas[1]"),
        (dict(betas=(0.9,)), "pair"),
        (dict(eps=0.0), "eps"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(temp_decay=0.0), "temp_decay"),
        (dict(temp_decay=1.5), "temp_decay"),
        (dict(boost=-1.0), "boost"),
        (dict(scale=float("inf")), "scale"),
        (dict(t0=-1.0), "t0"),
        (dict(t_min=-0.1), "t_min"),
        (dict(noise_floor=-1e-10), "noise_floor"),
        (dict(lr=torch.tensor([1e-3, 1e-3])), "lr"),
        (dict(generator=0), "generator"),
    ],
)
def test_invalid_arguments_raise_a_clear_value_error(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        ThermoLion([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_sparse_gradients_raise():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        ThermoLion(emb.parameters()).step()
