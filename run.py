"""Benchmark entry point (Hydra).

    python run.py                                              # thermolion on digits, rigorous
    python run.py -m optimizer=thermolion,adamw,lion dataset=mnist,fashionmnist seed=0,1,2
    python run.py -m +experiment=paper_table                   # 12 datasets x 9 optimizers
    python run.py protocol=paper dataset=mnist optimizer=adamw optimizer.lr=0.01

This file is the configuration boundary: the Hydra config becomes a plain ``RunConfig`` here and
nothing below imports Hydra.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# The harness runs from the checkout (only `thermolion` is installed): job processes that Slurm or
# submitit start elsewhere find runners/, models/ and the launcher plugin through PYTHONPATH.
_ROOT = str(Path(__file__).resolve().parent)
if _ROOT not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)


def _start_workers_early(argv: list[str]) -> None:
    """The parallel launcher's workers fork from a server that imports torch and the harness (seconds):
    start it first thing, so that it imports while this process imports Hydra and checks the command."""
    sweep = "-m" in argv or "--multirun" in argv
    spawn = any(a.startswith("hydra.launcher.start_method=") for a in argv)
    if sweep and "hydra/launcher=parallel" in argv and not spawn:
        from runners.sweep.pool import start_forkserver

        start_forkserver()


if __name__ == "__main__":
    _start_workers_early(sys.argv[1:])

import hydra  # noqa: E402 - PYTHONPATH is set first, for the job processes
from hydra.core.hydra_config import HydraConfig  # noqa: E402 - PYTHONPATH is set first, for the job processes
from hydra.types import RunMode  # noqa: E402 - PYTHONPATH is set first, for the job processes
from omegaconf import DictConfig, OmegaConf  # noqa: E402 - PYTHONPATH is set first, for the job processes


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> str:
    from runners.config import ConfigError, RunConfig
    from runners.sweep.hydra_glue import record_status
    from runners.sweep.job import RunResult, train

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        result = train(RunConfig.from_dict(OmegaConf.to_container(cfg, resolve=True)))
    except ConfigError as err:
        result = RunResult(run_dir=hc.runtime.output_dir, status="failed", error=f"invalid config: {err}")
    if multirun:
        print(result.line(), flush=True)
        record_status(
            hc.sweep.dir,
            hc.job.num,
            {
                "status": result.status,
                "run_dir": str(result.run_dir),
                "error": result.error,
                "final": result.final,
                "warnings": result.warnings,
            },
        )
    elif result.status == "failed":  # one line naming the culprit, no traceback
        print(f"error: {result.error}", file=sys.stderr, flush=True)
        sys.exit(1)
    else:
        print(result.line(), flush=True)
        if result.status in ("done", "diverged"):
            print(
                f"one run writes no report; tables and figures of every run in {cfg.results_dir}: "
                f"python -m runners.report {cfg.results_dir} (or make a sweep with python run.py -m ...)",
                flush=True,
            )
    return result.status


def _check_results_dir(argv: list[str]) -> None:
    """Hydra writes its own folders under results_dir before the app starts: check it first, creating
    nothing (a refused command leaves no folder behind): the folder, or its nearest existing parent,
    must be a writable folder."""
    given = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("results_dir=")]
    if not given or "," in given[-1]:
        return
    path = os.path.abspath(given[-1])
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        sys.exit(f"error: results_dir={given[-1]} cannot be created: {existing} is a file; choose a writable folder")
    try:  # a real probe: root passes os.access everywhere, and sysfs or a read-only mount still refuse
        os.rmdir(tempfile.mkdtemp(prefix=".write-test-", dir=existing))
    except OSError as err:
        sys.exit(
            f"error: results_dir={given[-1]} cannot be written ({existing}: {err.strerror or err}); "
            "choose a writable folder"
        )


def _check_runs(argv: list[str]) -> None:
    """Every run of the command (each job of a sweep) checked before Hydra creates any folder."""
    from runners.sweep.precheck import check_command

    error = check_command(argv)
    if error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    _check_results_dir(sys.argv[1:])
    _check_runs(sys.argv[1:])
    try:
        main()
    except BrokenPipeError:  # `python run.py --help | head`: the reader left; end quietly (Python's docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:  # one line, not Hydra's traceback: the runs keep their checkpoints
        print(
            "\ninterrupted: the run in progress keeps its last epoch's checkpoint; the same command resumes it "
            "(finished runs are skipped)",
            file=sys.stderr,
        )
        sys.exit(130)
