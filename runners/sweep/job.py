"""One run as a job: own its folder, skip or resume it, train it, and write its files.

A run writes, under its own folder, ``metrics.csv`` (a row per epoch), ``run.json`` (config,
identity, status, final metrics, environment), ``DONE`` last, and while it runs a per-epoch
``checkpoint.pt`` from which a killed run resumes; the format is ``runners.run_folder``'s. A
finished run is reused only when its identity (settings, code, package versions, the data's content,
device type, and the machine under ``exact_machine``: ``runners.identity``) is the current one.
The numbers come from ``runners.train``; this module only decides whether to train and keeps files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from .. import run_folder as rf
from ..atomic import torch_save
from ..config import RunConfig
from ..datafiles import data_digest
from ..identity import code_version, stale_reasons
from ..outcomes import recorded_warnings
from ..tracking import Trackers, epoch_points
from ..tracking.base import run_meta
from ..tracking.points import history_points, metric_name
from ..train import loop
from ..train.backend import backend_settings, prepare_deterministic
from ..train.build import keep_freed_memory, pick_device
from .lock import LockLost, RunLock
from .progress import show_progress
from .provenance import environment, machine

__all__ = ["RunResult", "train", "save_checkpoint"]


@dataclass
class RunResult:
    run_dir: Path
    status: str  # done | diverged | failed | skipped | stale | running elsewhere | taken over
    final: dict = field(default_factory=dict)
    error: Optional[str] = None
    warnings: list[str] = field(default_factory=list)  # what the sweep summary names (a tracker's failure)

    def line(self) -> str:
        parts = [f"{self.status:8s}", str(self.run_dir)]
        if "eval_acc" in self.final:
            parts.append(f"eval_acc {self.final['eval_acc']:.2f}%  train_loss {self.final['train_loss']:.4f}")
        if self.error:
            parts.append(self.error)
        return "  ".join(parts)


def train(cfg: RunConfig) -> RunResult:
    """Run one configuration to completion (or resume it); failures become a status, not a crash.

    Statuses: done, diverged, failed; skipped (finished before, same code), stale (finished with
    other code, kept unless ``rerun`` is stale or all), running elsewhere (another live process
    holds the run's lock).
    """
    if cfg.threads is not None:  # for this run only: an in-process sweep's next job gets the default back
        before = torch.get_num_threads()
        torch.set_num_threads(cfg.threads)
        try:
            return _train_run(cfg)
        finally:
            torch.set_num_threads(before)
    return _train_run(cfg)


def _train_run(cfg: RunConfig) -> RunResult:
    run_dir = cfg.run_dir()
    version, packages = code_version(), cfg.packages()
    device = pick_device(cfg.trainer.device)
    prepare_deterministic(cfg.trainer)  # before CUDA initialises, before any run builds
    if cfg.rerun == "failed" and rf.recorded_status(run_dir) != "failed":
        return RunResult(run_dir, "skipped", error="not a failed run (rerun=failed retries failed runs only)")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return RunResult(
            run_dir,
            "failed",
            error=f"cannot create the run folder under results_dir="
            f"{cfg.results_dir} ({err.strerror or err}); choose a writable results_dir",
        )
    lock = RunLock(run_dir)
    if not lock.acquire():
        holder = lock.holder() or {}
        return RunResult(
            run_dir,
            "running elsewhere",
            error=f"locked by {holder.get('host')} pid {holder.get('pid')} "
            f"(heartbeat {holder.get('age_s', 0):.0f} s ago)",
        )
    try:
        finished = _finished_result(cfg, run_dir, version, packages, device)
        if finished is not None:
            return finished
        previous_trackers = _recorded_trackers(run_dir)  # an interrupted attempt's, continued on resume
        info = {
            "config": cfg.to_dict(),
            "fingerprint": cfg.fingerprint(),
            "labels": cfg.labels(),  # how tables name it: readers take these, never the folder's name
            "code_version": version,
            "packages": packages,
            "seed": cfg.seed,
            "status": "running",
            "run_dir": str(run_dir),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "started_at": time.time(),  # seconds since the epoch: runs side by side are compared by these
            "owner": {k: lock.owner[k] for k in ("host", "pid", "since")},
            "epochs_done": 0,
        }
        if lock.took_over:
            info["took_over_from"] = {k: lock.took_over.get(k) for k in ("host", "pid", "since")}
            print(
                f"took over {run_dir} from {lock.took_over.get('host')} pid {lock.took_over.get('pid')} (owner gone)",
                flush=True,
            )
        # On disk from its first second, replacing any older record (rerun=all, stale, failed): a run
        # killed from here on reads as interrupted (runners.outcomes), never as its old numbers.
        rf.write_info(run_dir, info)
        if device.type == "cpu":
            keep_freed_memory()
        try:
            info["environment"] = environment(device)
            with backend_settings(cfg.trainer, device) as settings:
                info["environment"].update(settings)
                return _train(cfg, run_dir, device, info, lock, previous_trackers)
        except LockLost as err:  # another process owns the folder now: write nothing more
            return RunResult(run_dir, "taken over", error=str(err))
        except Exception as err:  # noqa: BLE001 - a failed run must not stop the sweep
            info.update(status="failed", error=f"{type(err).__name__}: {err}")
            if lock.held():
                rf.write_info(run_dir, info)
            return RunResult(run_dir, "failed", error=info["error"])
    finally:
        lock.release()


def _recorded_trackers(run_dir: Path) -> Optional[dict]:
    try:
        return (rf.read_info(run_dir) or {}).get("trackers")
    except rf.UnreadableRecord:
        return None


def _finished_result(
    cfg: RunConfig, run_dir: Path, version: str, packages: dict, device: torch.device
) -> Optional[RunResult]:
    """The result of an already finished run, or None when it is to be (re-)run now."""
    if not rf.is_done(run_dir):
        return None
    try:
        recorded = rf.read_info(run_dir) or {}
    except rf.UnreadableRecord:
        recorded = {"code_version": "unreadable"}
    stored = recorded.get("config", {}).get("optimizer")
    if cfg.optimizer.target and stored is not None and stored != cfg.to_dict()["optimizer"]:
        return RunResult(
            run_dir,
            "failed",
            error=f"this folder holds plug-in {cfg.optimizer.name!r} with other "
            f"settings ({stored}); give this one another optimizer.name",
        )
    same_definition = recorded.get("schema") == rf.SCHEMA and recorded.get("code_version") == version
    if same_definition and recorded.get("fingerprint") not in (None, cfg.fingerprint()):
        return RunResult(
            run_dir,
            "failed",
            error=f"this folder holds a finished run with other settings (fingerprint {recorded['fingerprint']}, "
            f"this configuration's is {cfg.fingerprint()}); give it another results_dir",
        )
    if not rf.metrics_complete(run_dir, recorded):
        print(f"{run_dir}: DONE but metrics.csv is truncated or unreadable: running it again", flush=True)
        rf.unmark_done(run_dir)
        return None
    reasons = stale_reasons(
        recorded, version, device.type, packages, machine(device), data_digest(cfg.data), cfg.exact_machine
    )
    if cfg.rerun == "all" or (cfg.rerun == "stale" and reasons):
        rf.unmark_done(run_dir)  # a rerun killed midway must not look finished
        return None
    if reasons:
        return RunResult(run_dir, "stale", error=f"finished with {'; '.join(reasons)}; kept (rerun=stale re-runs it)")
    return RunResult(run_dir, "skipped", error="already complete (DONE exists)")


def _load_checkpoint(path: Path, cfg: RunConfig, info: dict) -> Optional[dict]:
    """A killed run's checkpoint, or None; one written by other code or packages is discarded, not mixed in."""
    if not path.exists():
        return None
    # On the CPU: RNG and generator states must stay CPU byte tensors (set_rng_state, Generator.set_state);
    # load_state_dict moves weights and optimizer state to the parameters' device itself.
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    env = info["environment"]
    reasons = stale_reasons(
        ckpt, info["code_version"], env["device_type"], info["packages"], env, info.get("data_sha"), cfg.exact_machine
    )
    if reasons:
        print(
            f"{path.parent}: its checkpoint was written with {'; '.join(reasons)}: starting over rather than "
            "mixing the two",
            flush=True,
        )
        path.unlink()
        return None
    if ckpt.get("fingerprint") != cfg.fingerprint():  # same code, other settings: never mix them
        raise RuntimeError(f"{path} belongs to a different configuration; delete it to start over")
    return ckpt


def save_checkpoint(path: Path, state: dict) -> None:
    torch_save(state, path)


def _progress(cfg: RunConfig, steps_left: int):
    """The run's bar, in steps (updated from Python, no host sync); drawn only on a terminal."""
    from tqdm import tqdm

    return tqdm(
        total=steps_left,
        desc=f"{cfg.optimizer.name}/{cfg.data.name}/s{cfg.seed}",
        unit="step",
        disable=not show_progress(cfg.options.progress),
        leave=False,
        dynamic_ncols=True,
    )


def _train(
    cfg: RunConfig, run_dir: Path, device: torch.device, info: dict, lock: RunLock, previous_trackers: Optional[dict]
) -> RunResult:
    t_start, tc = time.perf_counter(), cfg.trainer
    run = loop.build(cfg, device)
    info["data_notes"] = run.notes
    info["sizes"] = {"train": len(run.data.train_y), "eval": len(run.data.eval_y), "eval_split": run.data.eval_split}
    info["augment"] = run.augment
    info["data_sha"] = data_digest(cfg.data)  # after build: a download has brought the files by now
    ckpt_path = run_dir / rf.CHECKPOINT
    ckpt = _load_checkpoint(ckpt_path, cfg, info)
    if ckpt is not None:
        loop.restore(run, ckpt)
        print(f"resuming {run_dir} at epoch {run.start_epoch + 1}/{tc.epochs}")
    # Files this run will not write again must not outlive it: a fresh start drops an older run's
    # curves, and a run without eval_every_steps drops an evals.csv the report would prefer.
    stale_files = (rf.EVALS,) if not tc.eval_every_steps else ()
    rf.remove(run_dir, *stale_files, *((rf.METRICS, rf.EVALS) if ckpt is None else ()))
    info["epochs_done"] = run.start_epoch
    trackers = Trackers(cfg.loggers)
    if cfg.loggers.trackers:
        meta = run_meta(cfg, run_dir, info["code_version"])
        trackers.start(meta, previous_trackers, resumed=ckpt is not None)
        behind = trackers.behind(int(run.history[-1]["step"])) if run.history else {}
        if behind:  # added at a resume, or its points lost in a kill: the epochs trained, from the run's rows
            trackers.log(history_points(run.history, run.evals))
            kept = ", ".join(f"{name} from step {step}" for name, step in behind.items())
            print(
                f"logger {kept}: back-filled up to epoch {len(run.history)} from the run's own rows "
                "(the per-step training losses of those epochs were not kept)",
                flush=True,
            )
        info["trackers"] = trackers.record()
    run.loss_every = trackers.every_steps
    info["fit_started_at"] = time.time()  # data and model built: the first step is next (a launcher's start-up ends)
    rf.write_info(run_dir, info)
    try:
        _fit(cfg, run, run_dir, info, lock, trackers)
    except BaseException as err:  # the tracker runs end too, as the run ends: failed, or killed (resumable)
        trackers.finish("killed" if isinstance(err, KeyboardInterrupt) else "failed", {}, trackers.logged_step)
        raise
    if cfg.loggers.trackers:
        trackers.log(epoch_points(None, [], loop.take_step_losses(run)))  # a diverged epoch's losses
        last = run.history[-1] if run.history else {"step": 0}
        final = {metric_name(k): v for k, v in last.items() if k != "step"}
        trackers.finish(run.status, {**final, "epochs_done": len(run.history)}, int(last["step"]))
        info["trackers"] = trackers.record()
    result = _finish(run, run_dir, info, time.perf_counter() - t_start)
    result.warnings = recorded_warnings(info)
    return result


def _fit(cfg: RunConfig, run: loop.Run, run_dir: Path, info: dict, lock: RunLock, trackers: Trackers) -> None:
    """Train the remaining epochs, keeping the files (and the trackers) up to date after each."""
    tc, ckpt_path = cfg.trainer, run_dir / rf.CHECKPOINT
    bar = _progress(cfg, (tc.epochs - run.start_epoch) * len(run.loader))
    for row in loop.fit(run, bar):
        lock.check()  # after a take-over, two processes must never write one folder
        rf.write_metrics(run_dir, run.history)
        if tc.eval_every_steps:
            rf.write_evals(run_dir, run.evals)
        if cfg.loggers.trackers:  # recorded right after logging: a resumed run logs no step twice
            trackers.log(epoch_points(row, run.evals, loop.take_step_losses(run)))
            info["trackers"] = trackers.record()
        info.update(epochs_done=len(run.history), updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        rf.write_info(run_dir, info)
        if cfg.options.checkpoint and row["epoch"] < tc.epochs:
            identity = {k: info[k] for k in ("fingerprint", "code_version", "packages", "data_sha", "environment")}
            save_checkpoint(ckpt_path, {**identity, **loop.checkpoint_state(run)})
    bar.close()
    lock.check()


def _finish(run: loop.Run, run_dir: Path, info: dict, wall_seconds: float) -> RunResult:
    """run.json with the final metrics, then DONE (last: its presence means the folder is complete)."""
    if run.diverged_at_epoch is not None:
        info["diverged_at_epoch"] = run.diverged_at_epoch
    if run.device.type == "cuda":
        info["environment"]["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(run.device) / 2**20, 1)
    if not run.history:
        rf.write_metrics(run_dir, [])
    final = dict(run.history[-1]) if run.history else {}
    info.update(
        status=run.status,
        final=final,
        epochs_done=len(run.history),
        wall_time_s=wall_seconds,
        finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
        finished_at=time.time(),
    )
    rf.write_info(run_dir, info)
    rf.mark_done(run_dir, run.status)
    rf.remove(run_dir, rf.CHECKPOINT)
    return RunResult(run_dir, run.status, final)
