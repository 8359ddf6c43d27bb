"""Curves count what tables count (issue 42): a diverged run enters its convergence curve as it enters the
table, at chance from the epoch it diverged, so the last point of every mean curve is its table cell, for
any mix of done and diverged runs (generated)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runners.report.build import mean_curves
from runners.report.collect import collect
from runners.report.tables import final_table

from .test_report import fake_run

EPOCHS = 4
RUN_SETS = st.lists(  # per seed of thermolion on mnist: done at its own accuracy, or diverged at an epoch
    st.one_of(st.floats(60, 99).map(lambda a: ("done", a)), st.integers(1, EPOCHS).map(lambda e: ("diverged", e))),
    min_size=1,
    max_size=4,
)


def _write(root, outcomes):
    for seed, (status, value) in enumerate(outcomes):
        run_dir = fake_run(root, "mnist", "thermolion", seed, 90.0 if status == "diverged" else value, epochs=EPOCHS)
        info = json.loads((run_dir / "run.json").read_text())
        info["config"]["trainer"] = {"epochs": EPOCHS}
        if status == "diverged":  # its metrics.csv keeps the finite epochs before the one it diverged in
            info.update(status="diverged", diverged_at_epoch=value)
            lines = (run_dir / "metrics.csv").read_text().splitlines()
            (run_dir / "metrics.csv").write_text("\n".join(lines[:value]) + "\n")
            (run_dir / "DONE").write_text("diverged")
        (run_dir / "run.json").write_text(json.dumps(info))
    fake_run(root, "mnist", "adam", 0, 95.0, epochs=EPOCHS)


@settings(max_examples=25, deadline=None, print_blob=True)  # the failure prints its reproduction
@given(RUN_SETS)
def test_the_last_point_of_every_mean_curve_is_its_table_cell(tmp_path_factory, outcomes):
    root = tmp_path_factory.mktemp("results")
    _write(root, outcomes)
    c = collect(root)
    table = final_table(c.runs).set_index(["dataset", "optimizer"])
    curves = mean_curves(c.epochs)
    for key, row in table.iterrows():
        last = max((p for p in curves if (p["dataset"], p["optimizer"]) == key), key=lambda p: p["epoch"])
        assert last["epoch"] == EPOCHS, (outcomes, last)
        assert last["eval_acc_mean"] == pytest.approx(row["mean"]), (outcomes, key)


def test_a_diverged_run_is_at_chance_from_the_epoch_it_diverged_and_its_own_before(tmp_path):
    _write(tmp_path, [("done", 99.0), ("diverged", 3)])
    epochs = collect(tmp_path).epochs
    mine = epochs[(epochs["optimizer"] == "thermolion") & (epochs["seed"] == 1)].sort_values("epoch")
    assert mine["epoch"].tolist() == [1, 2, 3, 4]
    assert mine["eval_acc"].tolist()[:2] == [90.0 - 2 * 3, 90.0 - 2 * 2]  # its own, before it diverged
    assert mine["eval_acc"].tolist()[2:] == [10.0, 10.0]  # MNIST's chance from epoch 3 on
    assert mine["train_loss"].tolist()[2:] == [math.log(10)] * 2
    assert mine["at_chance"].eq(True).tolist() == [False, False, True, True]
