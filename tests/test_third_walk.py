"""What a new user hit on a third walk (issue 44): trackers that stall on a dead server, Hydra's own errors,
folders left behind, and the smaller items. Each test fails on the code before the fix."""

import dataclasses
import socket
import time

import pytest

from runners.options import ConfigError
from runners.sweep.compose import compose_run

from .test_harness import run_py

pytest.importorskip("mlflow", reason="the tracking extra is not installed: pip install -e '.[tracking]'")


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _leftovers(results) -> list[str]:
    return sorted(str(p.relative_to(results)) for p in results.rglob("*")) if results.exists() else []


# ---------------------------------------------------------------------- 1. a tracker server that is down
@pytest.mark.slow
@pytest.mark.parametrize("server", ["refuses", "never answers"])
def test_a_tracking_server_that_is_down_refuses_the_sweep_in_one_line_and_seconds(tmp_path, server):
    listener = socket.socket()
    if server == "never answers":  # accepts the TCP handshake (backlog), never reads or replies
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
    else:
        port = _closed_port()
    results = tmp_path / "results"
    try:
        t0 = time.monotonic()
        proc = run_py(
            "-m",
            "logger=mlflow",
            f"logger.mlflow.tracking_uri=http://127.0.0.1:{port}",
            "seed=0,1",
            "trainer.epochs=1",
            results=results,
            check=False,
        )
        elapsed = time.monotonic() - t0
    finally:
        listener.close()
    assert proc.returncode != 0 and elapsed < 30, (elapsed, proc.stderr[-1000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"http://127.0.0.1:{port} does not answer" in lines[0], proc.stderr
    assert "Retrying" not in proc.stderr and "Traceback" not in proc.stderr
    assert _leftovers(results) == []


@pytest.mark.parametrize(
    "override, says",
    [
        ("logger.wandb.mode=banana", "mode must be one of online, offline, disabled, shared"),
        (
            "logger.mlflow.tracking_uri=sqlite:////nonexistent/dir/mlflow.db",
            "the folder /nonexistent/dir does not exist",
        ),
    ],
)
def test_tracker_settings_that_cannot_work_are_refused_at_the_boundary(tmp_path, override, says):
    group = "logger=wandb" if "wandb" in override else "logger=mlflow"
    with pytest.raises(ConfigError, match=says):
        compose_run(group, override, f"results_dir={tmp_path}")
    assert not __import__("pathlib").Path("/nonexistent").exists()


# ---------------------------------------------------------------------- 3. Hydra's own errors: one line, no folder
HYDRA_ERRORS = [
    (("logger=tensorboard", "logger=mlflow"), "logger is given twice (logger=tensorboard and logger=mlflow)"),
    (("optimizer=adamw", "optimizer=lion"), "optimizer is given twice (optimizer=adamw and optimizer=lion)"),
    (
        ("-m", "optimizer=adamw,bogus"),
        "optimizer=bogus is not an option of optimizer (conf/optimizer/); choose one",
    ),
    (("logger=tensorbord",), "logger=tensorbord is not an option of logger (conf/logger/); choose one of: mlflow,"),
    (("hydra/launcher=paralel",), "hydra/launcher=paralel is not an option of hydra/launcher"),
    (("-m", "trainer.bogus=1"), "trainer.bogus is not a setting of this config"),
    (("trainer.epochs=0",), "trainer.epochs must be >= 1, got 0"),  # the config boundary's own refusal
]


@pytest.mark.parametrize("args, says", HYDRA_ERRORS)
def test_hydra_errors_are_one_line_from_the_command_check(args, says):
    """The fast tier's twin of the end-to-end test below."""
    from runners.sweep.precheck import check_command

    error = check_command(list(args))
    assert error is not None and says in error and "\n" not in error


@pytest.mark.parametrize("args, says", HYDRA_ERRORS)
@pytest.mark.slow
def test_hydra_errors_are_one_line_and_a_refused_command_leaves_no_folder(tmp_path, args, says):
    results = tmp_path / "new" / "results"
    proc = run_py(*args, results=results, check=False)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and says in lines[0], proc.stdout + proc.stderr
    assert not (tmp_path / "new").exists()  # not results_dir, not its parent, not .hydra/


# ---------------------------------------------------------------------- 4. status and report: one classification
def test_status_and_report_classify_a_truncated_run_and_a_lost_record_alike(tmp_path, capsys):
    from runners import run_folder as rf
    from runners import status
    from runners.report.collect import collect
    from runners.sweep import job as T

    from .test_harness import config

    runs = [T.train(dataclasses.replace(config(tmp_path, "adamw", epochs=3), seed=s)).run_dir for s in (0, 1)]
    lines = (runs[0] / rf.METRICS).read_text().splitlines()
    (runs[0] / rf.METRICS).write_text("\n".join(lines[:3]) + "\n")  # 2 of 3 epochs
    (runs[1] / rf.RUN_JSON).unlink()  # DONE and metrics.csv, no record
    status.main([str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert "2 run(s): 2 unreadable" in out
    assert "seed0: metrics.csv truncated: 2 rows, run.json records 3 epochs" in out
    assert "seed1: DONE but no run.json" in out
    excluded = {e["run_dir"].split("/")[-1]: e["reason"] for e in collect(tmp_path / "results").excluded}
    assert excluded["seed0"] in out and excluded["seed1"] in out  # the report's reasons, word for word


# ---------------------------------------------------------------------- 7. smaller items
@pytest.mark.slow
def test_help_into_a_pipe_whose_reader_left_ends_quietly(tmp_path):
    """``python run.py --help | head``: the reader closes its end; the closed end is made certain here by
    closing it before the child (a second of imports) writes anything."""
    import subprocess
    import sys

    from .test_harness import ROOT

    proc = subprocess.Popen(
        [sys.executable, "run.py", "--help"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and err == "", err


@pytest.mark.slow
def test_a_compiled_step_prints_no_dynamo_warnings():
    """torch.compile(opt.step) printed 16 lines (a graph break on the CPU step's int(), Dynamo tracing the
    noise generators' seeding); the bookkeeping now runs outside the graph, as torch.optim's does."""
    import subprocess
    import sys
    import textwrap

    from .test_harness import ROOT

    script = textwrap.dedent(
        """
        import torch
        from thermolion import ThermoLion
        m = torch.nn.Linear(8, 4)
        for kw in (dict(), dict(capturable=True)):
            opt = ThermoLion(m.parameters(), **kw)
            step = torch.compile(opt.step)
            for _ in range(3):
                m.weight.grad, m.bias.grad = torch.randn_like(m.weight), torch.randn_like(m.bias)
                step()
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for phrase in ("Graph break", "Dynamo does not know", "graph_break"):
        assert phrase not in proc.stderr, proc.stderr[-2000:]


def test_the_page_says_one_seed_where_there_is_no_spread_and_hints_at_wide_tables():
    import pandas as pd

    from runners.report.page import _final_table
    from runners.report.page_figures import convergence_figure
    from runners.report.tables import UNCOUNTED

    def curves(stds):
        return pd.DataFrame(
            [
                {
                    "dataset": "digits",
                    "optimizer": o,
                    "epoch": e,
                    "step": e,
                    "eval_acc_mean": 50.0 + e,
                    "eval_acc_std": s,
                }
                for o, s in (("adamw", stds), ("lion", stds))
                for e in (1, 2)
            ]
        )

    assert convergence_figure(curves(float("nan")), "digits")["layout"]["title"]["text"] == (
        "digits: one seed each (no spread to show)"
    )
    assert convergence_figure(curves(0.5), "digits")["layout"]["title"]["text"] == "digits: mean ± std over seeds"
    row = {
        "dataset": "digits",
        "mean": 90.0,
        "std": 1.0,
        "n": 2,
        "attempted": 2,
        "done": 2,
        "best": False,
        **{k: 0 for k in ("diverged", *UNCOUNTED)},
    }
    narrow = _final_table([{**row, "optimizer": f"opt{i}"} for i in range(3)])
    wide = _final_table([{**row, "optimizer": f"opt{i}"} for i in range(9)])
    assert "scroll it sideways" not in narrow and "scroll it sideways" in wide and "class='scroll'" in wide


@pytest.mark.slow
def test_a_tracker_that_fails_is_off_for_the_rest_of_the_sweep_and_named_once_in_the_summary(tmp_path, capsys):
    import json

    proc = run_py(
        "-m",
        "+logger.flaky._target_=tests.plugin_trackers.FailsOnFirstLog",
        "seed=0,1",
        "data.image_size=8",
        "trainer.epochs=1",
        "trainer.progress=off",
        "hydra.callbacks.sweep_summary.report=false",
        results=tmp_path / "r",
    )
    assert "2 done" in proc.stdout
    assert proc.stderr.count("warning: logger flaky failed") == 1  # said when it failed, not again
    summary = [ln for ln in proc.stderr.splitlines() if "WARNING logger flaky failed" in ln]
    assert len(summary) == 1 and "in 2 run(s)" in summary[0] and "went away" in summary[0]
    records = [json.loads(p.read_text())["trackers"]["flaky"] for p in sorted((tmp_path / "r").rglob("run.json"))]
    assert "went away" in records[0]["error"] and records[1]["error"].startswith("off for this sweep")
    from runners import status
    from runners.report import build_report

    status.main([str(tmp_path / "r")])  # the same warnings in runners.status and in the report, not only a log
    out = capsys.readouterr().out
    assert out.count("logger flaky failed") == 2 and "warnings the runs recorded" in out
    summary = build_report(tmp_path / "r", tmp_path / "report")
    assert len(summary["warnings"]) == 2
    assert "## Warnings the runs recorded" in (tmp_path / "report" / "README.md").read_text()


def test_the_reports_command_keeps_the_launcher_it_ran_under():
    """Issue 45: the report's Command dropped hydra/launcher=parallel and its workers, so re-running it ran
    serially. The launcher's and sweeper's overrides are kept; Hydra's internal ones are not."""
    from omegaconf import OmegaConf

    from runners.sweep.hydra_glue import sweep_command

    config = OmegaConf.create(
        {
            "hydra": {
                "overrides": {
                    "hydra": ["hydra.mode=MULTIRUN", "hydra/launcher=parallel", "hydra.launcher.workers=2"],
                    "task": ["optimizer=thermolion,adamw", "seed=0,1"],
                }
            }
        }
    )
    assert sweep_command(config) == (
        "python run.py -m hydra/launcher=parallel hydra.launcher.workers=2 optimizer=thermolion,adamw seed=0,1"
    )


def test_runners_status_reads_each_sweeps_command_from_hydras_own_record(tmp_path):
    """Issue 45: runners.status names the command of every sweep that wrote a folder, launcher included,
    read from Hydra's multirun.yaml; one it cannot read is said, not skipped."""
    from omegaconf import OmegaConf

    from runners.sweep.sweeps import recorded_sweeps

    sweep = tmp_path / ".hydra" / "sweeps" / "2026-12-04_00-00-00"
    sweep.mkdir(parents=True)
    overrides = {
        "hydra": ["hydra.mode=MULTIRUN", "hydra/launcher=parallel", "hydra.launcher.workers=2"],
        "task": ["seed=0,1"],
    }
    OmegaConf.save(OmegaConf.create({"hydra": {"overrides": overrides}, "seed": 0}), sweep / "multirun.yaml")
    broken = tmp_path / ".hydra" / "sweeps" / "2026-12-04_00-00-01"
    broken.mkdir()
    (broken / "multirun.yaml").write_text("hydra: [unclosed")
    assert recorded_sweeps(tmp_path) == [
        ("2026-12-04_00-00-00", "python run.py -m hydra/launcher=parallel hydra.launcher.workers=2 seed=0,1"),
        ("2026-12-04_00-00-01", "(unreadable multirun.yaml: ParserError)"),
    ]


def test_a_failed_tracker_is_off_only_for_its_own_sweep(tmp_path, capsys):
    """Off for the rest of the sweep (same results folder, same process) and for no other: another study,
    or the next sweep (forget_failures at its start), tries it again."""
    from runners.outcomes import recorded_warnings
    from runners.tracking import LoggerConfig
    from runners.tracking.base import RunMeta
    from runners.tracking.config import TrackerSpec
    from runners.tracking.fanout import Trackers, forget_failures

    forget_failures()
    config = LoggerConfig(1, (TrackerSpec("flaky", "tests.plugin_trackers.FailsOnFirstLog"),))

    def run(study: str) -> dict:
        meta = RunMeta("k", "c", tmp_path / study, tmp_path / study / "k", {}, {})
        trackers = Trackers(config)
        trackers.start(meta, None, resumed=False)
        trackers.log([(1, {"train/loss": 1.0})])
        return {w.split(":", 1)[0]: w.split(": ", 1)[1] for w in recorded_warnings({"trackers": trackers.record()})}

    assert "went away" in run("a")["logger flaky failed"]
    assert run("a")["logger flaky failed"].startswith("off for this sweep")  # the same study: not tried again
    assert "went away" in run("b")["logger flaky failed"]  # another study: tried
    forget_failures()
    assert "went away" in run("a")["logger flaky failed"]  # the next sweep: tried again
    assert capsys.readouterr().err.count("warning: logger flaky failed") == 3


def test_a_plain_value_given_twice_keeps_hydras_last_one_wins():
    """A base command with an override composes by repeating a value (trainer.epochs=2 ... trainer.epochs=50):
    only a config group picked twice is refused."""
    from runners.sweep.precheck import check_command, given_twice

    assert given_twice(["trainer.epochs=2", "seed=1", "trainer.epochs=3"]) is None
    assert check_command(["trainer.epochs=2", "trainer.epochs=3"]) is None
