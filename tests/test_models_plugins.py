"""Plug-in optimizers, schedules, clipping, models and augmentation."""

import math

import pytest
import torch

from models import MODELS, ModelConfig, build_model
from runners.config import ConfigError
from runners.report import build_report
from runners.sweep import job as T
from runners.sweep.compose import compose_run, override
from runners.train import build as B
from runners.train.augment import PAD, EpochAugmenter, resolve_augment
from runners.train.data import TensorLoader
from runners.train.schedules import build_schedule
from thermolion import param_groups

from .test_harness import read_metrics, run_py


def make(tmp_path, optimizer="adamw", model=None, data=None, opt=None, protocol="rigorous", **trainer):
    """A small run composed from conf/ as run.py does; a dict ``optimizer`` is a plug-in's settings."""
    plugin = isinstance(optimizer, dict)
    settings = {**(optimizer if plugin else {}), **(opt or {})}
    model = dict(model or {"name": "convnet"})
    return compose_run(
        f"optimizer={'custom' if plugin else optimizer}",
        "dataset=digits",
        f"protocol={protocol}",
        f"results_dir={tmp_path / 'results'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.image_size=16",
        "trainer.epochs=2",
        "trainer.progress=off",
        _model_group(model.pop("name")),
        *(override(f"++optimizer.{k}", v) for k, v in settings.items()),
        *(override(f"++model.{k}", v) for k, v in model.items()),
        *(override(f"data.{k}", v) for k, v in (data or {}).items()),
        *(override(f"trainer.{k}", v) for k, v in trainer.items()),
    )


def _model_group(name: str) -> str:
    return f"model={name}" if name in MODELS else f"model.name={name}"  # an unknown name reaches RunConfig


SGD = {"_target_": "torch.optim.SGD", "name": "sgd_momentum", "lr": 0.05, "momentum": 0.9}


# ------------------------------------------------------------------ plug-in optimizers
@pytest.mark.slow
def test_plugin_sgd_runs_end_to_end_and_appears_under_its_name_in_the_report(tmp_path):
    proc = run_py(
        "optimizer=custom",
        "optimizer._target_=torch.optim.SGD",
        "optimizer.lr=0.05",
        "++optimizer.momentum=0.9",
        "optimizer.name=sgd_momentum",
        "dataset=digits",
        "data.image_size=16",
        "trainer.epochs=2",
        "trainer.progress=off",
        f"data.cache_dir={tmp_path / 'cache'}",
        results=tmp_path,
    )
    run_dir = tmp_path / "rigorous" / "digits" / "sgd_momentum+epochs=2,image_size=16" / "seed0"
    assert "done" in proc.stdout and (run_dir / "DONE").exists()
    assert float(read_metrics(run_dir)[-1]["eval_acc"]) > 25  # chance is 10%
    run_py(
        "optimizer=adamw",
        "data.image_size=16",
        "trainer.epochs=2",
        "trainer.progress=off",
        f"data.cache_dir={tmp_path / 'cache'}",
        results=tmp_path,
    )
    build_report(tmp_path, tmp_path / "report")
    table = (tmp_path / "report" / "rigorous+epochs=2,image_size=16" / "table_final.md").read_text()
    assert "| dataset | adamw | sgd_momentum |" in table


def test_plugin_name_defaults_to_the_lowercased_class_name_and_kwargs_reach_the_constructor(tmp_path):
    cfg = make(
        tmp_path,
        {
            "_target_": "torch.optim.Adagrad",
            "name": None,
            "lr": 0.1,
            "lr_decay": 0.01,
            "initial_accumulator_value": 0.5,
        },
    )
    assert cfg.optimizer.name == "adagrad" and cfg.run_dir().parts[-2] == "adagrad+epochs=2,image_size=16"
    from runners.train.data import prepare

    _, optimizer, _ = B.build_run(cfg, prepare(cfg.data), torch.device("cpu"))
    assert type(optimizer) is torch.optim.Adagrad
    assert optimizer.param_groups[0]["lr_decay"] == 0.01
    assert optimizer.param_groups[0]["initial_accumulator_value"] == 0.5


