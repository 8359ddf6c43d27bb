"""Trackers (logger=tensorboard|mlflow|wandb), each read back with its own reader: TensorBoard's
EventAccumulator, MLflow's MlflowClient on the SQLite store, W&B's offline run file."""

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("tensorboard", reason="the tracking extra is not installed: pip install -e '.[tracking]'")
pytest.importorskip("mlflow", reason="the tracking extra is not installed: pip install -e '.[tracking]'")
pytest.importorskip("wandb", reason="the tracking extra is not installed: pip install -e '.[tracking]'")

from mlflow import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from runners import run_folder as rf  # noqa: E402
from runners.options import ConfigError  # noqa: E402
from runners.sweep import job as T  # noqa: E402
from runners.sweep.compose import compose_dict, compose_run  # noqa: E402
from runners.tracking import config as tracking_config  # noqa: E402
from runners.tracking import epoch_points, parse_loggers  # noqa: E402
from runners.tracking.wandb_records import read_run  # noqa: E402

from .test_harness import ROOT, die_after_checkpoint, run_py  # noqa: E402

ALL = "logger=[tensorboard,mlflow,wandb]"
SMALL = ["data.image_size=8", "trainer.epochs=3", "trainer.progress=off"]  # digits: 12 steps an epoch, 36 in all
TIMING = {"train_time_s", "epoch_time_s", "step_time_ms"}


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _numbers(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in _rows(run_dir / rf.METRICS)]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A 2-job in-process multirun (seeds 0 and 1) with the three trackers, every 2nd step's loss and
    an evaluation every 5 steps."""
    results = tmp_path_factory.mktemp("tracked") / "study"
    proc = run_py("-m", ALL, "seed=0,1", "logger.every_steps=2", "trainer.eval_every_steps=5", *SMALL, results=results)
    assert "2 done" in proc.stdout
    runs = sorted(results.glob("rigorous/digits/*/seed*"))
    assert len(runs) == 2
    return results, runs


def _epoch_ends(run_dir: Path) -> dict[int, float]:
    return {int(r["step"]): float(r["eval_acc"]) for r in _rows(run_dir / rf.METRICS)}


def _mid_epoch(run_dir: Path) -> dict[int, float]:
    return {int(r["step"]): float(r["eval_acc"]) for r in _rows(run_dir / rf.EVALS) if int(r["step"]) % 12}


# ------------------------------------------------------------------ each tracker's own reader
@pytest.mark.slow
def test_tensorboard_has_the_epochs_the_evaluation_points_the_step_losses_and_the_hparams(sweep):
    import numpy as np

    results, runs = sweep
    for run_dir in runs:
        recorded = rf.read_info(run_dir)["trackers"]["tensorboard"]["log_dir"]
        log_dir = results / "tensorboard" / run_dir.relative_to(results)
        assert Path(recorded) == log_dir
        events = EventAccumulator(str(log_dir))
        events.Reload()
        acc = {e.step: e.value for e in events.Scalars("eval/acc")}  # TensorBoard keeps float32
        expected = {**_epoch_ends(run_dir), **_mid_epoch(run_dir)}
        assert sorted(acc) == sorted(expected) == [5, 10, 12, 15, 20, 24, 25, 30, 35, 36]
        assert all(acc[s] == np.float32(v) for s, v in expected.items())
        assert [e.step for e in events.Scalars("train/loss_step")] == list(range(2, 37, 2))
        assert "diagnostics/gate_mean" in events.Tags()["scalars"] and "lr" in events.Tags()["scalars"]
        assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(
            events.PluginTagToContent("hparams")
        )


@pytest.mark.slow
def test_mlflow_holds_one_experiment_with_both_runs_their_params_tags_and_exact_metrics(sweep):
    results, runs = sweep
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("study")  # the results folder's name
    found = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    assert len(found) == 2
    for run_dir in runs:
        record = rf.read_info(run_dir)
        run = found[record["trackers"]["mlflow"]["run_id"]]
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "done"
        assert run.info.run_name == run_dir.relative_to(results).as_posix()
        assert run.data.params["optimizer.lr"] == "0.001" and run.data.params["trainer.batch_size"] == "128"
        assert run.data.params["seed"] == str(record["seed"]) == run.data.tags["seed"]
        assert run.data.tags["code_version"] == record["code_version"] and run.data.tags["run_dir"] == str(run_dir)
        assert run.data.tags["config"] == run_dir.parent.relative_to(results).as_posix()
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "eval/acc")}
        assert history == {**_epoch_ends(run_dir), **_mid_epoch(run_dir)}  # float64: exactly metrics.csv's
        losses = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss_step")]
        assert sorted(losses) == list(range(2, 37, 2))
        assert run.data.metrics["final/eval/acc"] == record["final"]["eval_acc"]


@pytest.mark.slow
def test_wandb_offline_runs_share_a_group_and_a_configuration_and_hold_the_metrics(sweep):
    results, runs = sweep
    files = sorted((results / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2
    logged = {r["id"]: r for r in map(read_run, files)}
    for run_dir in runs:
        record = rf.read_info(run_dir)
        run = logged[record["trackers"]["wandb"]["id"]]
        assert run["group"] == "study" and run["name"] == run_dir.relative_to(results).as_posix()
        config = run_dir.parent.relative_to(results).as_posix()  # W&B caps a job_type at 64 characters
        assert (
            run["job_type"] == config
            if len(config) <= 64
            else (len(run["job_type"]) == 64 and run["job_type"].startswith(config[:55]))
        )
        assert f"seed:{record['seed']}" in run["tags"] and run["config"]["optimizer.lr"] == 0.001
        acc = {row["_step"]: row["eval/acc"] for row in run["history"] if "eval/acc" in row}
        assert acc == {**_epoch_ends(run_dir), **_mid_epoch(run_dir)}
        assert [row["_step"] for row in run["history"] if "train/loss_step" in row] == list(range(2, 37, 2))
        assert run["exit_code"] == 0 and run["summary"]["status"] == "done"
    assert len({r["job_type"] for r in logged.values()}) == 1  # the seeds of one configuration
    assert len({r["id"] for r in logged.values()}) == 2


@pytest.mark.slow
def test_trackers_are_not_part_of_a_runs_identity(sweep):
    results, runs = sweep
    plain = compose_run("seed=0", *SMALL, "trainer.eval_every_steps=5", f"results_dir={results}")
    tracked = compose_run(ALL, "seed=0", *SMALL, "trainer.eval_every_steps=5", f"results_dir={results}")
    assert plain.fingerprint() == tracked.fingerprint() and plain.run_dir() == tracked.run_dir() == runs[0]
    assert "logger" not in json.dumps(tracked.to_dict())
    assert T.train(plain).status == "skipped"  # the tracked run is reused by an untracked relaunch


# ------------------------------------------------------------------ resume, failure
def _die_before_checkpoint(monkeypatch, epoch: int):
    """A kill after epoch ``epoch`` was logged to the trackers and recorded, before its checkpoint: the
    resumed run trains that epoch again, and must not log it twice."""
    real_save = T.save_checkpoint

    def die(path, state):
        if state["epoch"] == epoch:
            raise KeyboardInterrupt("simulated kill")
        real_save(path, state)

    monkeypatch.setattr(T, "save_checkpoint", die)
    return real_save


@pytest.mark.slow
def test_a_killed_and_resumed_run_continues_one_tracker_run_without_logging_a_step_twice(tmp_path, monkeypatch):
    cfg = compose_run(ALL, *SMALL, f"results_dir={tmp_path / 'results'}", "logger.every_steps=3")
    real_save = _die_before_checkpoint(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg)
    first = rf.read_info(cfg.run_dir())["trackers"]
    assert [first[k]["logged_step"] for k in ("mlflow", "wandb", "tensorboard")] == [24, 24, 24]
    monkeypatch.setattr(T, "save_checkpoint", real_save)
    assert T.train(cfg).status == "done"  # resumed from epoch 1's checkpoint: epoch 2 trained again
    record = rf.read_info(cfg.run_dir())["trackers"]

    def ids(rec):
        return {k: {n: v for n, v in rec[k].items() if n != "logged_step"} for k in ("mlflow", "wandb", "tensorboard")}

    assert ids(record) == ids(first) and record["mlflow"]["logged_step"] == 36
    steps = list(range(3, 37, 3))
    client = MlflowClient(record["mlflow"]["tracking_uri"])
    assert len(client.search_runs([record["mlflow"]["experiment_id"]])) == 1
    run = client.get_run(record["mlflow"]["run_id"])
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss_step")) == steps
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "eval/acc")) == [12, 24, 36]
    events = EventAccumulator(record["tensorboard"]["log_dir"])
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss_step")] == steps
    assert [e.value for e in events.Scalars("eval/acc")] == pytest.approx(
        [float(r["eval_acc"]) for r in _rows(cfg.run_dir() / rf.METRICS)]
    )
    runs = [read_run(f) for f in sorted((tmp_path / "results" / "wandb").glob("offline-run-*/run-*.wandb"))]
    assert len(runs) == 2 and {r["id"] for r in runs} == {record["wandb"]["id"]}  # one W&B run, resumed
    logged = [row["_step"] for r in runs for row in r["history"] if "train/loss_step" in row]
    assert logged == steps  # no step in both files
    assert [r["exit_code"] for r in runs] == [1, 0]  # killed, then finished


@pytest.mark.slow
def test_a_tracker_that_raises_mid_run_is_switched_off_and_changes_no_file(tmp_path, monkeypatch, capsys):
    plain = T.train(compose_run(*SMALL, "trainer.eval_every_steps=5", f"results_dir={tmp_path / 'plain'}"))
    real = MlflowClient.log_batch
    calls = {"metrics": 0}

    def fails_on_the_second_epoch(self, run_id, metrics=(), **kwargs):
        if metrics:
            calls["metrics"] += 1
            if calls["metrics"] == 2:
                raise RuntimeError("database is locked (simulated)")
        return real(self, run_id, metrics=metrics, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", fails_on_the_second_epoch)
    cfg = compose_run(
        "logger=[mlflow,tensorboard]", *SMALL, "trainer.eval_every_steps=5", f"results_dir={tmp_path / 'tracked'}"
    )
    result = T.train(cfg)
    assert result.status == "done" and calls["metrics"] == 2  # off after its failure
    err = capsys.readouterr().err
    assert err.count("warning: logger mlflow failed (RuntimeError: database is locked (simulated))") == 1
    assert _numbers(result.run_dir) == _numbers(plain.run_dir)
    evals = [
        [{k: v for k, v in r.items() if k != "train_seconds"} for r in _rows(d / rf.EVALS)]
        for d in (result.run_dir, plain.run_dir)
    ]
    assert evals[0] == evals[1] and len(evals[0]) == 10  # every 5 steps and each epoch end, bit for bit
    record = rf.read_info(result.run_dir)
    assert record["trackers"]["mlflow"]["error"].startswith("RuntimeError") and record["status"] == "done"
    client = MlflowClient(record["trackers"]["mlflow"]["tracking_uri"])
    assert client.get_run(record["trackers"]["mlflow"]["run_id"]).info.status == "FAILED"
    events = EventAccumulator(record["trackers"]["tensorboard"]["log_dir"])
    events.Reload()
    assert [e.step for e in events.Scalars("eval/loss") if e.step % 12 == 0] == [12, 24, 36]  # the other goes on


# ------------------------------------------------------------------ config
@pytest.mark.slow
def test_a_tracker_whose_package_is_missing_is_refused_before_any_run(tmp_path):
    proc = run_py(
        "+logger.mine._target_=tests.plugin_trackers.NeedsAMissingPackage", *SMALL, results=tmp_path / "r", check=False
    )
    assert proc.returncode == 1 and not (tmp_path / "r").exists()  # no folder at all, not even Hydra's own
    assert proc.stderr.strip().splitlines() == [
        "error: invalid config: logger=mine needs thermolion_tests_no_such_package, which is not installed: "
        "pip install -e '.[tracking]'"
    ]


def test_the_built_in_trackers_name_the_extra_when_their_package_is_missing(monkeypatch):
    section = compose_dict(ALL)["logger"]
    real = tracking_config.importlib.util.find_spec
    monkeypatch.setattr(
        tracking_config.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name)
    )
    with pytest.raises(ConfigError, match=r"logger=wandb needs wandb, which is not installed: pip install -e"):
        parse_loggers(section)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["logger.every_steps=0"], "logger.every_steps must be an integer >= 1, got 0"),
        (["+logger.tensorbord=1"], "logger.tensorbord is not a tracker section"),
        (["logger=mlflow", "+logger.mlflow.uri=x"], r"logger.mlflow: got an unexpected keyword argument 'uri'"),
    ],
)
def test_bad_logger_settings_are_refused_with_what_to_write(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose_run(*overrides)


def test_epoch_points_merge_losses_evaluations_and_the_row_by_step():
    row = {"epoch": 1, "step": 4, "train_loss": 0.5, "eval_acc": 90.0, "gate_mean": 0.2}
    evals = [{"step": 2, "epoch": 0.5, "eval_loss": 1.0, "eval_acc": 80.0}]
    assert epoch_points(row, evals, [(2, 0.9), (4, 0.4)]) == [
        (2, {"train/loss_step": 0.9, "eval/loss": 1.0, "eval/acc": 80.0, "epoch": 0.5}),
        (4, {"train/loss_step": 0.4, "epoch": 1.0, "train/loss": 0.5, "eval/acc": 90.0, "diagnostics/gate_mean": 0.2}),
    ]


# ------------------------------------------------------------------ many writers, one store
WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from runners.tracking.base import RunMeta
    from runners.tracking.mlflow_tracker import MLflowTracker
    results, i = Path(sys.argv[1]), int(sys.argv[2])
    meta = RunMeta(f"p/d/o/seed{i}", "p/d/o", results, results / f"seed{i}", {"seed": i}, {"seed": str(i)})
    tracker = MLflowTracker()
    tracker.start(meta, None, 0)
    for step in range(1, 41):
        tracker.log([(step, {"train/loss_step": 1.0 / step, "eval/acc": float(i)})])
    tracker.finish("done", {"eval/acc": float(i)}, 40)
    """
)


