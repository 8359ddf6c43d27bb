"""The self-tuning rivals: packages at their defaults, optimizers with modes, effective lr, plug-in checks."""

import copy
import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from models import ModelConfig, build_model
from runners.config import ConfigError
from runners.plugins import PluginError, meta_parameters, resolve_target
from runners.report.collect import collect
from runners.report.self_tuning import write_self_tuning
from runners.sweep import job as T
from runners.train import loop
from runners.train.settings import DataConfig
from runners.tuning.search_space import apply_values, load_space, space_path, trial_values
from thermolion import build_optimizer, get_spec, param_groups

from .test_harness import _metric_rows, config, die_after_checkpoint, read_metrics, run_py
from .test_models_plugins import make

RIVALS = ("nadamw", "schedulefree_adamw", "prodigy", "dadapt_adam", "muon")


def _steps(model, optimizer, batches):
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize("name", RIVALS)
def test_a_state_dict_round_trip_continues_in_lockstep(name):
    torch.manual_seed(0)
    model = build_model(ModelConfig("convnet", width=4), 1, 10, 16)
    gen = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(16, 1, 16, 16, generator=gen), torch.randint(0, 10, (16,), generator=gen)) for _ in range(6)
    ]
    initial = [p.detach().clone() for p in model.parameters()]
    a = build_optimizer(name, model)
    if hasattr(a, "train"):
        a.train()
    _steps(model, a, batches[:3])
    twin = copy.deepcopy(model)
    b = build_optimizer(name, twin)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    _steps(model, a, batches[3:])
    _steps(twin, b, batches[3:])
    for (n, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(p, q), n
    assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), initial))  # every tensor moved


@pytest.mark.slow
@pytest.mark.parametrize("name", RIVALS)
def test_a_killed_run_resumes_identically_and_three_epochs_on_digits_learn(tmp_path, monkeypatch, name):
    # seed 1: at seed 0 D-Adapt Adam collapses to chance on digits (results/self_tuning shows such runs)
    kw = dict(optimizer=name, epochs=3, schedule="recipe", deterministic=True)
    reference = T.train(dataclasses.replace(config(tmp_path / "ref", **kw), seed=1))
    assert reference.status == "done" and reference.final["eval_acc"] > 50  # chance is 10%
    cfg = dataclasses.replace(config(tmp_path / "killed", **kw), seed=1)
    real_save = die_after_checkpoint(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg)
    assert len(read_metrics(cfg.run_dir())) == 1
    monkeypatch.setattr(T, "save_checkpoint", real_save)
    assert T.train(cfg).status == "done"
    assert _metric_rows(cfg.run_dir()) == _metric_rows(reference.run_dir)


def _fit(cfg):
    run = loop.build(cfg, torch.device("cpu"))

    class Bar:
        def update(self, n):
            pass

        def set_postfix(self, **kw):
            pass

    return run, list(loop.fit(run, Bar()))


def test_schedule_free_is_evaluated_at_its_evaluation_point(tmp_path):
    run, rows = _fit(config(tmp_path, optimizer="schedulefree_adamw", epochs=2))
    d, bs = run.data, run.cfg.trainer.batch_size
    at_x = loop.evaluate(run.model, d.eval_x, d.eval_y, bs, False)  # training ended in eval mode: x
    run.optimizer.train()  # back to the training weights y
    at_y = loop.evaluate(run.model, d.eval_x, d.eval_y, bs, False)
    assert (rows[-1]["eval_loss"], rows[-1]["eval_acc"]) == at_x
    assert at_y[0] != at_x[0]


def test_batchnorm_statistics_are_recomputed_at_the_evaluation_weights_on_resnet18(tmp_path):
    cfg = make(tmp_path, "schedulefree_adamw", model={"name": "resnet18", "width": 4})
    run, _ = _fit(cfg)
    model = run.model
    trained_mean = model.bn1.running_mean.clone()
    run.optimizer.train()
    loop.eval_point(run)  # x again, statistics recomputed there
    # the same weights (up to the rounding of the y -> x round trip) give the same statistics
    assert torch.allclose(model.bn1.running_mean, trained_mean, atol=1e-5)
    # The definition: with momentum None, the running mean is the plain average over the recipe's
    # batches of each batch's per-channel mean of the stem's output.
    with torch.no_grad():
        means = [model.conv1(x).mean(dim=(0, 2, 3)) for x in loop._bn_batches(run)]
    assert torch.allclose(model.bn1.running_mean, torch.stack(means).mean(0), atol=1e-5)
    assert len(means) == math.ceil(min(len(run.data.train_x), 50 * cfg.trainer.batch_size) / cfg.trainer.batch_size)