@pytest.mark.parametrize(
    "target, extra, message",
    [
        ("torch.optim.NoSuchOptimizer", {}, "module 'torch.optim' has no 'NoSuchOptimizer'"),
        ("no_such_package.Opt", {}, "cannot import module 'no_such_package'"),
        ("torch.nn.Linear", {}, "is not a torch.optim.Optimizer subclass"),
        ("torch.optim.SGD", {"momentun": 0.9}, "rejects the arguments"),
        ("torch.optim.SGD", {"momentum": -1.0}, "rejects the arguments"),
    ],
)
def test_bad_plugin_targets_are_one_clear_line_naming_the_target(tmp_path, target, extra, message):
    with pytest.raises(ConfigError) as err:
        make(tmp_path, {"_target_": target, "name": "mine", "lr": 0.1, **extra})
    assert f"optimizer._target_={target}" in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_bad_plugin_target_through_run_py_is_one_line_without_traceback(tmp_path):
    proc = run_py("optimizer=custom", "optimizer._target_=torch.nn.Linear", results=tmp_path, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "error: invalid config: optimizer._target_=torch.nn.Linear is not a "
        "torch.optim.Optimizer subclass (it is <class 'torch.nn.modules.linear.Linear'>)"
    )


def test_a_plugin_may_not_take_a_registered_name(tmp_path):
    with pytest.raises(ConfigError, match="'adamw' is a registered optimizer's"):
        make(tmp_path, {"_target_": "torch.optim.AdamW", "name": None, "lr": 1e-3})


@pytest.mark.slow
def test_the_examples_plugin_runs_beside_registered_optimizers_through_hydra_searchpath(tmp_path):
    proc = run_py(
        "-m",
        "optimizer=lion,signum",
        "hydra.searchpath=[file://examples/conf]",
        "data.image_size=16",
        "trainer.epochs=2",
        "trainer.progress=off",
        "hydra.callbacks.sweep_summary.report=false",
        f"data.cache_dir={tmp_path / 'cache'}",
        results=tmp_path,
    )
    assert "2 done" in proc.stdout
    signum = tmp_path / "rigorous" / "digits" / "signum+epochs=2,image_size=16" / "seed0"
    assert float(read_metrics(signum)[-1]["eval_acc"]) > 50
    import json

    info = json.loads((signum / "run.json").read_text())
    assert info["config"]["optimizer"]["_target_"] == "examples.my_optimizer.Signum"
    assert info["packages"]["examples"].startswith("source ")  # the plug-in's own source is part of its identity


# ------------------------------------------------------------------ schedules and clipping
def _lrs(schedule, total, warmup=0, base=0.1):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    sched = build_schedule(opt, schedule, total, warmup)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_and_warmup_cosine_match_their_closed_forms():
    total, warmup, base = 20, 5, 0.1
    cosine = [base * (1 + math.cos(math.pi * s / total)) / 2 for s in range(total)]
    assert _lrs("cosine", total) == pytest.approx(cosine, abs=1e-12)
    expected = [
        base * (1 / warmup + (1 - 1 / warmup) * s / warmup)
        if s < warmup
        else base * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))) / 2
        for s in range(total)
    ]
    assert _lrs("warmup_cosine", total, warmup) == pytest.approx(expected, abs=1e-12)
    assert build_schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1), "constant", 10) is None


