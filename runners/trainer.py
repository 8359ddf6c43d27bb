"""The shared trainer: one run = one (protocol, dataset, optimizer, seed), flat and resumable.

Data lives on the device as tensors (runners.data); a run writes, under its own folder,
``metrics.csv`` (a row per epoch), ``run.json`` (config, status, final metrics, environment),
``DONE`` last, and while it runs a per-epoch ``checkpoint.pt`` from which a killed run resumes.
All files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import SWALR, AveragedModel

from models import build_model
from thermolion import ThermoLion, build_optimizer, get_spec, param_groups

from .augment import EpochAugmenter, resolve_augment
from .config import RunConfig
from .data import Prepared, TensorLoader, prepare
from .io import torch_save, write_csv, write_json, write_text
from .lock import RunLock
from .plugins import resolve_target
from .provenance import code_version, environment
from .schedules import build_schedule

__all__ = ["RunResult", "train", "derive_seed", "pick_device", "build_run"]


@dataclass
class RunResult:
    run_dir: Path
    status: str  # done | diverged | failed | skipped
    final: dict = field(default_factory=dict)
    error: Optional[str] = None

    def line(self) -> str:
        parts = [f"{self.status:8s}", str(self.run_dir)]
        if "eval_acc" in self.final:
            parts.append(f"eval_acc {self.final['eval_acc']:.2f}%  train_loss {self.final['train_loss']:.4f}")
        if self.error:
            parts.append(self.error)
        return "  ".join(parts)


def derive_seed(seed: int, dataset: str, stream: str) -> int:
    """Independent, reproducible seeds per stream; the optimizer is deliberately not an input,
    so for one seed every optimizer starts from the same weights and sees the same batches."""
    digest = hashlib.sha256(f"{seed}:{dataset}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def keep_freed_memory() -> None:
    """On glibc, serve large blocks from the heap and keep freed memory for reuse.

    By default glibc hands every block over 32 MB to mmap and back to the OS when freed, so on
    the CPU each training step page-faults its activations anew (batch 1024: ~1.8x slower steps,
    half the time in the kernel). Process-wide, so it is called by the harness, not the library.
    """
    if sys.platform != "linux":
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX = 0: no mmap'd blocks
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: do not shrink the heap
    except (OSError, AttributeError):
        pass


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_run(cfg: RunConfig, data: Prepared, device: torch.device):
    """Model (seeded init), optimizer and, for SWA, the averaged model and its lr schedule."""
    torch.manual_seed(derive_seed(cfg.seed, cfg.data.name, "init"))
    model = build_model(cfg.model, data.channels, data.num_classes, data.image_size).to(device)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    groups = param_groups(model, cfg.model.resolved()["decay_norm_and_bias"])
    kwargs = dict(cfg.optimizer.kwargs)
    if cfg.optimizer.target:  # a plug-in: the class itself, with exactly the given arguments
        factory, averaging = resolve_target(cfg.optimizer.target, kwargs), None
    else:
        spec = get_spec(cfg.optimizer.name)
        factory, averaging = spec.factory, spec.averaging
    if isinstance(factory, type) and issubclass(factory, ThermoLion):
        gen = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, cfg.data.name, "noise"))
        kwargs.update(generator=gen, track_stats=cfg.trainer.track_stats)
    if cfg.optimizer.target:
        optimizer = factory(groups, **kwargs)
    else:
        optimizer = build_optimizer(cfg.optimizer.name, groups, **kwargs)
    swa = None
    if averaging:
        swa = (AveragedModel(model), SWALR(optimizer, swa_lr=averaging["swa_lr"]), averaging["start_epoch"])
    return model, optimizer, swa


@torch.no_grad()
def evaluate(model, x, y, batch_size: int, amp: bool) -> tuple[float, float]:
    model.eval()
    loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    step = max(batch_size, 1024)  # no gradients kept: larger batches are fine
    for i in range(0, len(x), step):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x[i:i + step])
        yb = y[i:i + step]
        loss += F.cross_entropy(out.float(), yb, reduction="sum")
        correct += (out.argmax(1) == yb).sum()
    model.train()
    return loss.item() / len(x), 100.0 * correct.item() / len(x)


def _progress(cfg: RunConfig, steps_left: int, desc: str):
    """The run's bar, in steps (updated from Python, no host sync); drawn only on a terminal."""
    from tqdm import tqdm

    from .progress import show_progress

    return tqdm(total=steps_left, desc=desc, unit="step", disable=not show_progress(cfg.trainer.progress),
                leave=False, dynamic_ncols=True)


def save_checkpoint(path: Path, state: dict) -> None:
    torch_save(state, path)