def test_prodigys_logged_effective_lr_is_d_times_lr_from_its_param_groups(tmp_path):
    cfg = make(tmp_path, "prodigy", opt={"lr": 0.5})  # lr 0.5: d·lr is not d
    run, rows = _fit(cfg)
    group = run.optimizer.param_groups[0]
    assert rows[-1]["effective_lr"] == group["d"] * group["lr"] and rows[-1]["lr"] == 0.5
    assert rows[0]["effective_lr"] < rows[-1]["effective_lr"]  # d grows from d0 = 1e-6
    result = T.train(cfg)
    logged = read_metrics(result.run_dir)
    assert [float(r["effective_lr"]) for r in logged] == pytest.approx([r["effective_lr"] for r in rows], rel=1e-6)
    runs = collect(Path(cfg.results_dir)).runs  # the report's lr column for it is d·lr, not 0.5
    assert runs["effective_lr"].tolist() == [float(logged[-1]["effective_lr"])] and runs["lr"].tolist() == [0.5]


def test_the_recipe_gives_nadamw_algoperfs_warmup_and_cosine_and_schedule_free_its_own_warmup(tmp_path):
    run = loop.build(config(tmp_path, optimizer="nadamw", epochs=8, schedule="recipe"), torch.device("cpu"))
    total = 8 * len(run.loader)
    warmup = max(1, round(0.02 * total))
    lr0 = get_spec("nadamw").defaults["lr"]
    seen = []
    for _ in range(total):
        seen.append(run.optimizer.param_groups[0]["lr"])
        run.optimizer.step()
        run.scheduler.step()
    expected = [
        lr0 * (1 / warmup + (1 - 1 / warmup) * s / warmup)
        if s < warmup
        else lr0 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))) / 2
        for s in range(total)
    ]
    assert seen == pytest.approx(expected, rel=1e-9)
    sf = loop.build(config(tmp_path, optimizer="schedulefree_adamw", epochs=8, schedule="recipe"), torch.device("cpu"))
    assert sf.scheduler is None and sf.optimizer.param_groups[0]["warmup_steps"] == warmup
    plain = loop.build(config(tmp_path, optimizer="schedulefree_adamw", epochs=8), torch.device("cpu"))
    assert plain.optimizer.param_groups[0]["warmup_steps"] == 0


def test_muon_takes_the_hidden_matrices_and_adamw_the_first_and_last_layers_biases_and_embeddings():
    convnet = build_model(ModelConfig("convnet", width=4), 1, 10, 16)
    names = {id(p): n for n, p in convnet.named_parameters()}
    groups = param_groups(convnet, muon=True)
    muon = {names[id(p)] for g in groups if not g.get("use_fallback") for p in g["params"]}
    assert muon == {"3.weight", "7.weight"}  # conv2 and the hidden linear layer; conv1 and the head fall back
    vit = build_model(ModelConfig("vit_tiny", width=12, depth=2), 3, 10, 32)
    names = {id(p): n for n, p in vit.named_parameters()}
    groups = param_groups(vit, False, muon=True)
    muon = {names[id(p)] for g in groups if not g.get("use_fallback") for p in g["params"]}
    assert muon == {n for n, p in vit.named_parameters() if p.ndim == 2 and n.startswith("encoder.layers")}
    fallback_decay = [g for g in groups if g.get("use_fallback") and "weight_decay" not in g]
    assert {names[id(p)] for g in fallback_decay for p in g["params"]} == {"conv_proj.weight", "heads.head.weight"}


@pytest.mark.slow
def test_a_plugin_without_lr_runs_without_optimizer_lr(tmp_path):
    proc = run_py(
        "optimizer=custom",
        "optimizer._target_=parameterfree.COCOB",
        "data.image_size=16",
        "trainer.epochs=2",
        "trainer.progress=off",
        results=tmp_path,
    )
    run_dir = tmp_path / "rigorous" / "digits" / "cocob+epochs=2,image_size=16" / "seed0"
    assert "done" in proc.stdout and "lr" not in read_metrics(run_dir)[0]
    assert "lr" not in json.loads((run_dir / "run.json").read_text())["config"]["optimizer"]
    with pytest.raises(ConfigError, match="takes no lr .*drop optimizer.lr"):
        make(tmp_path, {"_target_": "parameterfree.COCOB", "name": None, "lr": 0.1})
    with pytest.raises(ConfigError, match="set optimizer.lr"):
        make(tmp_path, {"_target_": "torch.optim.SGD", "name": None, "lr": None})


def test_a_class_rejecting_the_one_element_check_is_checked_on_the_models_shapes_on_meta():
    target = "tests.plugin_optimizers.NoScalars"
    with pytest.raises(PluginError, match="rejects the arguments"):
        resolve_target(target, {"lr": 0.1})
    shapes = meta_parameters(ModelConfig("convnet"), DataConfig(name="digits", image_size=16))
    assert all(p.is_meta for p in shapes())
    assert resolve_target(target, {"lr": 0.1}, shapes).__name__ == "NoScalars"
    with pytest.raises(PluginError, match="rejects the arguments .* on the model's parameters"):
        resolve_target(target, {"lr": 0.1, "momentum": -1.0}, shapes)