@pytest.mark.slow
def test_a_tiny_run_records_the_schedules_rate_per_epoch(tmp_path):
    result = T.train(make(tmp_path, "adamw", epochs=3, schedule="cosine"))
    steps = 12  # 1437 training digits / batch 128
    rows = read_metrics(result.run_dir)
    for row in rows:  # the lr column is the rate for the next step
        s = int(row["epoch"]) * steps
        assert float(row["lr"]) == pytest.approx(1e-3 * (1 + math.cos(math.pi * s / (3 * steps))) / 2, abs=1e-12)
    import json

    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["config"]["trainer"]["schedule"] == "cosine" and "schedule=cosine" in str(result.run_dir)


@pytest.mark.slow
def test_grad_clip_bounds_the_global_gradient_norm(tmp_path, monkeypatch):
    norms = []
    real_step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    T.train(make(tmp_path / "free", "adamw", epochs=1))
    assert max(norms) > 0.5  # unclipped, gradients are larger than the bound below
    norms.clear()
    result = T.train(make(tmp_path / "clipped", "adamw", epochs=1, grad_clip=0.5))
    assert result.status == "done" and len(norms) == 12 and max(norms) <= 0.5 * (1 + 1e-5)
    assert "grad_clip=0.5" in str(result.run_dir)


def test_schedule_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="warmup_steps must be >= 1 with schedule=warmup_cosine"):
        make(tmp_path, schedule="warmup_cosine")
    with pytest.raises(ConfigError, match="trainer.schedule must be one of"):
        make(tmp_path, schedule="linear")
    with pytest.raises(ConfigError, match="own SWA lr schedule"):
        make(tmp_path, "swa", schedule="cosine")


# ------------------------------------------------------------------ models
@pytest.mark.parametrize("name, kw", [("resnet18", dict(width=12)), ("vit_tiny", dict(width=12, depth=2))])
@pytest.mark.parametrize("channels, classes", [(1, 10), (3, 100)])
def test_models_at_width_12_give_one_logit_per_class(name, kw, channels, classes):
    model = build_model(ModelConfig(name, **kw), channels, classes, 32)
    assert model(torch.randn(5, channels, 32, 32)).shape == (5, classes)


def test_full_size_models_have_the_standard_parameter_counts():
    counts = {n: sum(p.numel() for p in build_model(ModelConfig(n), 3, 10, 32).parameters()) for n in MODELS}
    convnet = (3 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (4096 * 256 + 256) + (256 * 10 + 10)  # the paper's ConvNet
    # CIFAR ResNet-18 and ViT-Tiny (patch 4, 65 tokens) as commonly reported for 10 classes.
    assert counts == {"convnet": convnet, "resnet18": 11_173_962, "vit_tiny": 5_362_762}


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny"])
def test_one_dimensional_parameters_and_vit_embeddings_get_no_weight_decay(name):
    model = build_model(ModelConfig(name, width=12, depth=2 if name == "vit_tiny" else None), 3, 10, 32)
    decay, no_decay = param_groups(model, MODELS[name]["decay_norm_and_bias"])
    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} == {
        n for n, p in model.named_parameters() if p.ndim == 1 or n in ("class_token", "encoder.pos_embedding")
    }
    assert all(p.ndim > 1 for p in decay["params"])
    convnet = build_model(ModelConfig("convnet"), 1, 10, 32)
    assert len(param_groups(convnet, MODELS["convnet"]["decay_norm_and_bias"])) == 1  # the paper decays all


@pytest.mark.slow
@pytest.mark.parametrize("model", [{"name": "resnet18", "width": 12}, {"name": "vit_tiny", "width": 12, "depth": 2}])
def test_two_epoch_digits_run_of_each_model_learns_above_chance(tmp_path, model):
    result = T.train(make(tmp_path, "adamw", model=model))
    rows = read_metrics(result.run_dir)
    assert result.status == "done" and float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[-1]["eval_acc"]) > 20  # chance is 10%
    assert f"model={model['name']}" in str(result.run_dir) and "width=12" in str(result.run_dir)


