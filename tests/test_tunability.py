"""Search spaces, trials, the expected-max estimator and the tunability study."""

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from runners.config import ConfigError, RunConfig
from runners.report import collect_runs
from runners.report.tunability import expected_max, expected_max_curve
from runners.tuning import tune
from runners.tuning.search_space import ROOT, load_space, space_path, trial_values

from .test_harness import run_py

SPACES = sorted(p.stem for p in (ROOT / "conf" / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("name", SPACES)
def test_trials_cover_each_declared_range_with_its_scale(name):
    space = load_space(space_path(name, name))
    opt = space["optimizer"]
    draws = [trial_values(space, opt, i) for i in range(1, 257)]
    for param, spec in space["params"].items():
        values = np.array([d[param] for d in draws])
        nonzero = values[values != 0]
        assert np.mean(values == 0) == pytest.approx(spec["p_zero"], abs=0.03)
        x = 1 - nonzero if spec["scale"] == "one_minus_log" else nonzero  # 1 - beta is what is sampled
        assert x.min() >= spec["low"] * (1 - 1e-3) and x.max() <= spec["high"] * (1 + 1e-3)
        if spec["scale"] != "linear":  # log-uniform: half the draws below the geometric midpoint
            assert np.mean(x < math.sqrt(spec["low"] * spec["high"])) == pytest.approx(0.5, abs=0.06)
        assert x.max() / x.min() > (spec["high"] / spec["low"]) ** 0.8  # the range is explored end to end


def test_trial_i_is_the_same_in_another_process_and_for_any_budget():
    space = load_space(space_path("adamw", "adamw"))
    here = [trial_values(space, "adamw", i) for i in range(1, 9)]
    code = (
        "import json, sys; sys.path.insert(0, '.'); from runners.tuning.search_space import *; "
        "s = load_space(space_path('adamw', 'adamw')); "
        "print(json.dumps([trial_values(s, 'adamw', i) for i in range(1, 9)]))"
    )
    there = json.loads(
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    )
    assert here == there
    from scipy.stats import qmc

    from runners.tuning.search_space import _map, _seed

    names = sorted(space["params"])
    block = qmc.Sobol(d=len(names), scramble=True, seed=_seed("adamw", space)).random(32)  # a budget of 32
    assert here == [{n: _map(float(u), space["params"][n]) for n, u in zip(names, row)} for row in block[:8]]
    other = [trial_values(space, "lion", i) for i in range(1, 9)]
    assert other != here  # seeded by the optimizer too


def _cfg(tmp_path, optimizer="adamw", **top):
    return RunConfig.from_dict(
        {
            "optimizer": {"name": optimizer, "lr": 1e-3},
            "dataset": "digits",
            "protocol": "tuned",
            "results_dir": str(tmp_path),
            "data": {"eval_split": "val"},
            "trainer": {},
            **top,
        }
    )


def test_a_trial_sets_the_optimizer_and_names_the_folder_with_its_values(tmp_path):
    space = load_space(space_path("adamw", "adamw"))
    values = trial_values(space, "adamw", 3)
    cfg = _cfg(tmp_path, trial=3)
    kw = cfg.optimizer.kwargs
    assert kw["lr"] == values["lr"] and kw["betas"] == [values["beta1"], values["beta2"]] and kw["eps"] == values["eps"]
    assert f"lr={values['lr']:g}" in cfg.run_dir().parts[-2] and cfg.to_dict()["trial"] == 3
    assert _cfg(tmp_path, trial=0).optimizer.kwargs == {"lr": 1e-3}  # trial 0: the defaults
    saved = cfg.to_dict()  # as run.json records it
    saved["dataset"] = saved["data"].pop("name")
    assert RunConfig.from_dict(saved).optimizer.kwargs == kw  # read back: the same values


@pytest.mark.parametrize(
    "params, message",
    [
        ({"lr": {"low": 1e-2, "high": 1e-3, "scale": "log"}}, "needs low < high"),
        ({"lr": {"low": 0.0, "high": 1e-3, "scale": "log"}}, "both > 0"),
        ({"beta1": {"low": 1e-3, "high": 1.5, "scale": "one_minus_log"}}, "high < 1"),
        ({"lr": {"low": 1e-5, "high": 1e-1, "scale": "logarithmic"}}, "scale must be one of"),
        ({"lr": {"low": 1e-5, "scale": "log"}}, "needs low, high and scale"),
        ({"lr": {"low": 1e-5, "high": 1e-1, "scale": "log", "p_zero": 1.0}}, "p_zero must be in [0, 1)"),
        ({"lr": {"low": "small", "high": 1e-1, "scale": "log"}}, "must be numbers"),
    ],
)
def test_malformed_search_spaces_are_clear_errors(tmp_path, params, message):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"optimizer": "adamw", "params": params}))
    with pytest.raises(ConfigError) as err:
        _cfg(tmp_path, trial=1, search_space=str(path))
    assert message in str(err.value) and str(path) in str(err.value)