def train(cfg: RunConfig) -> RunResult:
    """Run one configuration to completion (or resume it); failures become a status, not a crash.

    Statuses: done, diverged, failed; skipped (finished before, same code), stale (finished with
    other code, kept unless ``rerun`` is stale or all), running elsewhere (another live process
    holds the run's lock).
    """
    run_dir = cfg.run_dir()
    version = code_version(cfg.code_files())
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return RunResult(run_dir, "failed", error=f"cannot create the run folder under results_dir="
                         f"{cfg.results_dir} ({err.strerror or err}); choose a writable results_dir")
    lock = RunLock(run_dir)
    if not lock.acquire():
        holder = lock.holder() or {}
        return RunResult(run_dir, "running elsewhere", error=f"locked by {holder.get('host')} pid {holder.get('pid')} "
                         f"(heartbeat {holder.get('age_s', 0):.0f} s ago)")
    try:
        finished = _finished_result(cfg, run_dir, version)
        if finished is not None:
            return finished
        info = {"config": cfg.to_dict(), "fingerprint": cfg.fingerprint(), "code_version": version,
                "seed": cfg.seed, "status": "running", "run_dir": str(run_dir),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if lock.took_over:
            info["took_over_from"] = {k: lock.took_over.get(k) for k in ("host", "pid", "since")}
            print(f"took over {run_dir} from {lock.took_over.get('host')} pid {lock.took_over.get('pid')} "
                  "(owner gone)", flush=True)
        device = pick_device(cfg.trainer.device)
        if device.type == "cpu":
            keep_freed_memory()
        try:
            info["environment"] = environment(device)
            return _train(cfg, run_dir, device, info)
        except Exception as err:  # noqa: BLE001 - a failed run must not stop the sweep
            info.update(status="failed", error=f"{type(err).__name__}: {err}")
            write_json(run_dir / "run.json", info)
            return RunResult(run_dir, "failed", error=info["error"])
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
        return RunResult(run_dir, "failed", error=f"this folder holds plug-in {cfg.optimizer.name!r} with other "
                         f"settings ({stored}); give this one another optimizer.name")
    if cfg.rerun == "all" or (cfg.rerun == "stale" and old != version):
        done.unlink()  # a rerun killed midway must not look finished
        return None
    if old != version:
        return RunResult(run_dir, "stale", error=f"finished with code {old}, the code is now {version}; "
                         "kept (rerun=stale re-runs it)")
    return RunResult(run_dir, "skipped", error="already complete (DONE exists)")


def _load_checkpoint(path: Path, cfg: RunConfig, version: str, device: torch.device) -> Optional[dict]:
    """A killed run's checkpoint, or None; one written by other code is discarded, not mixed in."""
    if not path.exists():
        return None
    ckpt = torch.load(path, map_location=device, weights_only=False)
    if ckpt.get("fingerprint") != cfg.fingerprint():
        raise RuntimeError(f"{path} belongs to a different configuration; delete it to start over")
    if ckpt.get("code_version") != version:
        print(f"{path.parent}: its checkpoint was written by code {ckpt.get('code_version')}, the code is "
              f"now {version}: starting over rather than mixing the two", flush=True)
        path.unlink()
        return None
    return ckpt


def _train(cfg: RunConfig, run_dir: Path, device: torch.device, info: dict) -> RunResult:
    t_start = time.perf_counter()
    tc = cfg.trainer
    if tc.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    data = prepare(cfg.data, seed=cfg.seed, device=device)
    info["data_notes"] = data.notes
    info["sizes"] = {"train": len(data.train_y), "eval": len(data.eval_y), "eval_split": data.eval_split}
    model, optimizer, swa = build_run(cfg, data, device)
    step_model = torch.compile(model) if tc.compile else model
    augment, warning = resolve_augment(cfg.data.augment, cfg.data.name)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
        info["data_notes"].append(warning)
    augmenter = (EpochAugmenter(augment, derive_seed(cfg.seed, cfg.data.name, "augment"))
                 if augment != "none" else None)
    info["augment"] = augment
    loader = TensorLoader(data.train_x, data.train_y, tc.batch_size,
                          seed=derive_seed(cfg.seed, cfg.data.name, "batches"), augmenter=augmenter)
    scheduler = build_schedule(optimizer, tc.schedule, tc.epochs * len(loader), tc.warmup_steps)
    ckpt_path = run_dir / "checkpoint.pt"
    history: list[dict] = []
    evals: list[dict] = []  # every evaluation point (eval_every_steps): evals.csv
    start_epoch = 0
    ckpt = _load_checkpoint(ckpt_path, cfg, info["code_version"], device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if swa is not None:
            swa[0].load_state_dict(ckpt["swa_model"])
            swa[1].load_state_dict(ckpt["swa_scheduler"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng_cpu"])
        if device.type == "cuda" and ckpt.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng_cuda"], device)
        history, start_epoch = ckpt["history"], ckpt["epoch"]
        evals = ckpt.get("evals", [])
        print(f"resuming {run_dir} at epoch {start_epoch + 1}/{tc.epochs}")
    status = "done"
    every = tc.eval_every_steps or 0
    step = start_epoch * len(loader)
    trained_seconds = sum(r["train_time_s"] for r in history)  # training only, over all epochs so far
    bar = _progress(cfg, (tc.epochs - start_epoch) * len(loader), f"{cfg.optimizer.name}/{cfg.data.name}/s{cfg.seed}")
    timing_cuda = device.type == "cuda"
    for epoch in range(start_epoch, tc.epochs):
        t_epoch = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        step_seconds, eval_seconds, events = 0.0, 0.0, []
        for x, y in loader.epoch(epoch):
            if tc.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.amp):
                out = step_model(x)
            loss = F.cross_entropy(out.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip is not None:  # global norm; the result stays on the device (no sync)
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            if timing_cuda:  # CUDA events: time the step without a host sync per step
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                optimizer.step()
                end.record()
                events.append((start, end))
            else:
                t0 = time.perf_counter()
                optimizer.step()
                step_seconds += time.perf_counter() - t0
            if scheduler is not None:
                scheduler.step()
            loss_sum += loss.detach()
            correct += (out.argmax(1) == y).sum()
            bar.update(1)
            step += 1
            if every and step % every == 0 and step % len(loader):  # epoch ends are evaluated below
                t_eval = time.perf_counter()
                eval_loss, eval_acc = evaluate(model, data.eval_x, data.eval_y, tc.batch_size, tc.amp)
                evals.append({"step": step, "epoch": step / len(loader), "eval_loss": eval_loss, "eval_acc": eval_acc,
                              "train_seconds": trained_seconds + t_eval - t_epoch - eval_seconds})
                eval_seconds += time.perf_counter() - t_eval
        train_loss = loss_sum.item() / len(loader)  # one host sync per epoch
        train_seconds = time.perf_counter() - t_epoch - eval_seconds
        trained_seconds += train_seconds
        if timing_cuda:
            step_seconds = sum(s.elapsed_time(e) for s, e in events) / 1e3
        row = {"epoch": epoch + 1, "step": step, "train_loss": train_loss,
               "train_acc": 100.0 * correct.item() / len(data.train_y),
               "lr": optimizer.param_groups[0]["lr"]}
        if not math.isfinite(train_loss):
            status = "diverged"
            info["diverged_at_epoch"] = epoch + 1
            break
        eval_model = model
        if swa is not None and epoch >= swa[2]:
            swa[0].update_parameters(model)
            swa[1].step()
            eval_model = swa[0]  # the notebook evaluates the averaged model (no BatchNorm to refresh)
        row["eval_loss"], row["eval_acc"] = evaluate(eval_model, data.eval_x, data.eval_y, tc.batch_size, tc.amp)
        row["train_time_s"] = train_seconds
        row["epoch_time_s"] = time.perf_counter() - t_epoch  # training + evaluation
        row["step_time_ms"] = 1e3 * step_seconds / len(loader)
        if isinstance(optimizer, ThermoLion) and optimizer.track_stats:
            row.update(optimizer.read_stats())
        history.append(row)
        write_csv(run_dir / "metrics.csv", history)
        if every:
            evals.append({"step": step, "epoch": float(epoch + 1), "eval_loss": row["eval_loss"],
                          "eval_acc": row["eval_acc"], "train_seconds": trained_seconds})
            write_csv(run_dir / "evals.csv", evals)
        if tc.checkpoint and epoch + 1 < tc.epochs:
            save_checkpoint(ckpt_path, {
                "fingerprint": cfg.fingerprint(), "code_version": info["code_version"],
                "epoch": epoch + 1, "history": history, "evals": evals,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "swa_model": swa[0].state_dict() if swa else None,
                "swa_scheduler": swa[1].state_dict() if swa else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            })
        bar.set_postfix(epoch=epoch + 1, loss=f"{train_loss:.4f}", acc=f"{row['eval_acc']:.2f}")
    bar.close()
    if not history:
        write_text(run_dir / "metrics.csv", "")
    final = dict(history[-1]) if history else {}
    info.update(status=status, final=final, epochs_done=len(history), wall_time_s=time.perf_counter() - t_start,
                finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_json(run_dir / "run.json", info)
    write_text(run_dir / "DONE", status + "\n")  # last: its presence means the folder is complete
    ckpt_path.unlink(missing_ok=True)
    return RunResult(run_dir, status, final)
