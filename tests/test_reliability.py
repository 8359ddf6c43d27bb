"""Run locks, stale results, progress, bad inputs and packaging."""

import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from runners import identity
from runners.config import ConfigError, RunConfig
from runners.report import build_report
from runners.sweep import job as T
from runners.sweep.lock import RunLock
from runners.sweep.progress import SweepProgress

from .test_harness import ROOT, TINY, config, run_py

RUN = ["optimizer=adamw", "seed=0", "data.image_size=16", "trainer.progress=off"]


def _race(run_dir, barrier, results):
    barrier.wait()
    lock = RunLock(run_dir)
    results.put(lock.acquire())
    time.sleep(1.0)  # hold it while the others try
    lock.release()


@pytest.mark.slow
def test_racing_processes_get_the_lock_exactly_once(tmp_path):
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(tmp_path, barrier, results)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    won = [results.get(timeout=5) for _ in procs]
    assert sorted(won) == [False] * 5 + [True]
    assert not (tmp_path / "LOCK").exists()  # released by the winner


def test_a_lock_is_stale_when_its_pid_is_gone_or_its_heartbeat_is_old(tmp_path):
    holder = RunLock(tmp_path)
    assert holder.acquire()
    assert not RunLock(tmp_path).acquire()  # a live owner on this host
    record = json.loads((tmp_path / "LOCK").read_text())
    (tmp_path / "LOCK").write_text(json.dumps({**record, "host": "elsewhere"}))
    assert not RunLock(tmp_path).acquire()  # another host, fresh heartbeat
    old = time.time() - 301
    os.utime(tmp_path / "LOCK", (old, old))
    taker = RunLock(tmp_path)
    assert taker.acquire() and taker.took_over["host"] == "elsewhere"
    holder.release()  # no longer its lock: must not remove the taker's
    assert json.loads((tmp_path / "LOCK").read_text())["token"] == taker.owner["token"]
    taker.release()


@pytest.mark.slow
def test_second_launch_of_a_running_run_reports_running_elsewhere_and_exits_0(tmp_path):
    cfg = config(tmp_path, "adamw")
    cfg.run_dir().mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; sys.path.insert(0, '.'); from runners.sweep.lock import RunLock; "
                f"RunLock({str(cfg.run_dir())!r}).acquire(); print('locked', flush=True); time.sleep(60)"
            ),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = T.train(cfg)
        assert result.status == "running elsewhere" and f"pid {holder.pid}" in result.error
        proc = run_py(
            "-m",
            "optimizer=adamw",
            "seed=0",
            "data.image_size=16",
            "trainer.epochs=2",
            "trainer.progress=off",
            "hydra.callbacks.sweep_summary.report=false",
            f"data.cache_dir={tmp_path / 'cache'}",
            results=tmp_path / "results",
        )
        assert "1 running elsewhere" in proc.stdout and "running elsewhere" in proc.stderr
        assert not (cfg.run_dir() / "DONE").exists()
    finally:
        holder.kill()
        holder.wait()
    assert T.train(cfg).status == "done"  # its owner is gone: taken over


