"""One run as a job: own its folder, skip or resume it, train it, and write its files.

A run writes, under its own folder, ``metrics.csv`` (a row per epoch), ``run.json`` (config,
status, final metrics, environment), ``DONE`` last, and while it runs a per-epoch
``checkpoint.pt`` from which a killed run resumes. All files are written atomically. The
numbers come from ``runners.train``; this module only decides whether to train and keeps files.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ..atomic import torch_save, write_csv, write_json, write_text
from ..config import RunConfig
from ..train import loop
from ..train.build import keep_freed_memory, pick_device
from .lock import LockLost, RunLock
from .progress import show_progress
from .provenance import code_version, environment

__all__ = ["RunResult", "train", "save_checkpoint"]


@dataclass
class RunResult:
    run_dir: Path
    status: str  # done | diverged | failed | skipped | stale | running elsewhere | taken over
    final: dict = field(default_factory=dict)
    error: Optional[str] = None

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
    run_dir = cfg.run_dir()
    version = code_version(cfg.code_files())
    if cfg.trainer.deterministic:  # cuBLAS reads it when CUDA initialises, before any run builds
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if cfg.rerun == "failed" and _recorded_status(run_dir) != "failed":
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
        finished = _finished_result(cfg, run_dir, version)
        if finished is not None:
            return finished
        info = {
            "config": cfg.to_dict(),
            "fingerprint": cfg.fingerprint(),
            "code_version": version,
            "seed": cfg.seed,
            "status": "running",
            "run_dir": str(run_dir),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
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
        write_json(run_dir / "run.json", info)
        device = pick_device(cfg.trainer.device)
        if device.type == "cpu":
            keep_freed_memory()
        deterministic = torch.are_deterministic_algorithms_enabled()
        try:
            info["environment"] = environment(device)
            with device_settings(cfg, device) as settings:
                info["environment"].update(settings)
                return _train(cfg, run_dir, device, info, lock)
        except LockLost as err:  # another process owns the folder now: write nothing more
            return RunResult(run_dir, "taken over", error=str(err))
        except Exception as err:  # noqa: BLE001 - a failed run must not stop the sweep
            info.update(status="failed", error=f"{type(err).__name__}: {err}")
            if lock.held():
                write_json(run_dir / "run.json", info)
            return RunResult(run_dir, "failed", error=info["error"])
        finally:  # a deterministic run must not leave later runs of an in-process sweep deterministic
            torch.use_deterministic_algorithms(deterministic)
    finally:
        lock.release()


def _finished_result(cfg: RunConfig, run_dir: Path, version: str) -> Optional[RunResult]:
    """The result of an already finished run, or None when it is to be (re-)run now."""
    done = run_dir / "DONE"
    if not done.exists():
        return None
    try:
        recorded = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        recorded = {}
    old = recorded.get("code_version") or ("unrecorded" if recorded else "unreadable")
    stored = recorded.get("config", {}).get("optimizer")
    if cfg.optimizer.target and stored is not None and stored != cfg.to_dict()["optimizer"]:
        return RunResult(
            run_dir,
            "failed",
            error=f"this folder holds plug-in {cfg.optimizer.name!r} with other "
            f"settings ({stored}); give this one another optimizer.name",
        )
    if old == version and recorded.get("fingerprint") not in (None, cfg.fingerprint()):
        return RunResult(
            run_dir,
            "failed",
            error=f"this folder holds a finished run with other settings (fingerprint {recorded['fingerprint']}, "
            f"this configuration's is {cfg.fingerprint()}); give it another results_dir",
        )
    if not _metrics_complete(run_dir, recorded):
        print(f"{run_dir}: DONE but metrics.csv is truncated or unreadable: running it again", flush=True)
        done.unlink()
        return None
    if cfg.rerun == "all" or (cfg.rerun == "stale" and old != version):
        done.unlink()  # a rerun killed midway must not look finished
        return None
    if old != version:
        return RunResult(
            run_dir,
            "stale",
            error=f"finished with code {old}, the code is now {version}; kept (rerun=stale re-runs it)",
        )
    return RunResult(run_dir, "skipped", error="already complete (DONE exists)")


def _recorded_status(run_dir: Path) -> Optional[str]:
    """The status run.json records, "done" when DONE exists, or None for a run never started."""
    if (run_dir / "DONE").exists():
        return "done"
    try:
        return json.loads((run_dir / "run.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def _metrics_complete(run_dir: Path, recorded: dict) -> bool:
    """metrics.csv has every epoch run.json says was done, each row whole (the report's own reading)."""
    from ..report.collect import read_rows  # lazily: pandas is not needed to train a run

    expected = recorded.get("epochs_done")
    if expected == 0:
        return True  # diverged in its first epoch: an empty metrics.csv is complete
    rows, problem = read_rows(run_dir / "metrics.csv", ("epoch",))
    return problem is None and len(rows) == (expected if expected is not None else len(rows))


def _load_checkpoint(path: Path, cfg: RunConfig, version: str, device: torch.device) -> Optional[dict]:
    """A killed run's checkpoint, or None; one written by other code is discarded, not mixed in."""
    if not path.exists():
        return None
    # On the CPU: RNG and generator states must stay CPU byte tensors (set_rng_state, Generator.set_state);
    # load_state_dict moves weights and optimizer state to the parameters' device itself.
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("code_version") != version:
        print(
            f"{path.parent}: its checkpoint was written by code {ckpt.get('code_version')}, the code is "
            f"now {version}: starting over rather than mixing the two",
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
        disable=not show_progress(cfg.trainer.progress),
        leave=False,
        dynamic_ncols=True,
    )


@contextlib.contextmanager
def device_settings(cfg: RunConfig, device: torch.device):
    """Backend settings for the run (recorded in run.json), restored afterwards.

    cuDNN autotuning is on except in deterministic mode; ``trainer.matmul_precision`` ("high" lets
    float32 matmuls use TF32 on Ampere and later). ``cuda:N`` becomes the current device, so that
    CUDA events and allocations go to it (its peak memory is recorded when the run finishes).
    """
    before = (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision())
    torch.backends.cudnn.benchmark = not cfg.trainer.deterministic
    torch.set_float32_matmul_precision(cfg.trainer.matmul_precision)
    settings = {"cudnn_benchmark": torch.backends.cudnn.benchmark, "matmul_precision": cfg.trainer.matmul_precision}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
        settings.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), driver=_driver_version())
    try:
        yield settings
    finally:
        torch.backends.cudnn.benchmark = before[0]
        torch.set_float32_matmul_precision(before[1])


