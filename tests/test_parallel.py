"""hydra/launcher=parallel: a capped number of long-lived workers running a sweep's runs side by side, with
every promise of the serial launcher (locks, skip and resume, the summary), checked with real processes."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hydra_plugins.thermolion_launcher.parallel import default_workers

from .test_harness import ROOT

TIMING = ("train_time_s", "epoch_time_s", "step_time_ms")
SWEEP = ["optimizer=adamw,lion", "seed=0,1", "data.image_size=16", "trainer.progress=off"]
PARALLEL = ["hydra/launcher=parallel", "hydra.launcher.workers=2", "hydra.launcher.threads_per_run=1"]


def _cmd(results: Path, *overrides) -> list[str]:
    return [sys.executable, "run.py", "-m", *overrides, f"results_dir={results}"]


def _env(tmp_path) -> dict:
    # one thread, as each parallel run has: CPU reductions split by thread, so the count is part of a
    # run's identity (runners.identity)
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "THERMOLION_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT),
    }


def _run(tmp_path, results, *overrides, timeout=600):
    return subprocess.run(
        _cmd(results, *overrides), cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=timeout
    )


def _metrics(results: Path) -> dict:
    out = {}
    for path in sorted(results.rglob("metrics.csv")):
        rows = [line.split(",") for line in path.read_text().splitlines()]
        keep = [i for i, name in enumerate(rows[0]) if name not in TIMING]
        out[str(path.parent.relative_to(results))] = [[r[i] for i in keep] for r in rows]
    return out


def _infos(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.rglob("run.json")) if ".hydra" not in p.parts]


@pytest.mark.slow
def test_two_workers_give_the_serial_launchers_folders_and_numbers_and_never_run_more_than_two(tmp_path):
    serial = _run(tmp_path, tmp_path / "serial", *SWEEP, "trainer.epochs=3")
    parallel = _run(tmp_path, tmp_path / "parallel", *PARALLEL, *SWEEP, "trainer.epochs=3")
    assert serial.returncode == 0 and parallel.returncode == 0, parallel.stderr[-2000:]
    assert "sweep finished: 4 run(s): 4 done" in parallel.stdout and "at most 2 at once" in parallel.stdout
    want, got = _metrics(tmp_path / "serial"), _metrics(tmp_path / "parallel")
    assert len(got) == 4 and got == want  # the same folders, bit-identical numbers
    infos = _infos(tmp_path / "parallel")
    assert {i["environment"]["torch_threads"] for i in infos} == {1}
    events = sorted([(i["started_at"], 1) for i in infos] + [(i["finished_at"], -1) for i in infos])
    at_once, most = 0, 0
    for _, change in events:
        at_once += change
        most = max(most, at_once)
    assert most == 2  # side by side, and never more than the cap


STARTED: list = []


def _default_sigint():
    # a process started with SIGINT ignored (as a test runner's children may be) would never see Ctrl-C
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(tmp_path, results, *overrides):
    proc = subprocess.Popen(
        _cmd(results, *overrides),
        cwd=ROOT,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a terminal's Ctrl-C would reach the whole group: here, the launcher only
        preexec_fn=_default_sigint,
    )
    STARTED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _no_launch_outlives_its_test():
    yield
    while STARTED:
        proc = STARTED.pop()
        try:  # a failed test's launcher and its jobs (one process group) must not load the rest of the suite
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_for_training(results: Path, count: int, timeout=120) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [i for i in _infos(results) if i.get("status") == "running" and i.get("epochs_done", 0) >= 1]
        if len(running) >= count:
            return running
        time.sleep(0.5)
    raise AssertionError(f"fewer than {count} runs got through an epoch in {timeout} s")


SLOW = ["trainer.epochs=4", "trainer.batch_size=4"]  # ~400 steps an epoch: seconds per epoch


@pytest.mark.slow
def test_a_killed_worker_costs_its_run_only_and_a_new_worker_takes_the_rest_of_the_queue(tmp_path):
    results = tmp_path / "results"
    sweep = [*PARALLEL, "optimizer=adamw", "seed=0,1,2,3", "data.image_size=16", *SLOW]
    proc = _start(tmp_path, results, *sweep)
    victim = _wait_for_training(results, 1)[0]
    os.kill(victim["owner"]["pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err[-2000:]
    assert "3 done, 1 interrupted" in out and "INTERRUPTED" in err and "the same command resumes it" in err
    assert f"its worker process (pid {victim['owner']['pid']}) died" in err
    infos = _infos(results)
    workers = {i["owner"]["pid"] for i in infos if i["status"] == "done"}
    assert victim["owner"]["pid"] not in workers and len(workers) == 2  # the survivor and its replacement
    # a worker runs job after job: 4 runs came from 3 processes, not 4
    assert len({i["owner"]["pid"] for i in infos}) == 3
    status = subprocess.run(
        [sys.executable, "-m", "runners.status", str(results)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert "1 interrupted" in status.stdout
    again = _run(tmp_path, results, *sweep)
    assert again.returncode == 0 and "1 done, 3 skipped" in again.stdout


@pytest.mark.slow
def test_a_second_launch_trains_nothing_twice_and_ctrl_c_stops_every_run_with_one_line(tmp_path):
    results = tmp_path / "results"
    # 200 epochs: the runs outlive every launch below, which each end by Ctrl-C
    sweep = [*PARALLEL, "optimizer=adamw,lion", "seed=0", "data.image_size=16", "trainer.epochs=200", *SLOW[1:]]
    first = _start(tmp_path, results, *sweep)
    _wait_for_training(results, 2)
    second = _run(tmp_path, results, *sweep)  # while both runs train in the first launch
    assert second.returncode == 0 and "2 running elsewhere" in second.stdout
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("interrupted: 2 running run(s) stopped")
    stopped = {i["run_dir"]: (i["epochs_done"], i["owner"]["pid"]) for i in _infos(results)}
    assert [i["status"] for i in _infos(results)] == ["running", "running"]  # their owners gone: interrupted
    assert len(list(results.rglob("checkpoint.pt"))) == 2  # each stopped at its last finished epoch
    third = _start(tmp_path, results, *sweep)  # the same command resumes them
    deadline, lines = time.monotonic() + 120, []
    while len(lines) < 2 and time.monotonic() < deadline:  # each job's log (python -u) says where it resumed
        time.sleep(0.5)
        logs = (results / ".hydra").rglob(".workers/worker*.log")
        lines = [line for log in logs for line in log.read_text().splitlines() if line.startswith("resuming ")]
    third.send_signal(signal.SIGINT)
    assert third.wait(timeout=120) == 130
    for info in _infos(results):  # taken over from the dead owner, continued from its checkpoint
        done, dead = stopped[info["run_dir"]]
        assert info["took_over_from"]["pid"] == dead != info["owner"]["pid"]
        at = [int(line.rsplit("at epoch ", 1)[1].split("/")[0]) for line in lines if info["run_dir"] in line]
        # its last checkpoint's epoch + 1 (a kill between run.json's and the checkpoint's write: one less)
        assert len(at) == 1 and 2 <= at[0] and done <= at[0] <= done + 1, lines


@pytest.mark.slow
def test_a_tracker_failure_and_the_command_survive_the_parallel_launcher(tmp_path):
    """A tracker's failure in a worker reaches the sweep summary and runners.status, not only a worker's
    log; the report's command re-runs the sweep under the same launcher with nothing stale."""
    results = tmp_path / "results"
    sweep = [*PARALLEL, "+logger.flaky._target_=tests.plugin_trackers.FailsOnFirstLog", "seed=0,1"]
    first = _run(tmp_path, results, *sweep, "data.image_size=8", "trainer.epochs=1", "trainer.progress=off")
    assert first.returncode == 0 and "2 done" in first.stdout, first.stderr[-2000:]
    summary = [ln for ln in first.stderr.splitlines() if "WARNING logger flaky failed" in ln]
    assert len(summary) == 1 and "in 2 run(s)" in summary[0] and "went away" in summary[0]
    status = subprocess.run(
        [sys.executable, "-m", "runners.status", str(results)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert status.stdout.count("logger flaky failed") == 2 and "warnings the runs recorded" in status.stdout
    command = json.loads((results / "report" / "summary.json").read_text())["command"]
    assert f": {command}\n" in status.stdout  # runners.status shows the same command
    assert command.startswith("python run.py -m hydra/launcher=parallel hydra.launcher.workers=2"), command
    args = shlex.split(command)[2:]  # after "python run.py"
    again = subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0 and "2 skipped" in again.stdout and "stale" not in again.stdout, again.stdout


@pytest.mark.slow
def test_workers_that_cannot_start_are_one_line_and_nothing_runs(tmp_path):
    (tmp_path / "not-a-folder").write_text("")
    proc = _run(tmp_path, tmp_path / "results", *PARALLEL, f"hydra.launcher.log_dir={tmp_path / 'not-a-folder'}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "error: the parallel launcher's workers did not start" in proc.stderr.strip().splitlines()[-1]
    assert not list((tmp_path / "results").rglob("run.json"))


@pytest.mark.parametrize(
    "threads, per_gpu, gpus, cores, want", [(1, 1, 0, 2, 2), (2, 1, 0, 16, 8), (4, 1, 0, 2, 1), (1, 4, 2, 16, 8)]
)
def test_the_default_worker_count(threads, per_gpu, gpus, cores, want):
    assert default_workers(threads, per_gpu, gpus, cores) == want