def test_unknown_model_settings_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="model 'convnet' has no setting"):
        make(tmp_path, model={"name": "convnet", "depth": 3})
    with pytest.raises(ConfigError, match="unknown model 'vgg'"):
        make(tmp_path, model={"name": "vgg"})
    with pytest.raises(ConfigError, match=r"model.width \(16\) must be divisible by model.heads \(3\)"):
        make(tmp_path, model={"name": "vit_tiny", "width": 16})


# ------------------------------------------------------------------ augmentation
def test_crop_offsets_shift_the_image_and_pad_with_black_and_flips_mirror():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    centre = torch.full((2, 2), PAD)
    assert torch.equal(EpochAugmenter.apply(x, centre, None), x)  # offset PAD = no shift
    corner = torch.tensor([[0, 0], [2 * PAD, 2 * PAD]])
    out = EpochAugmenter.apply(x, corner, None)
    assert torch.equal(out[0, 0, PAD:, PAD:], x[0, 0, : 6 - PAD, : 6 - PAD]) and (out[0, 0, :PAD] == -1).all()
    assert torch.equal(out[1, 0, : 6 - PAD, : 6 - PAD], x[1, 0, PAD:, PAD:]) and (out[1, 0, :, 6 - PAD :] == -1).all()
    flipped = EpochAugmenter.apply(x, centre, torch.tensor([True, False]))
    assert torch.equal(flipped[0], x[0].flip(-1)) and torch.equal(flipped[1], x[1])


def test_augmented_batches_are_identical_for_one_seed_differ_between_epochs_and_spare_evaluation():
    x = torch.randn(300, 1, 16, 16)
    y = torch.arange(300) % 10
    source = x.clone()

    def batches(epoch, seed=7):
        loader = TensorLoader(x, y, 64, seed=3, augmenter=EpochAugmenter("crop_flip", seed))
        return [b for b, _ in loader.epoch(epoch)]

    a, b = batches(0), batches(0)  # e.g. two optimizers of one seed
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    plain = [b for b, _ in TensorLoader(x, y, 64, seed=3).epoch(0)]
    assert not all(torch.equal(p, q) for p, q in zip(a, plain))  # it does augment
    later = TensorLoader(x, y, 64, seed=3, augmenter=EpochAugmenter("crop_flip", 7))
    order0, order1 = later.order(0), later.order(1)
    aug0 = torch.cat(batches(0))[torch.argsort(order0)]
    aug1 = torch.cat(batches(1))[torch.argsort(order1)]
    assert not torch.equal(aug0, aug1)  # same images, other crops and flips in another epoch
    assert torch.equal(x, source)  # augmenting returns new tensors: the source is untouched


def test_training_with_augmentation_leaves_the_evaluation_tensor_alone(tmp_path, monkeypatch):
    from runners.train import data as D
    from runners.train import loop as L

    seen = {}
    real_prepare = D.prepare

    def keep(*args, **kwargs):
        prepared = real_prepare(*args, **kwargs)
        seen["eval"], seen["copy"] = prepared.eval_x, prepared.eval_x.clone()
        seen["aliased"] = prepared.eval_x is prepared.train_x
        return prepared

    monkeypatch.setattr(L, "prepare", keep)
    # The paper protocol evaluates on the very training tensor: the one case where augmenting in place
    # would change what is evaluated.
    cfg = make(tmp_path, "adamw", data={"augment": "crop_flip"}, protocol="paper", epochs=1)
    result = T.train(cfg)
    assert result.status == "done" and seen["aliased"]  # evaluation tensor is the training tensor here
    assert torch.equal(seen["eval"], seen["copy"])


def test_flips_on_digit_sets_warn_and_auto_avoids_them():
    assert resolve_augment("auto", "cifar10") == ("crop_flip", None)
    assert resolve_augment("auto", "mnist") == ("crop", None)
    mode, warning = resolve_augment("crop_flip", "svhn")
    assert mode == "crop_flip" and "svhn" in warning and "data.augment=crop" in warning