@pytest.mark.slow
def test_kill_9_of_the_owner_then_a_relaunch_takes_over_and_resumes(tmp_path):
    args = [
        sys.executable,
        str(ROOT / "run.py"),
        f"results_dir={tmp_path}",
        *RUN,
        "trainer.epochs=12",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    run_dir = tmp_path / "rigorous" / "digits" / "adamw+image_size=16" / "seed0"
    owner = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline and owner.poll() is None:
        time.sleep(0.02)
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    assert (run_dir / "LOCK").exists() and not (run_dir / "DONE").exists()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"pid {owner.pid} (owner gone)" in proc.stdout and "resuming" in proc.stdout
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "done" and info["took_over_from"]["pid"] == owner.pid and info["epochs_done"] == 12
    assert not (run_dir / "LOCK").exists()


# ------------------------------------------------------------------ code versions
def test_code_version_covers_the_numeric_sources_only():
    names = {str(p.relative_to(ROOT)) for p in identity.code_files()}
    assert {
        "thermolion/functional.py",
        "thermolion/optimizer.py",
        "models/convnet.py",
        "models/resnet.py",
        "runners/train/loop.py",
        "runners/train/data.py",
        "runners/train/augment.py",
        "runners/train/schedules.py",
        "runners/train/settings.py",
        "runners/train/backend.py",
        "runners/train/convert.py",
    } <= names
    assert not {n for n in names if not n.startswith(identity.NUMERIC_DIRS)}


def copied_checkout(tmp_path) -> tuple:
    """(a copy of the code's folders, its code version): to edit files without touching the checkout."""
    copy = tmp_path / "checkout"
    for folder in ("thermolion", "models", "runners"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    identity.code_version.cache_clear()
    return copy, identity.code_version(root=copy)


def test_a_comment_in_any_numeric_file_changes_the_version_and_one_in_the_report_does_not(tmp_path):
    copy, base = copied_checkout(tmp_path)
    assert base == identity.code_version()  # the copy hashes as the checkout does
    numeric = identity.code_files(copy)
    assert len(numeric) >= 15
    others = sorted((copy / "runners").rglob("*.py"))
    others = [p for p in others if p not in numeric]
    assert any("report" in p.parts for p in others) and any("sweep" in p.parts for p in others)
    assert {"options.py", "datafiles.py", "timing.py", "run_folder.py"} <= {p.name for p in others}
    for path, changes in [*((p, True) for p in numeric), *((p, False) for p in others)]:
        original = path.read_text()
        path.write_text(original + "# a comment\n")
        identity.code_version.cache_clear()
        assert (identity.code_version(root=copy) != base) is changes, path.relative_to(copy)
        path.write_text(original)
    identity.code_version.cache_clear()


@pytest.mark.slow
def test_finished_runs_from_other_code_are_named_stale_and_rerun_on_request(tmp_path):
    args = [
        "-m",
        *RUN,
        "trainer.epochs=1",
        "hydra.callbacks.sweep_summary.report=false",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    run_py(*args, results=tmp_path)
    run_dir = next(tmp_path.glob("rigorous/digits/adamw*/seed0"))
    info = json.loads((run_dir / "run.json").read_text())
    current = info["code_version"]
    assert len(current) == 12
    (run_dir / "run.json").write_text(json.dumps({**info, "code_version": "0123456789ab"}))
    done_mtime = (run_dir / "DONE").stat().st_mtime_ns

    kept = run_py(*args, results=tmp_path)
    assert "1 stale" in kept.stdout and f"finished with code 0123456789ab, the code is now {current}" in kept.stderr
    assert "add rerun=stale" in kept.stderr and (run_dir / "DONE").stat().st_mtime_ns == done_mtime

    rerun = run_py(*args, "rerun=stale", results=tmp_path)
    assert "1 done" in rerun.stdout
    assert json.loads((run_dir / "run.json").read_text())["code_version"] == current
    assert "1 skipped" in run_py(*args, "rerun=stale", results=tmp_path).stdout  # now current
    assert "1 done" in run_py(*args, "rerun=all", results=tmp_path).stdout


@pytest.mark.slow
def test_report_names_code_versions_and_warns_when_a_table_mixes_them(tmp_path, capsys):
    for seed in (0, 1):
        T.train(RunConfig(**{**config(tmp_path, "adamw", epochs=1).__dict__, "seed": seed}))
    one = next((tmp_path / "results").glob("rigorous/digits/*/seed1/run.json"))
    one.write_text(json.dumps({**json.loads(one.read_text()), "code_version": "0ldc0de00000"}))
    build_report(tmp_path / "results", tmp_path / "report")
    table = next((tmp_path / "report").glob("rigorous*/table_final.md")).read_text()
    assert "`0ldc0de00000` (1 runs)" in table and "mixes runs from different code" in table
    assert "mixes code versions" in capsys.readouterr().err


# ------------------------------------------------------------------ bad inputs
def _base(tmp_path) -> dict:
    base = config(tmp_path).to_dict()
    base["dataset"] = {"name": base["data"].pop("name")}
    return base


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(seed="abc"), "seed must be an integer >= 0, got 'abc'"),
        (dict(trainer=dict(epochs=0)), "trainer.epochs must be >= 1, got 0"),
        (dict(trainer=dict(epochs="abc")), "trainer.epochs must be int, got 'abc'"),
        (dict(optimizer=dict(lr=[1])), "optimizer.lr must be a number, got [1]"),
        (dict(data=dict(image_size=30)), "data.image_size must be a multiple of 4"),
        (dict(trainer=dict(batch_size=-1)), "trainer.batch_size must be >= 1, got -1"),
        (
            dict(tuned_lrs="/nonexistent/chosen_lrs.json"),
            "tuned_lrs=/nonexistent/chosen_lrs.json: not a chosen-configuration file",
        ),
        (dict(rerun="sometimes"), "rerun must be stale, all or failed"),
        (dict(data=dict(label_noise=2)), "data.label_noise must be a share in [0, 1]"),
        (dict(data=dict(val_fraction=1.5)), "data.val_fraction must be a share in (0, 1)"),
        (dict(model=dict(width=0)), "model.width must be an integer >= 1, got 0"),
        (dict(optimizer=dict(betas=0.9)), "optimizer.betas must be a pair [beta1, beta2]"),
        (dict(trainer=dict(device="tpu")), "trainer.device must be auto, cpu or cuda[:N]"),
        # digits: 1438 training images at batch 128 -> 12 steps per epoch, 24 in 2 epochs
        (
            dict(trainer=dict(schedule="warmup_cosine", warmup_steps=24)),
            "trainer.warmup_steps=24 is not shorter than the run: digits under protocol=rigorous takes about 24",
        ),
        (dict(trial=1), "trial=1 under protocol=rigorous would choose hyperparameters on the test split"),
    ],
)
def test_bad_config_values_are_one_clear_config_error(tmp_path, change, message):
    cfg = _base(tmp_path)
    for key, value in change.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