def _driver_version():
    try:
        import subprocess

        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out.splitlines()[0] if out else None
    except (OSError, subprocess.SubprocessError):
        return None


def _train(cfg: RunConfig, run_dir: Path, device: torch.device, info: dict, lock: RunLock) -> RunResult:
    t_start = time.perf_counter()
    tc = cfg.trainer
    run = loop.build(cfg, device)
    info["data_notes"] = run.notes
    info["sizes"] = {"train": len(run.data.train_y), "eval": len(run.data.eval_y), "eval_split": run.data.eval_split}
    info["augment"] = run.augment
    ckpt_path = run_dir / "checkpoint.pt"
    ckpt = _load_checkpoint(ckpt_path, cfg, info["code_version"], device)
    if ckpt is not None:
        loop.restore(run, ckpt)
        print(f"resuming {run_dir} at epoch {run.start_epoch + 1}/{tc.epochs}")
    # Files this run will not write again must not outlive it: a fresh start drops an older run's
    # curves, and a run without eval_every_steps drops an evals.csv the report would prefer.
    stale_files = ("evals.csv",) if not tc.eval_every_steps else ()
    for name in stale_files + (("metrics.csv", "evals.csv") if ckpt is None else ()):
        (run_dir / name).unlink(missing_ok=True)
    info["epochs_done"] = run.start_epoch
    write_json(run_dir / "run.json", info)
    bar = _progress(cfg, (tc.epochs - run.start_epoch) * len(run.loader))
    for row in loop.fit(run, bar):
        lock.check()  # after a take-over, two processes must never write one folder
        write_csv(run_dir / "metrics.csv", run.history)
        if tc.eval_every_steps:
            write_csv(run_dir / "evals.csv", run.evals)
        info.update(epochs_done=len(run.history), updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        write_json(run_dir / "run.json", info)
        if tc.checkpoint and row["epoch"] < tc.epochs:
            save_checkpoint(
                ckpt_path,
                {"fingerprint": cfg.fingerprint(), "code_version": info["code_version"], **loop.checkpoint_state(run)},
            )
    bar.close()
    lock.check()
    return _finish(run, run_dir, info, time.perf_counter() - t_start)


def _finish(run: loop.Run, run_dir: Path, info: dict, wall_seconds: float) -> RunResult:
    """run.json with the final metrics, then DONE (last: its presence means the folder is complete)."""
    if run.diverged_at_epoch is not None:
        info["diverged_at_epoch"] = run.diverged_at_epoch
    if run.device.type == "cuda":
        info["environment"]["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(run.device) / 2**20, 1)
    if not run.history:
        write_text(run_dir / "metrics.csv", "")
    final = dict(run.history[-1]) if run.history else {}
    info.update(
        status=run.status,
        final=final,
        epochs_done=len(run.history),
        wall_time_s=wall_seconds,
        finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    write_json(run_dir / "run.json", info)
    write_text(run_dir / "DONE", run.status + "\n")
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    return RunResult(run_dir, run.status, final)
