"""lr sensitivity, robustness widths, lr selection on validation only, and the tuned pipeline."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from runners import report as R
from runners.atomic import write_csv, write_json, write_text
from runners.tuning import tune

ROOT = Path(__file__).resolve().parents[1]


def test_robustness_width_on_a_hand_made_curve():
    r = R.lr_robustness([1e-4, 1e-3, 1e-2, 1e-1], [90.0, 98.0, 99.0, 95.0])
    # threshold 98: left edge at lr 1e-3 exactly; right edge where 99 -> 95 crosses 98: 1/4 of a decade
    assert r["best_lr"] == pytest.approx(1e-2) and r["width_decades"] == pytest.approx(1.25)
    assert r["low_lr"] == pytest.approx(1e-3) and r["high_lr"] == pytest.approx(10**-1.75)
    assert not r["truncated"]
    flat = R.lr_robustness([1e-3, 1e-2, 1e-1], [97.0, 97.5, 97.2])  # never drops 1 point: whole grid
    assert flat["width_decades"] == pytest.approx(2.0) and flat["truncated"]


def fake(root, section, dataset, opt, lr, seed, acc, eval_split="val", test_acc=None):
    label = opt if lr == {"adamw": 1e-3, "lion": 1e-3 / 3}[opt] else f"{opt}_lr={lr:g}"
    run_dir = root / section / dataset / label / f"seed{seed}"
    row = {
        "epoch": 1,
        "train_loss": 0.5,
        "train_acc": 90.0,
        "lr": lr,
        "eval_loss": 0.3,
        "eval_acc": acc,
        "epoch_time_s": 1.0,
        "step_time_ms": 1.0,
    }
    if test_acc is not None:
        row["test_acc"] = test_acc  # a misleading column selection must not read
    write_csv(run_dir / "metrics.csv", [row])
    write_json(
        run_dir / "run.json",
        {
            "status": "done",
            "sizes": {"eval_split": eval_split},
            "config": {
                "protocol": section,
                "seed": seed,
                "optimizer": {"name": opt, "lr": lr},
                "data": {"name": dataset},
            },
        },
    )
    write_text(run_dir / "DONE", "done")


def test_selection_picks_the_best_mean_validation_lr_breaks_ties_and_ignores_test_numbers(tmp_path):
    root = tmp_path / "res"
    grid = {1e-4: [90.0, 92.0], 1e-3: [95.0, 96.0], 1e-2: [97.0, 96.0]}  # means 91, 95.5, 96.5: 1e-2 wins
    for lr, accs in grid.items():
        for seed, acc in enumerate(accs):
            fake(root, "tuned", "mnist", "adamw", lr, seed, acc, test_acc=100.0 - acc)  # test favours 1e-4
    for lr, accs in {1e-4 / 3: [93.0, 95.0], 1e-3 / 3: [94.0, 94.0], 1e-2 / 3: [96.0, 92.0]}.items():
        for seed, acc in enumerate(accs):
            fake(root, "tuned", "mnist", "lion", lr, seed, acc)  # three-way tie at 94: default wins
    fake(root, "rigorous", "mnist", "adamw", 1e-4, 0, 99.9, eval_split="test")  # test split: ignored
    runs = tune._tuning_runs(root)
    sel = tune.select_configs(runs)
    assert sel["chosen"]["mnist"]["adamw"]["lr"] == pytest.approx(1e-2)
    assert sel["chosen"]["mnist"]["adamw"]["val_acc_mean"] == pytest.approx(96.5)
    assert sel["chosen"]["mnist"]["lion"]["lr"] == pytest.approx(1e-3 / 3)
    assert sel["chosen"]["mnist"]["lion"]["tied"] == 3
    assert sel["budget"]["mnist"] == {"adamw": {"configs": 3, "runs": 6}, "lion": {"configs": 3, "runs": 6}}


def test_tie_between_two_lrs_equally_far_from_default_goes_to_the_smaller():
    runs = pd.DataFrame(
        {
            "protocol": "tuned",
            "dataset": "mnist",
            "optimizer_name": "adamw",
            "lr": [1e-4, 1e-2],
            "final_eval_acc": [95.0, 95.0],
            "seed": 0,
        }
    )
    assert tune.select_configs(runs)["chosen"]["mnist"]["adamw"]["lr"] == pytest.approx(1e-4)


def test_rerun_seeds_are_disjoint_from_tuning_seeds():
    assert tune.rerun_seeds([0, 1], 3) == [2, 3, 4]
    assert set(tune.rerun_seeds([5, 0, 2], 4)).isdisjoint({5, 0, 2})


@pytest.mark.slow
def test_tiny_lr_sweep_then_tuning_then_rerun_gives_sensitivity_and_tuned_tables(tmp_path):
    tiny = ["data.image_size=16", "trainer.epochs=1", "trainer.progress=off"]
    sweep = subprocess.run(
        [
            sys.executable,
            "run.py",
            "-m",
            f"results_dir={tmp_path}",
            "protocol=tuned",
            "optimizer=thermolion,adamw",
            "lr_scale=0.3,1,3",
            "seed=0",
            *tiny,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sweep.returncode == 0, sweep.stderr
    section = tmp_path / "report" / "tuned+epochs=1,image_size=16"
    runs, _, _ = R.collect_runs(tmp_path)
    assert len(runs) == 6 and sorted(runs.groupby("optimizer_name")["lr"].nunique()) == [3, 3]
    assert (section / "lr_sensitivity.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    robust = summary["protocols"]["tuned+epochs=1,image_size=16"]["lr_robustness"]
    assert {(r["dataset"], r["optimizer"]) for r in robust} == {("digits", "thermolion"), ("digits", "adamw")}
    assert "Verdict" in (section / "lr_sensitivity.md").read_text()

    tuned = subprocess.run(
        [sys.executable, "-m", "runners.tuning", str(tmp_path), "--rerun-seeds", "2", "--run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert tuned.returncode == 0, tuned.stderr
    chosen = json.loads((tmp_path / "tuning" / "chosen_lrs.json").read_text())
    assert chosen["tuning_seeds"] == [0] and chosen["rerun_seeds"] == [1, 2] and chosen["equal_budget"]
    assert "trainer.epochs=1" in chosen["rerun_command"] and "data.image_size=16" in chosen["rerun_command"]
    table = (tmp_path / "report" / "rigorous+epochs=1,image_size=16" / "tuned_table.md").read_text()
    for opt in ("thermolion", "adamw"):
        lr = chosen["chosen"]["digits"][opt]["lr"]
        assert f"@ lr {lr:.3g}" in table
    assert "Selection rule: among the configurations that finished every tuning seed" in table


@pytest.mark.slow
def test_rerun_seeds_below_one_is_refused(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "runners.tuning", str(tmp_path), "--rerun-seeds", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "--rerun-seeds must be >= 1" in proc.stderr and "Traceback" not in proc.stderr


def test_a_configuration_missing_seeds_is_not_compared_with_one_that_has_them_all():
    # 1e-2's seeds 1 and 2 failed (not collected): its one surviving 91.0 must not beat 1e-3's three 90.0s
    runs = pd.DataFrame(
        {
            "protocol": "tuned",
            "dataset": "mnist",
            "optimizer_name": "adamw",
            "lr": [1e-3, 1e-3, 1e-3, 1e-2],
            "final_eval_acc": [90.0, 90.0, 90.0, 91.0],
            "seed": [0, 1, 2, 0],
        }
    )
    sel = tune.select_configs(runs)
    chosen = sel["chosen"]["mnist"]["adamw"]
    assert chosen["lr"] == pytest.approx(1e-3) and chosen["left_out"] == 1 and "note" not in chosen
    assert [(r["lr"], r["every_seed"]) for r in sel["table"]] == [(1e-3, True), (1e-2, False)]
    # nobody finished every seed: the most seeds decide, and the choice says why
    ragged = runs.assign(seed=[0, 1, 3, 2])
    ragged = ragged[ragged["seed"] != 3]
    said = tune.select_configs(ragged)["chosen"]["mnist"]["adamw"]
    assert said["lr"] == pytest.approx(1e-3) and said["note"].startswith("no configuration finished every seed")
