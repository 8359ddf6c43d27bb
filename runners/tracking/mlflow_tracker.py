"""MLflow through ``MlflowClient`` (no fluent active-run state, so in-process multirun jobs never log
into each other's runs): one run per run folder, one experiment per results folder, a SQLite store
by default."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from .base import Points, RunMeta, Tracker

__all__ = ["MLflowTracker", "store_lock"]

_BATCH = 1000  # MLflow's limit of metrics in one log_batch call (100 for params)
_STATUS = {"done": "FINISHED", "diverged": "FINISHED", "failed": "FAILED", "killed": "KILLED"}


@contextlib.contextmanager
def store_lock(uri: str):
    """Runs side by side (the parallel launcher, Slurm array tasks on one node) take turns at a SQLite
    store: its schema is created once and no writer meets 'database is locked'. Other stores: no lock."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri[len("sqlite:///") :] + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


# A server that goes down mid-sweep costs a run at most ~35 s, not MLflow's default 7 retries with
# doubling waits (~4.5 min): set only where the user has not set them.
_HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


@functools.cache
def unreachable(uri: str, timeout_s: float = 3.0) -> Optional[str]:
    """Why an http(s) tracking server gives no HTTP answer within ``timeout_s`` (None: it answers, with
    any status). Asked once per URI and process: a sweep's jobs share the answer. An HTTP request, not a
    TCP connect: a server that accepts connections and never replies would stall every run."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            return None
    except urllib.error.HTTPError:  # it answered (404 from a proxy, 401 from an auth layer): reachable
        return None
    except (OSError, ValueError) as err:  # refused, timed out, no such host, a malformed URI
        reason = getattr(err, "reason", err)
        return f"{type(reason).__name__}: {reason}"


class MLflowTracker(Tracker):
    packages = ("mlflow",)

    @classmethod
    def check(cls, settings: dict) -> None:
        uri = settings.get("tracking_uri")
        if not uri:
            return  # the default: a SQLite file in the results folder
        uri = str(uri)
        if uri.startswith(("http://", "https://")):
            why = unreachable(uri)
            if why is not None:
                raise ValueError(
                    f"the MLflow tracking server at {uri} does not answer ({why}); start it, point "
                    "logger.mlflow.tracking_uri (or MLFLOW_TRACKING_URI) at one that answers, or drop logger=mlflow"
                )
        elif uri.startswith("sqlite:///"):
            folder = Path(uri[len("sqlite:///") :]).parent
            if not folder.is_dir():
                raise ValueError(
                    f"tracking_uri={uri}: the folder {folder} does not exist; create it, or leave tracking_uri "
                    "unset for <results_dir>/mlflow.db"
                )

    def __init__(self, tracking_uri: Optional[str] = None, experiment: Optional[str] = None) -> None:
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.client = self.run_id = None

    def start(self, run: RunMeta, resume: Optional[dict], logged_step: int) -> dict:
        from mlflow import MlflowClient
        from mlflow.entities import Param, RunTag

        # As results_dir is given (relative to the working directory, as the run folders are): run.json
        # and a committed results folder name no machine's absolute path.
        self.uri = self.tracking_uri or f"sqlite:///{(run.results_dir / 'mlflow.db').as_posix()}"
        if self.uri.startswith(("http://", "https://")):
            for key, value in _HTTP_BOUNDS.items():
                os.environ.setdefault(key, value)
            logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # its "Retrying" lines
        name = self.experiment or run.results_dir.resolve().name
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # its schema notes, each run
        with store_lock(self.uri):
            self.client = MlflowClient(self.uri)
            found = self.client.get_experiment_by_name(name)
            if found:
                experiment_id = found.experiment_id
            else:  # a store of ours keeps its artifacts beside it, not in <cwd>/mlruns (a server decides its own)
                local = self.tracking_uri is None
                artifacts = (run.results_dir / "mlartifacts").resolve().as_uri() if local else None
                experiment_id = self.client.create_experiment(name, artifact_location=artifacts)
            if resume is not None:
                self.run_id = resume["run_id"]
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                self.run_id = self.client.create_run(experiment_id, run_name=run.key).info.run_id
                params = [Param(k, str(v)[:6000]) for k, v in run.params.items()]
                tags = [RunTag(k, str(v)) for k, v in run.tags.items()]
                for i in range(0, max(len(params), len(tags)), 100):
                    self.client.log_batch(self.run_id, params=params[i : i + 100], tags=tags[i : i + 100])
        return {"run_id": self.run_id, "experiment_id": experiment_id, "tracking_uri": self.uri}

    def log(self, points: Points) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for step, values in points for k, v in values.items()]
        with store_lock(self.uri):
            for i in range(0, len(metrics), _BATCH):
                self.client.log_batch(self.run_id, metrics=metrics[i : i + _BATCH])

    def supersede(self, earlier: dict) -> None:
        """One MLflow run per run folder: the earlier attempt's run (same store) is soft-deleted, which
        hides it from the UI and from searches (``mlflow runs restore`` brings it back), and this run's
        ``supersedes`` tag names it."""
        if earlier.get("tracking_uri") != self.uri or not earlier.get("run_id"):
            return
        with store_lock(self.uri):
            try:
                old = self.client.get_run(earlier["run_id"])
            except Exception:  # noqa: BLE001 - deleted by hand, or another store: nothing to mark
                return
            if old.info.status == "RUNNING":  # killed without a word (SIGKILL): it did not finish
                self.client.set_terminated(earlier["run_id"], "KILLED")
            self.client.delete_run(earlier["run_id"])
            self.client.set_tag(self.run_id, "supersedes", earlier["run_id"])

    def finish(self, status: str, final: dict[str, float], step: int) -> None:
        if self.client is None:
            return
        if final:
            self.log([(step, {f"final/{k}": v for k, v in final.items()})])
        with store_lock(self.uri):
            self.client.set_tag(self.run_id, "status", status)
            self.client.set_terminated(self.run_id, _STATUS.get(status, "FINISHED"))
        self.client = None
