"""Launchers for `hydra/launcher=slurm` and `hydra/launcher=local` (conf/hydra/launcher/).

Hydra loads launchers only from the ``hydra_plugins`` namespace, hence this package. They are
hydra-submitit-launcher's, collecting every job's outcome instead of stopping at the first job
Slurm killed (cancelled, out of memory, node failure, timeouts used up): such a job becomes a
failed status record naming its overrides, so the sweep summary lists it and exits 1.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from runners.sweep.hydra_glue import job_status, record_status
from runners.sweep.progress import SweepProgress, show_progress


class _Collecting:
    """The plugin's launch with per-job outcome collection."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit  # lazy, as in the plugin

        # As the plugin's launch (1.2.0), up to collecting the results.
        init_keys = {"max_num_timeout", "submitit_folder"}
        extra = (
            {f"{self._EXECUTOR}_max_num_timeout": self.params["max_num_timeout"]}
            if "max_num_timeout" in self.params
            else {}
        )
        try:
            executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=self.params["submitit_folder"], **extra)
        except RuntimeError as err:  # "Could not detect srun": not on a Slurm node
            sys.exit(f"error: {err}; run the sweep on a Slurm login node, or pick hydra/launcher=local or parallel")
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in self.params.items() if k not in init_keys}
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params: list = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            print(f"[submitit] #{idx} : {' '.join(filter_overrides(overrides))}", flush=True)
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = _submit(executor, self, job_params, self._EXECUTOR)
        print(
            f"[submitit] submitted {len(jobs)} job(s) to {self._EXECUTOR}: {', '.join(j.job_id for j in jobs)}",
            flush=True,
        )
        returns = []
        progress = SweepProgress(len(jobs), show_progress(str(self.config.trainer.get("progress", "auto"))))
        started = time.monotonic()
        for i, (overrides, job) in enumerate(zip(job_overrides, jobs)):
            try:
                returns.append(job.results()[0])
                # The time between results is the sweep's throughput (jobs may run in parallel).
                progress.update(job_status(returns[-1]), time.monotonic() - started)
                started = time.monotonic()
            except Exception as err:  # noqa: BLE001 - a killed job becomes a failed record
                lines = str(err).strip().splitlines()
                record_status(
                    str(sweep_dir),
                    initial_job_idx + i,
                    {
                        "status": "failed",
                        "run_dir": f"job {job.job_id} ({' '.join(filter_overrides(overrides))})",
                        "error": f"{type(err).__name__}: {lines[0] if lines else ''}",
                        "final": {},
                    },
                )
                ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
                ret.return_value = "failed"
                returns.append(ret)
                progress.update("failed", None)
        progress.close()
        return returns


def _submit(executor, function, job_params: list, cluster: str) -> list:
    """``executor.map_array``; a refused submission is one line on stderr and exit 1, not submitit's
    traceback with the scheduler's whole output (which it prints itself before raising)."""
    import submitit

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            jobs = executor.map_array(function, *zip(*job_params))
    except (submitit.core.utils.FailedJobError, OSError) as err:
        said = [ln.strip() for ln in (str(err) or captured.getvalue()).splitlines() if ln.strip()]
        reason = next((ln for ln in reversed(said) if "error" in ln.lower()), said[-1] if said else type(err).__name__)
        hint = " (check hydra.launcher.partition and the other hydra.launcher.* settings; sinfo lists partitions)"
        hint = hint if cluster == "slurm" else ""
        print(
            f"error: {cluster} refused the sweep's {len(job_params)} job(s): {reason}{hint}; nothing was started",
            file=sys.stderr,
        )
        sys.exit(1)
    sys.stderr.write(captured.getvalue())
    return jobs


class SlurmLauncher(_Collecting, submitit_launcher.SlurmLauncher):
    pass


class LocalLauncher(_Collecting, submitit_launcher.LocalLauncher):
    pass