# Bad inputs and the culprit each one's single error line names (run.py's checks before Hydra starts).
BAD_INPUTS = [
    (["seed=abc"], "seed must be an integer"),
    (["data.label_noise=2"], "data.label_noise must be a share in [0, 1]"),
    (["optimizer.betas=0.9"], "optimizer.betas must be a pair"),
    (["trainer.device=cuda"], "trainer.device=cuda but this machine has no usable CUDA device"),
    (["results_dir=/sys/thermolion-results"], "results_dir=/sys/thermolion-results cannot be written"),
    (
        ["dataset=cifar10", "data.download=false", "data.root={tmp}/empty"],
        "dataset cifar10 (train split) is not in",
    ),
    (["data.eval_split=banana"], "data.eval_split must be one of train, test, val"),
    (["data.train_subset=-5"], "data.train_subset must be >= 1"),
    (["data.train_subset=100000"], "data.train_subset=100000 is larger than digits's training split (1438"),
    (["trainer.amp=true", "trainer.device=cpu"], "trainer.amp=true trains in bf16 autocast, which is for GPUs"),
    (
        ["optimizer=custom", "optimizer._target_=torch.optim.SGD", "optimizer.lr=0.1", "optimizer.name=bad/name"],
        "optimizer.name must be one folder name",
    ),
    (
        ["optimizer=custom", "optimizer.lr=0.1", "trial=1", "protocol=tuned"],
        "this plug-in optimizer has no declared search space; pass one with search_space=",
    ),
    (
        ["-m", "trial=range(0,2)", "protocol=tuned", "optimizer=muadam"],
        "trial=1 protocol=tuned optimizer=muadam",
    ),
]


