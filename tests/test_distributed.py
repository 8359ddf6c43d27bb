"""ThermoLion under torch.distributed: DDP, ZeroRedundancyOptimizer and FSDP2, in 2 real CPU processes.

The test starts them itself (gloo on 127.0.0.1, a free port, a timeout). Every check runs in one
process group, so the whole file costs one start-up: each rank writes what it saw, and the test
compares the files.
"""

import os
import socket
import sys
import time
import traceback
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.torch_version import TorchVersion

from thermolion import ThermoLion
from thermolion.conventions import DTENSOR_MIN_TORCH, check_dtensor_support
from thermolion.functional import NOISE_RNGS
from thermolion.generators import device_seed as _device_seed

DTENSOR_OK = TorchVersion(torch.__version__) >= DTENSOR_MIN_TORCH
needs_dtensor = pytest.mark.skipif(
    not DTENSOR_OK, reason=f"ThermoLion's DTensor path needs torch >= {DTENSOR_MIN_TORCH} (refused, tested below)"
)

WORLD, STEPS, TIMEOUT_S = 2, 6, 300
pytestmark = [
    pytest.mark.skipif(not dist.is_available(), reason="torch built without torch.distributed"),
    pytest.mark.slow,  # real processes (gloo, spawned ranks): the whole suite's, not the fast tier's
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(seed=0):
    torch.manual_seed(seed)
    # 7 output rows: FSDP2 shards dim 0 unevenly (4 + 3) there
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 7), torch.nn.Linear(7, 3))


def _batches(rank=None):
    """STEPS batches of 4 * WORLD samples: rank ``rank``'s 4 of each, or all of them (None)."""
    gen = torch.Generator().manual_seed(99)
    out = []
    for _ in range(STEPS):
        x, y = torch.randn(4 * WORLD, 6, generator=gen), torch.randn(4 * WORLD, 3, generator=gen)
        mine = slice(None) if rank is None else slice(4 * rank, 4 * rank + 4)
        out.append((x[mine], y[mine]))
    return out


def _train(model, opt, batches):
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def _params(model) -> list:
    return [(p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone() for p in model.parameters()]


def _ddp(rank, results):
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(100 + rank)  # the common recipe: every rank seeds its own global RNG differently
    model = DDP(_model())
    _train(model, ThermoLion(model.parameters()), _batches(rank))
    results["ddp_noise"] = _params(model)

    model = DDP(_model())
    _train(model, ThermoLion(model.parameters(), noise=False), _batches(rank))
    results["ddp_quiet"] = _params(model)
    if rank == 0:  # one process on the concatenated batch (DDP averages the ranks' gradients)
        alone = _model()
        _train(alone, ThermoLion(alone.parameters(), noise=False), _batches())
        results["single_quiet"] = _params(alone)


def _zero(rank, results):
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = DDP(_model())
    opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=ThermoLion, noise=False)
    _train(model, opt, _batches(rank))
    results["zero_quiet"] = _params(model)


def _fsdp_refused(rank, results):
    """An older torch refuses DTensor parameters in one line, at construction (and this torch would too)."""
    from torch.distributed.fsdp import fully_shard

    model = fully_shard(_model())
    for version in {torch.__version__, "2.12.0"}:
        try:
            check_dtensor_support(torch.optim.SGD(model.parameters(), lr=0.1), version=version)
            results.setdefault("fsdp_refused", []).append((version, None))
        except RuntimeError as err:
            results.setdefault("fsdp_refused", []).append((version, str(err)))