@pytest.mark.slow
def test_concurrent_writers_share_one_sqlite_store_without_losing_a_point(tmp_path):
    """Runs side by side (hydra/launcher=parallel, Slurm array tasks on one node) write one mlflow.db."""
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(i)], cwd=ROOT, stderr=subprocess.PIPE)
        for i in range(4)
    ]
    errors = [p.communicate(timeout=300)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(tmp_path.name).experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"p/d/o/seed{i}" for i in range(4)]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "train/loss_step")) == 40


@pytest.mark.slow
def test_a_tracker_added_at_a_resume_is_back_filled_and_says_so(tmp_path, monkeypatch, capsys):
    """Each tracker keeps its own logged step: one added at a resume gets the epochs already trained,
    and the tracker that was there logs nothing twice."""
    where = f"results_dir={tmp_path / 'results'}"
    cfg = compose_run("logger=tensorboard", *SMALL, where)
    real_save = die_after_checkpoint(monkeypatch, 2)  # killed right after epoch 2's checkpoint
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg)
    monkeypatch.setattr(T, "save_checkpoint", real_save)
    resumed = compose_run("logger=[tensorboard,mlflow]", *SMALL, where)
    assert resumed.run_dir() == cfg.run_dir() and T.train(resumed).status == "done"
    out = capsys.readouterr().out
    assert "logger mlflow from step 0: back-filled up to epoch 2 from the run's own rows" in out
    record = rf.read_info(cfg.run_dir())["trackers"]
    client = MlflowClient(record["mlflow"]["tracking_uri"])
    acc = {m.step: m.value for m in client.get_metric_history(record["mlflow"]["run_id"], "eval/acc")}
    assert acc == {int(r["step"]): float(r["eval_acc"]) for r in _rows(cfg.run_dir() / rf.METRICS)}  # 12, 24, 36
    events = EventAccumulator(record["tensorboard"]["log_dir"])
    events.Reload()
    assert [e.step for e in events.Scalars("eval/acc")] == [12, 24, 36]  # nothing twice