@pytest.mark.parametrize("args, culprit", [c for c in BAD_INPUTS if not c[1].startswith("results_dir")])
def test_bad_inputs_are_refused_by_the_command_check_in_one_line(tmp_path, args, culprit):
    """The fast tier's twin of the end-to-end test below: the same inputs through the same check, in-process."""
    from runners.sweep.precheck import check_command

    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    error = check_command([*args, f"results_dir={tmp_path / 'r'}", f"data.cache_dir={tmp_path / 'cache'}"])
    assert error is not None and culprit in error and "\n" not in error
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, culprit", BAD_INPUTS)
@pytest.mark.slow
def test_bad_inputs_exit_nonzero_with_one_line_and_no_traceback(tmp_path, args, culprit):
    if culprit.startswith("results_dir") and os.access("/sys", os.W_OK) and not Path("/sys").is_mount():
        pytest.skip("/sys is writable here: no read-only path to test with")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    flags = [a for a in args if a.startswith("-")]
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            *flags,
            f"results_dir={tmp_path / 'r'}",
            *(a for a in args if not a.startswith("-")),
            "trainer.progress=off",
            f"data.cache_dir={tmp_path / 'cache'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and culprit in lines[0] and "Traceback" not in proc.stderr
    if "-m" in flags:  # the whole sweep is checked before its first run: job 0 was valid, and never trained
        assert "invalid config in job 1 of 2 (" in lines[0] and "no run of this sweep was started" in lines[0]
    # Refused before Hydra starts: no run folder, no failed record, not even Hydra's .hydra/runs/<time>.
    left = (
        sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "r").rglob("*")) if (tmp_path / "r").exists() else []
    )
    assert left == [], left


@pytest.mark.slow
def test_a_truncated_metrics_csv_is_listed_as_excluded_and_the_report_is_still_written(tmp_path):
    for seed in (0, 1):
        T.train(RunConfig(**{**config(tmp_path, "adamw").__dict__, "seed": seed}))
    metrics = next((tmp_path / "results").glob("rigorous/digits/*/seed1/metrics.csv"))
    text = metrics.read_text()
    metrics.write_text(text[: len(text) - 40])  # cut inside the last row
    summary = build_report(tmp_path / "results", tmp_path / "report")
    assert summary["complete_runs"] == 1
    assert [e["status"] for e in summary["excluded"]] == ["unreadable"]
    assert "metrics.csv truncated" in summary["excluded"][0]["reason"]
    assert "metrics.csv truncated" in (tmp_path / "report" / "README.md").read_text()


# ------------------------------------------------------------------ progress
def test_sweep_progress_counts_statuses_and_estimates_from_trained_runs_only():
    progress = SweepProgress(total=5, enabled=False)
    progress.update("skipped", 0.01)
    assert progress.eta_seconds() is None  # nothing trained yet
    progress.update("done", 10.0)
    progress.update("failed", 20.0)
    assert progress.eta_seconds() == pytest.approx(2 * 15.0)  # 2 runs left x mean of trained runs
    assert progress.text().startswith("1 done, 1 failed, 1 skipped, ETA 00:00:30")


@pytest.mark.slow
def test_multirun_draws_a_sweep_bar_on_request(tmp_path):
    proc = run_py(
        "-m",
        "optimizer=adamw,lion",
        "seed=0",
        *TINY[:2],
        "trainer.progress=on",
        "hydra.callbacks.sweep_summary.report=false",
        f"data.cache_dir={tmp_path / 'cache'}",
        results=tmp_path,
    )
    assert "sweep 2/2 runs" in proc.stderr and "2 done, 0 failed" in proc.stderr
    assert "step/s" in proc.stderr or "steps/s" in proc.stderr or "s/step" in proc.stderr  # the per-run bar


