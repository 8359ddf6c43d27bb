"""ThermoLion's numbers on the CPU do not depend on torch.get_num_threads(): mean(v), the one reduction
that feeds the update, is summed in a fixed order (thermolion/shared.py: fixed_order_mean) on every path."""

from __future__ import annotations

import pytest
import torch

from thermolion import ThermoLion
from thermolion.shared import MEAN_CHUNK, fixed_order_mean

from .noise_streams import NOISE_RNGS, noise_kwargs

SHAPES = [(1000, 1000), (4096,), (64, 3, 3, 3), (300_000,)]  # several chunks, one, a tail only, a ragged end
PATHS = {
    "reference": dict(foreach=False),
    "foreach": dict(foreach=True, fused=False),
    "fused": dict(fused=True),
}


def _train(threads: int, path: str, rng: str, steps: int = 20) -> list[torch.Tensor]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
        opt = ThermoLion(ps, lr=1e-2, **noise_kwargs(rng, 1), **PATHS[path])
        grads = torch.Generator().manual_seed(2)
        for _ in range(steps):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=grads)
            opt.step()
        return [p.detach().clone() for p in ps]
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    "path",
    ["reference", "foreach", pytest.param("fused", marks=pytest.mark.slow)],  # fused: a compile
)
@pytest.mark.parametrize("rng", NOISE_RNGS)
def test_20_noisy_steps_on_1_and_2_threads_end_bit_identical(path, rng):
    one, two = _train(1, path, rng), _train(2, path, rng)
    for a, b in zip(one, two):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("n", [1, 7, MEAN_CHUNK - 1, MEAN_CHUNK, MEAN_CHUNK + 1, 2 * MEAN_CHUNK + 3, 1_000_003])
def test_fixed_order_mean_is_the_mean(n):
    v = torch.rand(n, generator=torch.Generator().manual_seed(n))
    exact = v.double().mean()
    assert fixed_order_mean(v).dtype == v.dtype
    torch.testing.assert_close(fixed_order_mean(v).double(), exact, rtol=2e-7, atol=0)
    torch.testing.assert_close(fixed_order_mean(v.view(1, -1)), fixed_order_mean(v), rtol=0, atol=0)