def test_missing_or_mismatched_spaces_and_bad_trials_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; the declared spaces are"):
        _cfg(tmp_path, "muadam", trial=1)
    with pytest.raises(ConfigError, match="is for 'thermolion', not 'adamw'"):
        _cfg(tmp_path, trial=1, search_space="thermolion_full")
    with pytest.raises(ConfigError, match="trial must be an integer >= 0"):
        _cfg(tmp_path, trial=-2)
    path = tmp_path / "bad_param.yaml"
    path.write_text(
        yaml.safe_dump({"optimizer": "adamw", "params": {"momentum": {"low": 0.1, "high": 0.5, "scale": "linear"}}})
    )
    with pytest.raises(ConfigError, match="optimizer adamw: invalid arguments"):
        _cfg(tmp_path, trial=1, search_space=str(path))  # AdamW has no momentum


# ------------------------------------------------------------------ the expected-max estimator
def test_expected_max_equals_brute_force_over_all_subsets():
    values = [3.0, 9.0, 1.0, 7.0, 7.0, 4.0]
    for k in range(1, len(values) + 1):
        subsets = list(itertools.combinations(values, k))
        assert expected_max(values, k) == pytest.approx(sum(max(s) for s in subsets) / len(subsets))


def test_expected_max_is_the_mean_at_1_the_max_at_n_and_monotone():
    rng = np.random.default_rng(0)
    values = rng.normal(90, 3, 17)
    curve = expected_max_curve(values)
    assert curve[0] == pytest.approx(values.mean()) and curve[-1] == pytest.approx(values.max())
    assert np.all(np.diff(curve) >= -1e-12)


# ------------------------------------------------------------------ selection and the study
def test_selection_picks_whole_configurations_on_validation_only(tmp_path):
    from runners.atomic import write_csv, write_json, write_text

    def fake(trial, config, acc, split="val", test_acc=None):
        run_dir = tmp_path / "tuned" / "mnist" / f"adamw_t{trial}" / "seed0"
        row = {"epoch": 1, "train_loss": 0.5, "train_acc": 90.0, "lr": config["lr"], "eval_loss": 0.3, "eval_acc": acc}
        if test_acc is not None:
            row["test_acc"] = test_acc
        write_csv(run_dir / "metrics.csv", [row])
        write_json(
            run_dir / "run.json",
            {
                "status": "done",
                "sizes": {"eval_split": split},
                "config": {
                    "protocol": "tuned",
                    "seed": 0,
                    "trial": trial,
                    "optimizer": {"name": "adamw", **config},
                    "data": {"name": "mnist"},
                },
            },
        )
        write_text(run_dir / "DONE", "done")

    fake(0, {"lr": 1e-3}, 95.0, test_acc=99.0)
    fake(1, {"lr": 3e-3, "betas": [0.8, 0.99], "weight_decay": 0.1}, 96.0, test_acc=90.0)
    fake(2, {"lr": 1e-3, "betas": [0.95, 0.999], "weight_decay": 0.0}, 96.0)  # tie: lr closer to the default
    sel = tune.select_configs(tune._tuning_runs(tmp_path))
    pick = sel["chosen"]["mnist"]["adamw"]
    assert pick["trial"] == 2 and pick["config"] == {"lr": 1e-3, "betas": [0.95, 0.999], "weight_decay": 0.0}
    assert pick["tied"] == 2 and sel["budget"]["mnist"]["adamw"] == {"configs": 3, "runs": 3}


