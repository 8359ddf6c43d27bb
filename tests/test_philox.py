"""The counter-based noise stream (thermolion/philox.py) against published values and the normal law:
Random123's known-answer vectors, randomgen's Philox4x32-10, moments, a KS test on a million draws, no
correlation across steps, tensors or neighbouring elements, and the shard index arithmetic."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from thermolion import ThermoLion
from thermolion.philox import MASK32, local_indices, noise_key, normals, philox4x32, range_normals

# Random123 1.09, examples/kat_vectors: "philox4x32 10 <counter x4> <key x2> <expected x4>"
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK32,) * 4, (MASK32,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),  # the digits of pi
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


def _words(counter, key, n=1):
    return [torch.full((n,), c, dtype=torch.int64) for c in counter], list(key)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("counter, key, expected", KNOWN_ANSWERS)
def test_philox4x32_10_gives_random123s_known_answers(counter, key, expected, compiled):
    fn = torch.compile(philox4x32, dynamic=False) if compiled else philox4x32
    counters, keys = _words(counter, key, n=37)  # 37: a vectorised body and a scalar tail when compiled
    out = fn(*counters, *keys)
    for word, want in zip(out, expected):
        assert word.tolist() == [want] * 37


def test_philox4x32_10_equals_randomgens_on_random_counters_and_keys():
    np = pytest.importorskip("numpy")
    randomgen = pytest.importorskip("randomgen", reason="randomgen (the dev extra) is the independent Philox")
    rng = np.random.default_rng(0)
    for _ in range(200):
        counter = [int(x) for x in rng.integers(0, 2**32, 4)]
        key = [int(x) for x in rng.integers(0, 2**32, 2)]
        bg = randomgen.Philox(number=4, width=32, counter=0, key=0)
        state = bg.state
        value = (sum(c << (32 * i) for i, c in enumerate(counter)) - 1) % 2**128  # it steps before it draws
        state["state"]["counter"] = np.array([(value >> (32 * i)) & MASK32 for i in range(4)], dtype=np.uint32)
        state["state"]["key"] = np.array(key, dtype=np.uint32)
        bg.state = state
        want = [int(x) for x in bg.random_raw(4)]
        got = [int(w) for w in philox4x32(*_words(counter, key)[0], *key)]
        assert got == want, (counter, key)


KEY = noise_key(2**40 + 12345, 17, 3, torch.device("cpu"))


def test_the_key_holds_the_seeds_two_words_the_step_and_the_tensor():
    assert KEY.tolist() == [12345, 256, 17, 3]
    step = torch.tensor(17.0, dtype=torch.float64)  # capturable: a device tensor, read on the device
    assert torch.equal(noise_key(2**40 + 12345, step, 3, torch.device("cpu")), KEY)


@pytest.mark.parametrize("n, start", [(1, 0), (17, 5), (1000, 2**32 - 3), (100_003, 7)])
def test_compiled_and_eager_generators_agree_and_a_range_is_a_slice_of_the_whole(n, start):
    eager = range_normals(n, start, KEY, compiled=False)
    compiled = range_normals(n, start, KEY)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=2e-6)  # the float part: rounding only
    index = torch.arange(start, start + n, dtype=torch.int64)
    assert torch.equal(eager, normals(index, KEY))
    # the high word of the index counts: 2**32 elements further is another number
    assert not torch.equal(normals(index + 2**32, KEY), eager)


def test_a_million_draws_are_standard_normal():
    scipy_stats = pytest.importorskip("scipy.stats")
    z = range_normals(1_000_000, 0, KEY).double()
    n = z.numel()
    assert abs(z.mean().item()) < 4 / math.sqrt(n)
    assert z.var().item() == pytest.approx(1.0, abs=4 * math.sqrt(2 / n))
    assert abs(scipy_stats.skew(z.numpy())) < 4 * math.sqrt(6 / n)
    assert abs(scipy_stats.kurtosis(z.numpy())) < 4 * math.sqrt(24 / n)
    assert scipy_stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    assert z.abs().max().item() <= math.sqrt(-2 * math.log(2**-25)) + 1e-5  # the tails' stated end


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1].item()


def test_draws_are_uncorrelated_across_steps_tensors_and_neighbouring_elements():
    n = 500_000
    bound = 4 / math.sqrt(n)
    base = range_normals(n + 1, 0, noise_key(7, 10, 0, torch.device("cpu")))
    next_step = range_normals(n, 0, noise_key(7, 11, 0, torch.device("cpu")))
    next_tensor = range_normals(n, 0, noise_key(7, 10, 1, torch.device("cpu")))
    other_seed = range_normals(n, 0, noise_key(8, 10, 0, torch.device("cpu")))
    for other in (next_step, next_tensor, other_seed, base[1:]):  # base[1:]: each element's neighbour
        assert abs(_corr(base[:n], other)) < bound
        assert abs(_corr(base[:n] ** 2, other**2)) < bound  # nor in magnitude


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_blocks_flat_indices_are_those_of_the_whole_tensor(data):
    whole = data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    offset = [data.draw(st.integers(0, n - 1)) for n in whole]
    shape = [data.draw(st.integers(0, n - o)) for n, o in zip(whole, offset)]
    want = torch.arange(math.prod(whole)).view(whole)[tuple(slice(o, o + s) for o, s in zip(offset, shape))]
    got = local_indices(shape, whole, offset)
    if isinstance(got, int):  # a row block: one range from its first element
        assert shape[1:] == whole[1:]
        assert torch.equal(torch.arange(got, got + want.numel()), want.reshape(-1))
    else:
        assert torch.equal(got, want.reshape(-1))


def _first_step(n: int, seed: int, tensor: int) -> torch.Tensor:
    """A zero parameter after one default step on a gradient of ones, by hand: m = 0.1, v = 0.01,
    rho = 0.1/(0.1 + 1e-8), aligned, T = 0.99; weight decay of zero is zero."""
    lam = math.tanh(0.1 / (0.1 + 1e-8))
    direction = (1 - lam) * 1.5 + 2.0 * lam * 0.1 / (0.1 + 1e-8)
    sigma = math.sqrt(0.99 * 0.01 + 1e-10)
    xi = range_normals(n, 0, noise_key(seed, 1, tensor, torch.device("cpu"))).double()
    return -1e-3 * (direction + (1 - lam) * sigma * xi)


def test_the_counter_based_stream_is_the_default_and_its_state_is_the_seed_and_the_step():
    p = torch.nn.Parameter(torch.zeros(1000))
    opt = ThermoLion([p], seed=5)
    assert opt.param_groups[0]["noise_rng"] == "philox"
    p.grad = torch.ones(1000)
    opt.step()
    saved = opt.state_dict()
    assert saved["generator_seed"] == 5 and saved["generator_states"] == {} and saved["state"][0]["step"] == 1
    torch.testing.assert_close(p.detach().double(), _first_step(1000, 5, 0), rtol=1e-5, atol=1e-9)


def test_a_generator_and_the_counter_based_stream_are_one_clear_error():
    with pytest.raises(ValueError, match="noise_rng='torch'"):
        ThermoLion([torch.nn.Parameter(torch.zeros(2))], noise_rng="philox", generator=torch.Generator())
    with pytest.raises(ValueError, match="noise_rng must be one of"):
        ThermoLion([torch.nn.Parameter(torch.zeros(2))], noise_rng="mt19937")
    implied = ThermoLion([torch.nn.Parameter(torch.zeros(2))], generator=torch.Generator())
    assert implied.defaults["noise_rng"] == "torch"


@pytest.mark.parametrize("foreach", [False, True])
def test_the_tensor_number_is_the_parameters_position_in_the_optimizer(foreach):
    # two groups, and the first parameter has no gradient: b is still tensor number 1
    a, b = torch.nn.Parameter(torch.zeros(50)), torch.nn.Parameter(torch.zeros(50))
    opt = ThermoLion([{"params": [a]}, {"params": [b]}], seed=9, foreach=foreach)
    b.grad = torch.ones(50)
    opt.step()
    torch.testing.assert_close(b.detach().double(), _first_step(50, 9, 1), rtol=1e-5, atol=1e-9)
    assert (b.detach().double() - _first_step(50, 9, 0)).abs().max() > 1e-6