def _fsdp(rank, results):
    from torch.distributed.fsdp import fully_shard

    from thermolion import philox

    def sharded(**kw):
        model = _model()
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer)
        fully_shard(model)
        torch.manual_seed(100 + rank)
        opt = ThermoLion(model.parameters(), **kw)
        _train(model, opt, _batches(rank))
        return model, opt

    for rng in NOISE_RNGS:
        for name, kw in (("foreach", {}), ("reference", {"foreach": False}), ("fused", {"fused": True})):
            key = f"fsdp_{rng}_{name}"
            generated = philox.GENERATED[0]
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                model, opt = sharded(noise_rng=rng, **kw)
            results[f"{key}_warnings"] = [str(w.message) for w in seen if "ThermoLion" in str(w.message)]
            results[key] = _params(model)
            # elements of counter-based noise this rank computed, against its shards' elements over the steps
            results[f"{key}_generated"] = philox.GENERATED[0] - generated
            results[f"{key}_local"] = STEPS * sum(p.to_local().numel() for p in model.parameters())
            # mean(v) of a shard's state is a DTensor reduction over the whole parameter
            results[f"{key}_mean_v"] = [opt.state[p]["exp_avg_sq"].mean().full_tensor() for p in model.parameters()]
            results[f"{key}_seed"] = opt._noise.seed
    results["fsdp_foreach_again"] = _params(sharded()[0])
    results["fsdp_quiet"] = _params(sharded(noise=False)[0])
    solo = dist.new_group([0])  # every rank makes the group; only rank 0 steps in it (its seed, no broadcast)
    if rank == 0:  # unsharded, one process, with the noise the sharded runs took from rank 0's seed
        for noise, rng in ((True, "torch"), (True, "philox"), (False, "philox")):
            alone = _model()
            if rng == "torch":
                opt = ThermoLion(alone.parameters(), generator=torch.Generator().manual_seed(_device_seed(100, "cpu")))
            else:
                opt = ThermoLion(alone.parameters(), noise=noise, seed=100, process_group=solo)
            _train(alone, opt, _batches())
            results[f"single_{rng}" if noise else "single_quiet_fsdp"] = _params(alone)
            results["single_elements"] = STEPS * sum(p.numel() for p in alone.parameters())
            if noise:
                results[f"single_{rng}_mean_v"] = [opt.state[p]["exp_avg_sq"].mean() for p in alone.parameters()]


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    results = {}
    try:
        dist.init_process_group("gloo", rank=rank, world_size=WORLD)
        for check in (_ddp, _zero, _fsdp_refused, _fsdp) if DTENSOR_OK else (_ddp, _zero, _fsdp_refused):
            check(rank, results)
    except Exception:  # noqa: BLE001 - reported to the test through the file
        results["error"] = traceback.format_exc()
    finally:
        torch.save(results, Path(out) / f"rank{rank}.pt")
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    ctx = mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the {WORLD} ranks did not finish within {TIMEOUT_S} s")
    loaded = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for r, res in enumerate(loaded):
        assert "error" not in res, f"rank {r}:\n{res['error']}"
    return loaded


def _same(a, b, **tol):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **tol) if tol else torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.slow
def test_ddp_replicas_stay_identical_with_the_noise_on_whatever_each_rank_seeds(ranks):
    _same(ranks[0]["ddp_noise"], ranks[1]["ddp_noise"])


def test_ddp_without_noise_equals_one_process_on_the_whole_batch(ranks):
    _same(ranks[0]["ddp_quiet"], ranks[0]["single_quiet"], rtol=1e-5, atol=1e-6)


def test_zero_redundancy_with_thermolion_equals_ddp(ranks):
    for r in range(WORLD):
        _same(ranks[r]["zero_quiet"], ranks[0]["ddp_quiet"])


def test_dtensor_parameters_on_a_torch_below_the_floor_are_refused_in_one_line(ranks):
    for r in range(WORLD):
        said = dict(ranks[r]["fsdp_refused"])
        assert said["2.12.0"].startswith("ThermoLion on DTensor parameters") and "torch >= 2.13" in said["2.12.0"]
        assert (said[torch.__version__] is None) == DTENSOR_OK


@needs_dtensor
@pytest.mark.parametrize("rng", NOISE_RNGS)
@pytest.mark.parametrize("path", ["foreach", "reference", "fused"])
def test_fsdp2_with_the_noise_on_equals_the_unsharded_run_draw_for_draw(ranks, path, rng):
    key = f"fsdp_{rng}_{path}"
    assert ranks[0][f"{key}_seed"] == ranks[1][f"{key}_seed"] == 100  # rank 0's, broadcast
    for r in range(WORLD):
        _same(ranks[r][key], ranks[0][f"single_{rng}"], rtol=1e-5, atol=1e-6)
        _same(ranks[r][f"{key}_mean_v"], ranks[0][f"single_{rng}_mean_v"], rtol=1e-5, atol=1e-9)
        assert ranks[r][f"{key}_warnings"] == []  # the fused path compiled: no fallback


@needs_dtensor
@pytest.mark.parametrize("path", ["foreach", "reference", "fused"])
def test_fsdp2_ranks_compute_only_their_shards_counter_based_noise(ranks, path):
    key = f"fsdp_philox_{path}"
    for r in range(WORLD):  # the noise is on for every step of this short run
        assert ranks[r][f"{key}_generated"] == ranks[r][f"{key}_local"] < ranks[0]["single_elements"]
    assert sum(ranks[r][f"{key}_generated"] for r in range(WORLD)) == ranks[0]["single_elements"]


@needs_dtensor
def test_fsdp2_runs_repeat_and_without_noise_equal_the_unsharded_run(ranks):
    for r in range(WORLD):
        _same(ranks[r]["fsdp_foreach_again"], ranks[r]["fsdp_philox_foreach"])
        _same(ranks[r]["fsdp_quiet"], ranks[0]["single_quiet_fsdp"], rtol=1e-5, atol=1e-6)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
