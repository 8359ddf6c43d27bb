"""Resume equivalence, stated as a property of the registry: for every registered optimizer and every lr
schedule, a run checkpointed after its first epoch through the harness's own save and load, then
rebuilt and restored, ends with bit-identical weights, optimizer state and metrics to the run that was
never interrupted. A new registry entry or schedule joins by default."""

import pytest
import torch

from runners.options import SCHEDULES, ConfigError
from runners.sweep import job as T
from runners.sweep.compose import compose_run
from runners.train import loop
from thermolion import OPTIMIZERS

from .test_harness import TIMING

# 8x8 digits on a width-4 ConvNet, batch 256: 6 steps an epoch, so a case costs a fraction of a second.
TINY = (
    "dataset=digits",
    "data.image_size=8",
    "model.width=4",
    "trainer.batch_size=256",
    "trainer.epochs=2",
    "trainer.progress=off",
)


class _Bar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass


def _cfg(tmp_path, optimizer: str, schedule: str):
    return compose_run(
        *TINY,
        f"optimizer={optimizer}",
        f"trainer.schedule={schedule}",
        f"trainer.warmup_steps={3 if schedule == 'warmup_cosine' else 0}",
        f"results_dir={tmp_path / 'results'}",
        f"data.cache_dir={tmp_path.parent / 'cache'}",  # one conversion for every case of a worker
    )


def _numbers(run) -> tuple[list[dict], dict, list]:
    rows = [{k: v for k, v in r.items() if k not in TIMING} for r in run.history]
    weights = {k: v.clone() for k, v in run.model.state_dict().items()}
    lrs = [g.get("lr") for g in run.optimizer.param_groups]
    return rows, weights, lrs


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_run_resumed_from_its_checkpoint_equals_the_uninterrupted_run(tmp_path, name, schedule):
    cpu = torch.device("cpu")
    try:
        cfg = _cfg(tmp_path, name, schedule)
    except ConfigError as err:  # a combination the config boundary refuses is no run to resume
        pytest.skip(f"refused by the config check: {err}")
    straight = loop.build(cfg, cpu)
    list(loop.fit(straight, _Bar()))
    assert straight.status == "done", f"{name}/{schedule} diverged on tiny digits: pick another case"

    first = loop.build(cfg, cpu)
    fitting = loop.fit(first, _Bar())
    next(fitting)  # epoch 1 done: what the job checkpoints before a kill
    path = tmp_path / "checkpoint.pt"
    T.save_checkpoint(path, loop.checkpoint_state(first))
    del first, fitting

    resumed = loop.build(cfg, cpu)
    loop.restore(resumed, torch.load(path, map_location="cpu", weights_only=False))
    list(loop.fit(resumed, _Bar()))

    rows_a, weights_a, lrs_a = _numbers(straight)
    rows_b, weights_b, lrs_b = _numbers(resumed)
    assert rows_b == rows_a, f"{name}/{schedule}: metrics differ after a resume"
    assert lrs_b == lrs_a
    for key, value in weights_a.items():
        assert torch.equal(weights_b[key], value), f"{name}/{schedule}: {key} differs after a resume"
    # What the optimizer trains with, not the wrapper's view: the lr of every inner group too.
    inner = getattr(resumed.optimizer, "optimizer", resumed.optimizer)
    assert [g.get("lr") for g in inner.param_groups] == lrs_a