@pytest.mark.slow
def test_a_fresh_start_leaves_one_mlflow_run_per_run_folder(tmp_path):
    """rerun=all (or a stale rerun, or a discarded checkpoint) opens a new MLflow run and soft-deletes the
    one it replaces, so the experiment shows one run per folder (``mlflow runs restore`` undoes it)."""
    where = f"results_dir={tmp_path / 'results'}"
    first = T.train(compose_run("logger=mlflow", *SMALL, where))
    old = rf.read_info(first.run_dir)["trackers"]["mlflow"]
    again = T.train(compose_run("logger=mlflow", *SMALL, where, "rerun=all"))
    new = rf.read_info(again.run_dir)["trackers"]["mlflow"]
    client = MlflowClient(new["tracking_uri"])
    active = client.search_runs([new["experiment_id"]])
    assert [r.info.run_id for r in active] == [new["run_id"]] != [old["run_id"]]
    assert active[0].data.tags["supersedes"] == old["run_id"]
    assert client.get_run(old["run_id"]).info.lifecycle_stage == "deleted"


@pytest.mark.slow
def test_wandb_points_lost_in_a_kill_are_sent_again_on_resume(tmp_path, monkeypatch, capsys):
    """W&B writes offline points asynchronously: a kill can lose points the run already counted as logged.
    The resume reads the offline files for the last step W&B made durable and re-sends from there."""
    from runners.tracking import wandb_tracker

    cfg = compose_run("logger=wandb", *SMALL, f"results_dir={tmp_path / 'results'}")
    real_log = wandb_tracker.WandbTracker.log

    def loses_epoch_two(self, points):  # as if W&B's writer died before writing them
        real_log(self, [(step, m) for step, m in points if not 12 < step <= 24])

    monkeypatch.setattr(wandb_tracker.WandbTracker, "log", loses_epoch_two)
    real_save = die_after_checkpoint(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg)
    assert rf.read_info(cfg.run_dir())["trackers"]["wandb"]["logged_step"] == 24  # what the run sent
    monkeypatch.setattr(wandb_tracker.WandbTracker, "log", real_log)
    monkeypatch.setattr(T, "save_checkpoint", real_save)
    assert T.train(cfg).status == "done"
    assert "logger wandb from step 12: back-filled up to epoch 2" in capsys.readouterr().out
    files = sorted((tmp_path / "results" / "wandb").glob("offline-run-*/run-*.wandb"))
    rows = [row for f in files for row in read_run(f)["history"] if "eval/acc" in row]
    assert sorted(row["_step"] for row in rows) == [12, 24, 36]  # every epoch's point, none twice