@pytest.mark.slow
def test_a_two_d_only_class_is_pointed_to_optimizer_muon(tmp_path):
    proc = run_py(
        "optimizer=custom", "optimizer._target_=torch.optim.Muon", "optimizer.lr=0.02", results=tmp_path, check=False
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "takes 2-D parameters only" in line and "use optimizer=muon" in line


def _runs(accs: dict) -> pd.DataFrame:
    rows = []
    for (dataset, opt), values in accs.items():
        for seed, acc in enumerate(values):
            rows.append(
                dict(
                    dataset=dataset,
                    optimizer=opt,
                    seed=seed,
                    run_dir=f"{dataset}/{opt}/{seed}",
                    final_eval_acc=acc,
                    num_classes=10,
                    status="done",
                    schedule="recipe",
                )
            )
    return pd.DataFrame(rows)


def test_self_tuning_report_numbers_and_verdict_come_from_the_runs(tmp_path):
    accs = {}
    for d in ("a", "b"):
        accs[(d, "thermolion")] = [90.0, 91.0, 92.0]
        accs[(d, "adamw")] = [91.0, 91.5, 92.0]
        accs[(d, "prodigy")] = [93.0, 94.0, 95.0]
        accs[(d, "lion")] = [80.0, 81.0, 82.0]
    runs = _runs(accs)
    curves = pd.DataFrame(
        [
            dict(run_dir=r.run_dir, step=10 * e, epoch=e, seconds=e, eval_acc=r.final_eval_acc * e / 2, fine=False)
            for r in runs.itertuples()
            for e in (1, 2)
        ]
    )
    tuned = pd.Series({"a": 93.0})
    summary = write_self_tuning(runs, curves, tmp_path, "paper", "thermolion", tuned=tuned)
    table = pd.DataFrame(summary["table"]).set_index(["scope", "optimizer"])
    # P(adamw > thermolion) by hand: (1 + 0.5) + 2 + (2 + 0.5) = 6 wins of 9 pairs, on each dataset
    assert table.loc[("all datasets", "adamw"), "poi"] == pytest.approx(6 / 9)
    assert table.loc[("all datasets", "prodigy"), "poi"] == 1.0 and table.loc[("all datasets", "lion"), "poi"] == 0.0
    # score = (acc - 10) / (best mean 94 - 10); IQM of three runs trims nothing: the mean
    assert table.loc[("a", "thermolion"), "iqm"] == pytest.approx((91 - 10) / 84)
    assert table.loc[("a", "thermolion"), "minus_tuned_adamw"] == pytest.approx(91.0 - 93.0)
    text = (tmp_path / "self_tuning.md").read_text()
    assert "beat thermolion's (P's CI above 0.5): prodigy (P = 1.00)" in text
    assert "Rivals thermolion beats (P's CI below 0.5): lion" in text
    assert "does not hold here: 1 rival(s)" in text and "-2.00 points" in text
    assert (tmp_path / "self_tuning.png").stat().st_size > 10_000


@pytest.mark.parametrize("name", RIVALS)
def test_each_rival_has_a_space_holding_its_defaults_whose_trials_build(name):
    space = load_space(space_path(None, name))
    assert space["optimizer"] == name
    defaults = get_spec(name).defaults
    for key, spec in space["params"].items():
        value = defaults["betas"][key == "beta2"] if key in ("beta1", "beta2") else defaults[key]
        inside = spec["low"] <= (1 - value if spec["scale"] == "one_minus_log" else value) <= spec["high"]
        assert inside or (value == 0 and spec.get("p_zero", 0) > 0), key
    if name in ("prodigy", "dadapt_adam"):  # learning-rate-free: the estimate's multiplier, never a bare lr
        assert {"d_coef", "lr"} & set(space["params"]) == ({"d_coef"} if name == "prodigy" else {"lr"})
    model = build_model(ModelConfig("convnet", width=4), 1, 10, 16)
    for trial in (1, 2, 3):
        kwargs = apply_values(dict(defaults), trial_values(space, name, trial))
        build_optimizer(name, model, **kwargs)


def test_muons_float32_newton_schulz_is_confined_to_its_step():
    from timm.optim import muon

    original, seen = muon.zeropower_via_newtonschulz, []

    def spy(G, *args, **kwargs):
        seen.append(kwargs.get("dtype"))
        return original(G, *args, **kwargs)

    muon.zeropower_via_newtonschulz = spy
    try:
        model = build_model(ModelConfig("convnet", width=4), 1, 10, 8)
        opt = build_optimizer("muon", model)
        assert muon.zeropower_via_newtonschulz is spy  # building changes nothing of timm's
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        assert seen and set(seen) == {torch.float32}  # on the CPU, during the step
        assert muon.zeropower_via_newtonschulz is spy  # and put back after it
        seen.clear()
        plain = muon.Muon([torch.nn.Parameter(torch.ones(4, 4))])  # timm's own class: its own dtype
        plain.param_groups[0]["params"][0].grad = torch.ones(4, 4)
        plain.step()
        assert seen == [None]
    finally:
        muon.zeropower_via_newtonschulz = original
