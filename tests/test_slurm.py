"""Sweeps through hydra-submitit-launcher: a real local Slurm (make test-slurm) and submitit_local."""

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.image_size=16", "trainer.progress=off", "trainer.deterministic=true"]
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
TIMING = {"epoch_time_s", "train_time_s", "step_time_ms"}


def sweep(*args, results, popen=False, env=None):
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    cmd = [sys.executable, "run.py", "-m", *flags, f"results_dir={results}", *overrides]
    kw = dict(cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    return subprocess.Popen(cmd, **kw) if popen else subprocess.run(cmd, timeout=900, **kw)


def metrics(run_dir: Path) -> list[dict]:
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def slurm_cluster():
    """The local single-node Slurm of scripts/slurm_local.sh (started here if it is not running)."""
    if shutil.which("sbatch") is None and os.geteuid() != 0:
        pytest.skip("Slurm is not installed and we cannot install it (not root)")
    out = subprocess.run(
        ["bash", "scripts/slurm_local.sh", "start"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        pytest.fail(f"could not start the local Slurm:\n{out.stderr}")
    exports = dict(kv.split("=", 1) for kv in out.stdout.strip().removeprefix("export ").split())
    old = {k: os.environ.get(k) for k in exports}
    os.environ.update(exports)  # SLURM_CONF, and PATH with the local sacct stand-in first
    yield exports["SLURM_CONF"]
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.slurm
def test_slurm_sweep_completes_every_run_and_writes_the_report(slurm_cluster, tmp_path):
    proc = sweep(*SLURM, "optimizer=thermolion,adamw", "seed=0,1", "trainer.epochs=2", *TINY, results=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "submitted 4 job(s) to slurm" in proc.stdout and "4 done" in proc.stdout
    assert len(list(tmp_path.glob("rigorous/digits/*/seed*/DONE"))) == 4
    assert (tmp_path / "report" / "summary.json").exists()


@pytest.mark.slurm
def test_cancelled_task_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(slurm_cluster, tmp_path):
    args = [*SLURM, "optimizer=adamw", "seed=0,1", "trainer.epochs=60", *TINY]
    reference = sweep(*SLURM, "optimizer=adamw", "seed=0", "trainer.epochs=60", *TINY, results=tmp_path / "ref")
    assert reference.returncode == 0, reference.stderr
    results = tmp_path / "killed"
    proc = sweep(*args, results=results, popen=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # wait for a couple of checkpointed epochs, then cancel task 0
        found = list(results.glob("rigorous/digits/adamw*/seed0/metrics.csv"))
        if found and len(found[0].read_text().splitlines()) >= 3:
            run_dir = found[0].parent
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the run never reached epoch 2")
    jobs = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    task0 = next(j for j in jobs if j.endswith("_0"))
    subprocess.run(["scancel", task0], check=True)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, out + err
    assert f"FAILED job {task0}" in err and "seed=0" in err  # the failure names the run
    assert not (run_dir / "DONE").exists() and (run_dir / "checkpoint.pt").exists()
    done_before = len(metrics(run_dir))
    assert 2 <= done_before < 60

    again = sweep(*args, results=results)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 done, 1 skipped" in again.stdout
    assert (run_dir / "DONE").exists()
    ref_dir = next((tmp_path / "ref").glob("rigorous/digits/adamw*/seed0"))
    assert metrics(run_dir) == metrics(ref_dir)
    logs = "".join(p.read_text() for p in (results / ".submitit").rglob("*_log.out"))
    assert f"resuming {run_dir}" in logs


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_same_sweep(tmp_path):
    proc = sweep(
        "hydra/launcher=local", "optimizer=adamw,lion", "seed=0,1", "trainer.epochs=2", *TINY, results=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "submitted 4 job(s) to local" in proc.stdout
    assert len(list(tmp_path.glob("rigorous/digits/*/seed*/DONE"))) == 4


@pytest.mark.slow
def test_slurm_without_sbatch_says_how_to_install_or_switch(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = sweep("hydra/launcher=slurm", "optimizer=adamw", results=tmp_path, env={"PATH": str(empty)})
    assert proc.returncode == 2
    assert "`sbatch` is not on PATH" in proc.stderr and "apt-get install slurm-wlm munge" in proc.stderr
    assert "hydra/launcher=local" in proc.stderr and "Traceback" not in proc.stderr
