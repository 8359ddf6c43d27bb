"""Every run counts (runners/outcomes.py): diverged runs at chance, killed runs as interrupted, and
statistics that say what their n can show."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from runners import status as S
from runners.identity import installed, stale_reasons, versions
from runners.outcomes import classify
from runners.report import build_report
from runners.report.aggregate import iqm, probability_of_improvement, scores
from runners.report.collect import collect
from runners.report.runs_table import runs_frame
from runners.report.stats import mean_ci, paired_stats, wilcoxon_floor, write_stats
from runners.report.tunability import expected_max_curve
from runners.sweep import job as T
from runners.sweep.compose import compose_run

from .test_harness import ROOT
from .test_report import fake_run


def _set_trial(run_dir, trial):
    info = json.loads((run_dir / "run.json").read_text())
    info["config"]["trial"] = trial
    (run_dir / "run.json").write_text(json.dumps(info))


# ------------------------------------------------------------------ the rules, on hand-made numbers
def test_a_diverged_run_enters_iqm_improvement_and_best_of_k_at_chance(tmp_path):
    root = tmp_path / "results"
    for seed, acc in enumerate([90.0, 91.0, 92.0]):
        fake_run(root, "mnist", "thermolion", seed, acc)
    fake_run(root, "mnist", "sgd", 0, 95.0)
    fake_run(root, "mnist", "sgd", 1, 96.0)
    fake_run(root, "mnist", "sgd", 2, 99.0, status="diverged")  # its last finite epoch must not count
    runs = collect(root).runs
    sgd = runs[runs["optimizer"] == "sgd"].set_index("seed")
    assert sgd.loc[2, "status"] == "diverged"
    assert sgd.loc[2, "final_eval_acc"] == 10.0 and sgd.loc[2, "best_eval_acc"] == 10.0  # 100 / 10 classes

    # P(thermolion > sgd): each of 3 thermolion runs beats only the diverged one: 3 of 9 pairs.
    # Dropping the diverged run (survivorship) would give 0.
    by = {o: {"mnist": g["final_eval_acc"].to_numpy()} for o, g in runs.groupby("optimizer")}
    assert probability_of_improvement(by["thermolion"], by["sgd"])[0] == pytest.approx(3 / 9)

    # scores: (acc - 10) / (best mean - 10), best mean = thermolion's 91 (sgd's is (95 + 96 + 10) / 3 = 67)
    s = scores(runs).to_numpy()
    hand = (runs["final_eval_acc"].to_numpy() - 10.0) / 81.0
    assert s == pytest.approx(hand) and s[runs["status"].to_numpy() == "diverged"] == pytest.approx([0.0])
    sgd_scores = np.sort(s[runs["optimizer"].to_numpy() == "sgd"])  # 0, 85/81, 86/81
    assert iqm(sgd_scores) == pytest.approx(stats.trim_mean([0.0, 85 / 81, 86 / 81], 0.25))

    # E[best of k] over tuning trials, one diverged: Dodge et al.'s estimator over (10, 80, 90)
    tune = tmp_path / "tune"
    for trial, acc, status in [(1, 80.0, "done"), (2, 90.0, "done"), (3, 97.0, "diverged")]:
        _set_trial(fake_run(tune, "mnist", f"adamw_t{trial}", 0, acc, status=status), trial)
    values = sorted(collect(tune).runs["final_eval_acc"])
    assert values == [10.0, 80.0, 90.0]
    # k = 1: the mean; k = 2: E[max of a pair] = (80 + 90 + 90) / 3; k = 3: the max
    assert expected_max_curve(values) == pytest.approx([60.0, 260 / 3, 90.0])


def test_t_intervals_below_six_seeds_match_scipy_and_the_bootstrap_takes_over_at_six():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5):
        diff = rng.normal(1.0, 0.7, n)
        low, high, method = mean_ci(diff)
        ref = stats.t.interval(0.95, n - 1, loc=diff.mean(), scale=stats.sem(diff))
        assert method == "t" and (low, high) == pytest.approx(ref, rel=1e-12)
    assert mean_ci(rng.normal(1.0, 0.7, 6))[2] == "bootstrap"


def test_wilcoxon_floor_is_what_scipy_reaches_at_best():
    for n in range(3, 9):
        diff = np.arange(1.0, n + 1)  # all positive, no ties: the most extreme signed-rank sum
        assert wilcoxon_floor(n) == pytest.approx(stats.wilcoxon(diff).pvalue)
    assert wilcoxon_floor(3) == 0.25


def test_differences_without_spread_are_untested_never_a_bare_win(tmp_path):
    runs = pd.DataFrame(
        [
            {"dataset": d, "seed": s, "optimizer": o, "final_eval_acc": acc + (2.0 if o == "thermolion" else 0.0)}
            for d in ("mnist", "fashionmnist")
            for s, acc in enumerate([90.0, 91.0, 93.0])
            for o in ("thermolion", "adamw")
        ]
    )
    df = paired_stats(runs, "thermolion")
    assert df["outcome"].tolist() == ["win (untested)", "win (untested)"]  # +2 on every seed: no spread
    counts = write_stats(df, tmp_path, "thermolion")
    assert counts["adamw"] == {"win": 0, "tie": 0, "loss": 0, "untested": 2}
    text = (tmp_path / "stats.md").read_text()
    assert "n = 3 paired seeds: Wilcoxon's smallest possible p is 2/2^3 = 0.25 (0.5 after Holm over 2 datasets)" in text
    assert "it can never reach 5% here" in text


# ------------------------------------------------------------------ a real sweep with a diverging optimizer
TINY = ("dataset=digits", "data.image_size=16", "trainer.epochs=2", "trainer.progress=off")


def _cfg(tmp_path, *overrides):
    """A small digits run, as ``python run.py <overrides>`` composes it."""
    where = (f"results_dir={tmp_path / 'results'}", f"data.cache_dir={tmp_path / 'cache'}")
    return compose_run(*TINY, *where, *overrides)


@pytest.mark.slow
def test_a_diverging_optimizer_stays_in_every_table_at_chance(tmp_path):
    for seed in (0, 1):
        assert T.train(_cfg(tmp_path, "optimizer=thermolion", f"seed={seed}")).status == "done"
        assert T.train(_cfg(tmp_path, "optimizer=sgd", "optimizer.lr=1000", f"seed={seed}")).status == "diverged"
    out = tmp_path / "report"
    summary = build_report(tmp_path / "results", out)
    assert summary["counted_runs"] == {"done": 2, "diverged": 2}
    section = out / "rigorous+epochs=2,image_size=16"
    table = pd.read_csv(section / "table_final.csv").set_index("optimizer")
    assert table.loc["sgd_lr=1000", ["mean", "n", "attempted", "done", "diverged"]].tolist() == [10.0, 2, 2, 0, 2]
    assert "chance (0/2, 2 diverged)" in (section / "table_final.md").read_text()
    assert (
        "| sgd_lr=1000 | 2 (2) | 0 | 1 |" in (section / "aggregate.md").read_text()
    )  # runs (diverged), missing, datasets
    assert "never (0/2, 2 diverged)" in (section / "time_to_target.md").read_text()
    ttt = pd.read_csv(section / "time_to_target.csv")
    assert np.isinf(ttt[ttt["optimizer"] == "sgd_lr=1000"]["steps"]).all()
    parquet = pd.read_parquet(out / "runs.parquet")
    diverged = parquet[parquet["status"] == "diverged"]
    assert len(diverged) == 2 and (diverged["final_eval_acc"] == 10.0).all()
    assert "## Diverged (counted at chance)" in (out / "README.md").read_text()
    stats_rows = pd.read_csv(section / "stats.csv")
    assert stats_rows["n"].tolist() == [2]  # both seeds paired, the diverged ones at chance


# ------------------------------------------------------------------ killed runs
def _start(tmp_path, *overrides):
    """``python run.py`` in its own process; returns it once its run.json says running."""
    where = (f"results_dir={tmp_path / 'results'}", f"data.cache_dir={tmp_path / 'cache'}")
    proc = subprocess.Popen(
        [sys.executable, "run.py", *TINY, *where, *overrides],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    info = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "results").rglob("run.json"))
        if found:
            try:
                info = json.loads(found[0].read_text())
            except ValueError:
                info = None
            if info and info.get("status") == "running":
                return proc, found[0].parent
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"the run never wrote a running run.json (exit {proc.poll()})")


def _status_lines(results, capsys, *overrides):
    assert S.main([str(results), *overrides]) == 0
    return capsys.readouterr().out


@pytest.mark.slow
def test_a_run_killed_in_its_first_epoch_is_interrupted_and_a_live_one_running(tmp_path, capsys):
    # batch 2: ~700 steps an epoch, so the kill lands in the first one
    proc, run_dir = _start(tmp_path, "optimizer=adamw", "trainer.epochs=50", "trainer.batch_size=2")
    try:
        out = _status_lines(tmp_path / "results", capsys)
        assert "1 running" in out and "heartbeat" in out and str(run_dir.relative_to(tmp_path / "results")) in out
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "running" and info["epochs_done"] == 0 and info["owner"]["pid"] == proc.pid
    assert classify(run_dir, info).status == "interrupted"
    sweep = (*TINY, "optimizer=adamw,lion", "trainer.epochs=50", "trainer.batch_size=2")  # as run.py -m takes it
    out = _status_lines(tmp_path / "results", capsys, *sweep)
    assert "1 interrupted" in out and "is gone after 0 epoch(s)" in out
    assert "planned sweep: 2 run(s), 1 with a folder, 1 missing" in out and "lion+" in out
    frame = runs_frame(collect(tmp_path / "results").records, pd.DataFrame())
    assert frame["status"].tolist() == ["interrupted"]


@pytest.mark.slow
def test_rerun_all_killed_midway_never_shows_the_old_numbers(tmp_path):
    first = T.train(_cfg(tmp_path, "optimizer=adamw", "trainer.batch_size=8"))
    assert first.status == "done" and len(collect(tmp_path / "results").runs) == 1
    proc, run_dir = _start(tmp_path, "optimizer=adamw", "trainer.batch_size=8", "rerun=all")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert run_dir == first.run_dir and not (run_dir / "DONE").exists()
    c = collect(tmp_path / "results")
    assert c.runs.empty and [e["status"] for e in c.excluded] == ["interrupted"]
    assert runs_frame(c.records, pd.DataFrame())["status"].tolist() == ["interrupted"]


@pytest.mark.slow
def test_a_rerun_without_eval_every_steps_drops_an_old_evals_csv(tmp_path):
    fine = T.train(_cfg(tmp_path, "optimizer=adamw", "trainer.eval_every_steps=4"))
    plain = T.train(_cfg(tmp_path, "optimizer=adamw"))
    assert plain.run_dir != fine.run_dir and "eval_every_steps=4" in fine.run_dir.parent.name  # in the identity
    (plain.run_dir / "evals.csv").write_bytes((fine.run_dir / "evals.csv").read_bytes())  # as an older version left
    again = T.train(_cfg(tmp_path, "optimizer=adamw", "rerun=all"))
    assert again.run_dir == plain.run_dir and again.status == "done"
    assert not (again.run_dir / "evals.csv").exists()
    curves = collect(tmp_path / "results").curves
    mine = curves[curves["run_dir"].str.contains("eval_every_steps") == False]  # noqa: E712
    assert not mine["fine"].any() and mine["step"].tolist() == sorted(mine["step"]) and len(mine) == 2


def test_a_run_finished_with_other_code_or_packages_is_stale_naming_both_versions(tmp_path, capsys):
    run_dir = fake_run(tmp_path / "results", "mnist", "adamw", 0, 90.0)
    info = json.loads((run_dir / "run.json").read_text())
    info.update(code_version="0123456789ab", packages=versions(["schedulefree"]))
    (run_dir / "run.json").write_text(json.dumps(info))

    def now(code):
        return lambda recorded: stale_reasons(recorded, code)

    outcome = classify(run_dir, info, now("ba9876543210"))
    assert outcome.status == "stale" and outcome.finished_as == "done"
    assert "code 0123456789ab, the code is now ba9876543210" in outcome.reason
    assert classify(run_dir, info, now("0123456789ab")).status == "done"
    assert classify(run_dir, info).status == "done"  # no check given: nothing is called stale
    info["packages"]["schedulefree"] = "1.4"  # made with another release than the one installed
    outcome = classify(run_dir, info, now("0123456789ab"))
    assert outcome.status == "stale" and f"schedulefree 1.4, now {installed('schedulefree')}" in outcome.reason
    del info["packages"]
    assert "no recorded package versions" in classify(run_dir, info, now("0123456789ab")).reason
    info.update(packages=versions([]), environment={"device_type": "cuda"})
    assert stale_reasons(info, "0123456789ab", "cpu") == ["device cuda, now cpu"]
    info["code_version"] = "0123456789ab"
    (run_dir / "run.json").write_text(json.dumps({**info, "packages": {"torch": "1.0"}}))
    out = _status_lines(tmp_path / "results", capsys)
    assert "1 stale" in out and f"torch 1.0, now {installed('torch')}" in out


@pytest.mark.slow
def test_restat_rebuilds_a_reports_stats_from_its_runs_table(tmp_path):
    root = tmp_path / "results"
    for seed, (a, b) in enumerate([(90.0, 88.0), (91.0, 88.5), (93.0, 89.0)]):
        fake_run(root, "mnist", "thermolion", seed, a)
        fake_run(root, "mnist", "adam", seed, b)
    fake_run(root, "mnist", "thermolion", 3, 95.0, status="diverged")  # at chance in both
    fake_run(root, "mnist", "adam", 3, 80.0)
    fake_run(root, "mnist", "adam", 4, 80.0, status="failed", done=False)  # a miss of thermolion's and adam's
    out = tmp_path / "report"
    build_report(root, out)
    want = {name: (out / "paper" / name).read_text() for name in ("stats.csv", "aggregate.csv", "aggregate.md")}
    old = pd.read_parquet(out / "runs.parquet").drop(columns="record")  # as a report of older code wrote it:
    old.loc[old["status"] == "failed", ["protocol", "dataset", "optimizer", "seed"]] = None  # no cell for a failed run
    old.to_parquet(out / "runs.parquet")
    (out / "epochs.parquet").unlink()
    for name in want:
        (out / "paper" / name).write_text("")
    proc = subprocess.run(
        [sys.executable, "scripts/restat.py", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert {name: (out / "paper" / name).read_text() for name in want} == want
    assert "1 comparisons from 8 runs" in proc.stdout and "from 8 runs (9 attempted)" in proc.stdout
    assert pd.read_csv(out / "paper" / "stats.csv")["n"].tolist() == [4]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["missing"] for r in summary["protocols"]["paper"]["aggregate"]["table"]] == [1, 1]