# ------------------------------------------------------------------ packaging
@pytest.mark.slow
def test_the_wheel_holds_only_thermolion_and_builds_without_deprecation_warnings(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0 and "No matching distribution" in proc.stderr + proc.stdout:
        pytest.skip("no package index reachable to build the wheel with")
    assert proc.returncode == 0, proc.stderr
    assert "deprecated" not in (proc.stdout + proc.stderr).lower()
    wheel = next(tmp_path.glob("thermolion-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"thermolion"}


def test_job_status_never_re_raises_a_failed_jobs_exception():
    from hydra.core.utils import JobReturn, JobStatus

    from runners.sweep.hydra_glue import job_status

    ok = JobReturn(status=JobStatus.COMPLETED)
    ok.return_value = "running elsewhere"
    failed = JobReturn(status=JobStatus.FAILED)
    failed._return_value = RuntimeError("boom")  # reading return_value would raise it
    assert job_status(ok) == "running elsewhere" and job_status(failed) == "failed"


def test_a_done_run_with_a_truncated_metrics_csv_is_run_again_not_skipped(tmp_path):
    cfg = config(tmp_path, "adamw")
    first = T.train(cfg)
    metrics = first.run_dir / "metrics.csv"
    whole = metrics.read_text()
    metrics.write_text(whole[: len(whole) - 40])
    again = T.train(cfg)
    assert again.status == "done" and len(metrics.read_text().splitlines()) == 3  # header + 2 whole epochs
    assert T.train(cfg).status == "skipped"  # whole again: now it is complete


def test_rerun_failed_retries_failed_runs_only_and_clean_removes_failed_folders(tmp_path, monkeypatch):
    ok, bad = config(tmp_path, "adamw"), config(tmp_path, "lion")
    assert T.train(ok).status == "done"
    from runners.train import loop as L

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(L, "prepare", broken)
    assert T.train(bad).status == "failed"
    never = config(tmp_path, "rmsprop")
    rerun = [RunConfig(**{**c.__dict__, "rerun": "failed"}) for c in (ok, bad, never)]
    results = [T.train(c) for c in rerun]
    assert [r.status for r in results] == ["skipped", "failed", "skipped"]  # only the failed one ran again
    assert "retries failed runs only" in results[2].error and not never.run_dir().exists()
    monkeypatch.undo()

    dry = subprocess.run(
        [sys.executable, "-m", "runners.sweep.clean", str(tmp_path / "results"), "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 0 and "would remove" in dry.stdout and bad.run_dir().exists()
    proc = subprocess.run(
        [sys.executable, "-m", "runners.sweep.clean", str(tmp_path / "results")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "1 failed run folder(s) removed" in proc.stdout and "disk on fire" in proc.stdout
    assert not bad.run_dir().exists() and (ok.run_dir() / "DONE").exists()


def test_a_dead_pid_frees_a_lock_only_where_pids_mean_the_same_process(tmp_path):
    """Host names repeat across containers and nodes; a PID is judged dead only in the owner's own machine,
    boot and PID namespace (outcomes.machine_id), else the heartbeat decides."""
    from runners.outcomes import machine_id

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"host": platform.node(), "pid": dead.pid, "token": "t", "since": "x"}
    (tmp_path / "LOCK").write_text(json.dumps({**record, "machine": "other-machine:other-boot:4026531836"}))
    assert not RunLock(tmp_path).acquire()  # our host name, a PID dead here, but another machine: alive
    (tmp_path / "LOCK").write_text(json.dumps(record))  # a record from before machine ids: heartbeat only
    assert not RunLock(tmp_path).acquire()
    (tmp_path / "LOCK").write_text(json.dumps({**record, "machine": machine_id()}))
    if machine_id() is None:
        pytest.skip("this OS tells no machine/boot id: only heartbeats decide here")
    taker = RunLock(tmp_path)
    assert taker.acquire() and taker.took_over["pid"] == dead.pid
    taker.release()