@pytest.mark.slow
def test_tiny_tunability_study_writes_curves_tables_and_reruns_the_winners(tmp_path):
    tiny = ["data.image_size=16", "trainer.epochs=1", "trainer.progress=off", f"data.cache_dir={tmp_path / 'cache'}"]
    run_py(
        "-m",
        "+experiment=tunability",
        "dataset=digits",
        "optimizer=thermolion,adamw",
        "trial=range(0,5)",
        *tiny,
        results=tmp_path,
    )
    runs, _, _ = collect_runs(tmp_path)
    assert len(runs) == 10 and sorted(runs["trial"].unique()) == [0, 1, 2, 3, 4]
    section = tmp_path / "report" / "tuned+batch_size=1024,epochs=1,image_size=16,train_subset=5000"
    assert (section / "tunability.png").stat().st_size > 10_000
    curves = pd.read_csv(section / "tunability.csv")
    assert sorted(curves["k"].unique()) == [1, 2, 3, 4] and set(curves["optimizer"]) == {"thermolion", "adamw"}
    text = (section / "tunability.md").read_text()
    assert "Self-tuning" in text and "k* (to thermolion's default)" in text and "Verdict" in text
    assert "conf/search_spaces/adamw.yaml" in text  # the spaces are printed
    table = (section / "table_final.md").read_text()  # the standard tables keep the defaults only
    assert "| dataset | adamw | thermolion |" in table

    proc = subprocess.run(
        [sys.executable, "-m", "runners.tuning", str(tmp_path), "--rerun-seeds", "2", "--run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    chosen = json.loads((tmp_path / "tuning" / "chosen_lrs.json").read_text())["chosen"]["digits"]
    rerun, _, _ = collect_runs(tmp_path)
    rerun = rerun[rerun["tuned_from"].notna()]
    assert len(rerun) == 4 and set(rerun["eval_split"]) == {"test"} and sorted(rerun["seed"].unique()) == [1, 2]
    for opt in ("thermolion", "adamw"):
        kw = json.loads(rerun[rerun["optimizer_name"] == opt]["optimizer_config"].iloc[0])
        assert {k: kw[k] for k in chosen[opt]["config"]} == chosen[opt]["config"]  # the whole configuration


# ------------------------------------------------------------------ the verdict's edge cases
def _trials(rows):
    """A runs table of (dataset, optimizer, trial, accuracy) rows, as collect_runs gives it."""
    return pd.DataFrame(
        [
            {"dataset": "digits", "optimizer_name": o, "trial": t, "final_eval_acc": a, "search_space": None}
            for o, t, a in rows
        ]
    )


def _verdict_of(tmp_path, rows):
    from runners.report.tunability import write_tunability

    summary = write_tunability(_trials(rows), tmp_path, "tuned", "thermolion")
    text = (tmp_path / "tunability.md").read_text()
    table = {
        line.split("|")[2].strip(): [c.strip() for c in line.split("|")[3:-1]]
        for line in text.splitlines()
        if line.startswith("| digits")
    }
    return summary, text.split("Verdict")[1], table


def test_kstar_is_zero_when_the_baselines_defaults_already_beat_the_candidates(tmp_path):
    # adamw's defaults (77.6) beat thermolion's (73.4): no trial is needed to match them.
    rows = [
        ("thermolion", 0, 73.4),
        ("thermolion", 1, 70.0),
        ("thermolion", 2, 71.0),
        ("adamw", 0, 77.6),
        ("adamw", 1, 60.0),
        ("adamw", 2, 65.0),
    ]
    summary, verdict, table = _verdict_of(tmp_path, rows)
    assert summary["kstar"]["digits/adamw"] == 0 and table["adamw"][-1] == "0"
    assert "adamw needs k* = digits 0 (its defaults already do)" in verdict
    assert "already match thermolion's on digits" in verdict and "more than" not in verdict
    # thermolion's best trial (71.0) is below its defaults (73.4): a negative gain is said plainly
    assert "No trial of thermolion beats its defaults" in verdict and "digits -2.40" in verdict
    assert "adds at most -" not in verdict


def test_fewer_trials_than_four_show_no_best_of_four_and_ties_count_as_matches(tmp_path):
    rows = [
        ("thermolion", 0, 80.0),
        ("thermolion", 1, 80.3),
        ("thermolion", 2, 79.0),
        ("adamw", 0, 70.0),
        ("adamw", 1, 75.0),
        ("adamw", 2, 80.0),  # trial 2 ties thermolion's default
        ("lion", 0, 60.0),
        ("lion", 1, 61.0),
        ("lion", 2, 62.0),
    ]
    summary, verdict, table = _verdict_of(tmp_path, rows)
    header_best4 = 3  # default, E[best of 1], E[best of 4], ...
    assert all(table[o][header_best4 - 1] == "–" for o in ("thermolion", "adamw", "lion"))
    # E[best of k] for adamw over trials {75, 80}: k=1 -> 77.5, k=2 -> 80 = thermolion's default (a tie)
    assert summary["kstar"]["digits/adamw"] == 2 and summary["kstar"]["digits/lion"] is None
    assert "adamw needs k* = digits 2" in verdict and "within 4 trials on digits" in verdict
    assert "lion needs k* = digits more than 2" in verdict and table["lion"][-1] == "> 2"
    assert "Tuning thermolion adds at most 0.30 points" in verdict


@pytest.mark.slow
def test_search_space_by_name_and_by_path_on_the_command_line(tmp_path):
    tiny = [
        "data.image_size=16",
        "trainer.epochs=1",
        "trainer.progress=off",
        f"data.cache_dir={tmp_path / 'cache'}",
        "hydra.callbacks.sweep_summary.report=false",
    ]
    run_py(
        "-m",
        "optimizer=thermolion",
        "protocol=tuned",
        "dataset=digits",
        "search_space=thermolion_full",
        "trial=1",
        *tiny,
        results=tmp_path / "byname",
    )
    info = json.loads(next((tmp_path / "byname").rglob("run.json")).read_text())
    full = load_space(space_path("thermolion_full", "thermolion"))
    assert info["config"]["search_space"] == "conf/search_spaces/thermolion_full.yaml"  # relative, no machine path
    assert info["config"]["optimizer"]["scale"] == trial_values(full, "thermolion", 1)["scale"]
    # A plug-in with its own space, given as a path: the shipped example experiment.
    run_py(
        "+experiment=tunability_signum",
        "hydra.searchpath=[file://examples/conf]",
        "trial=range(0,3)",
        *tiny,
        results=tmp_path / "plugin",
    )
    infos = [json.loads(p.read_text()) for p in sorted((tmp_path / "plugin").rglob("run.json"))]
    assert len(infos) == 3 and {i["status"] for i in infos} == {"done"}
    assert {i["config"]["search_space"] for i in infos} == {"examples/conf/search_spaces/signum.yaml"}
    signum = load_space(space_path("examples/conf/search_spaces/signum.yaml", "signum"))
    lrs = sorted(i["config"]["optimizer"]["lr"] for i in infos)
    assert lrs == sorted([0.0003, trial_values(signum, "signum", 1)["lr"], trial_values(signum, "signum", 2)["lr"]])


@pytest.mark.slow
def test_tuning_on_the_test_split_is_refused_unless_asked_for(tmp_path):
    base = ["optimizer=adamw", "dataset=digits", "trial=1", "trainer.progress=off"]
    proc = run_py(*base, "protocol=rigorous", results=tmp_path, check=False)
    assert proc.returncode == 1 and "would choose hyperparameters on the test split" in proc.stderr
    assert "tune_on_test=true" in proc.stderr and "Traceback" not in proc.stderr
