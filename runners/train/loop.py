"""The training loop: build a run, train an epoch, evaluate, and the state a checkpoint holds.

Flat and short on purpose (airbench-style). Data lives on the device as tensors; nothing here
touches files or processes (that is ``runners.sweep``): :func:`fit` yields after every epoch so
that the caller can write metrics and a checkpoint, and a resumed run continues from
:func:`restore` with the same batches, noise and metrics as an uninterrupted one.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import update_bn

from thermolion import ThermoLion

from ..timing import StepTimer
from .augment import EpochAugmenter, resolve_augment
from .build import build_run, derive_seed, recipe
from .data import Prepared, TensorLoader, prepare
from .schedules import build_schedule

if TYPE_CHECKING:
    from ..config import RunConfig

__all__ = [
    "Run",
    "build",
    "evaluate",
    "evaluate_epoch",
    "eval_point",
    "effective_lr",
    "train_epoch",
    "fit",
    "take_step_losses",
    "checkpoint_state",
    "restore",
]


@dataclass
class Run:
    """Everything one run trains with, and what it has produced so far."""

    cfg: RunConfig
    device: torch.device
    data: Prepared
    model: nn.Module
    step_model: nn.Module  # the model, or its torch.compile'd wrapper (trainer.compile)
    optimizer: torch.optim.Optimizer
    swa: Optional[tuple]  # (AveragedModel, SWALR, first averaged epoch) for SWA
    loader: TensorLoader
    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler]
    augment: str
    notes: list[str]
    history: list[dict] = field(default_factory=list)  # one row per finished epoch: metrics.csv
    evals: list[dict] = field(default_factory=list)  # every evaluation point (eval_every_steps): evals.csv
    start_epoch: int = 0
    status: str = "done"  # done | diverged
    diverged_at_epoch: Optional[int] = None
    loss_every: int = 0  # keep every this many steps' training loss for the trackers (0: none)
    step_losses: list = field(default_factory=list)  # (step, loss on the device) until take_step_losses


def build(cfg: RunConfig, device: torch.device) -> Run:
    """Data, model, optimizer, loader and schedule of a run, seeded as its streams say."""
    tc = cfg.trainer
    data = prepare(cfg.data, seed=cfg.seed, device=device)
    augment, warning = resolve_augment(cfg.data.augment, cfg.data.name)
    notes = list(data.notes)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
        notes.append(warning)
    augmenter = EpochAugmenter(augment, derive_seed(cfg.seed, cfg.data.name, "augment")) if augment != "none" else None
    loader = TensorLoader(
        data.train_x,
        data.train_y,
        tc.batch_size,
        seed=derive_seed(cfg.seed, cfg.data.name, "batches"),
        augmenter=augmenter,
    )
    total_steps = tc.epochs * len(loader)
    schedule, warmup_steps, optimizer_warmup = recipe(cfg, total_steps)
    model, optimizer, swa = build_run(cfg, data, device, optimizer_warmup)
    scheduler = build_schedule(optimizer, schedule, total_steps, warmup_steps)
    return Run(
        cfg,
        device,
        data,
        model,
        torch.compile(model) if tc.compile else model,
        optimizer,
        swa,
        loader,
        scheduler,
        augment,
        notes,
    )


def checkpoint_state(run: Run) -> dict:
    """What a resumed run needs to continue exactly: weights, optimizer, schedules, RNGs, history."""
    swa, device = run.swa, run.device
    return {
        "epoch": len(run.history),
        "history": run.history,
        "evals": run.evals,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "swa_model": swa[0].state_dict() if swa else None,
        "swa_scheduler": swa[1].state_dict() if swa else None,
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def restore(run: Run, ckpt: dict) -> None:
    """Continue from :func:`checkpoint_state`'s output."""
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if run.swa is not None:
        run.swa[0].load_state_dict(ckpt["swa_model"])
        run.swa[1].load_state_dict(ckpt["swa_scheduler"])
    if run.scheduler is not None:
        run.scheduler.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["rng_cpu"])
    if run.device.type == "cuda" and ckpt.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(ckpt["rng_cuda"], run.device)
    run.history, run.start_epoch = ckpt["history"], ckpt["epoch"]
    run.evals = ckpt.get("evals", [])


@torch.no_grad()
def evaluate(model, x, y, batch_size: int, amp: bool) -> tuple[float, float]:
    model.eval()
    loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    step = max(batch_size, 1024)  # no gradients kept: larger batches are fine
    for i in range(0, len(x), step):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x[i : i + step])
        yb = y[i : i + step]
        loss += F.cross_entropy(out.float(), yb, reduction="sum")
        correct += (out.argmax(1) == yb).sum()
    model.train()
    return loss.item() / len(x), 100.0 * correct.item() / len(x)


def _train_mode(optimizer) -> None:
    """An optimizer with modes (Schedule-Free: ``train()``/``eval()``) steps in train mode; a no-op otherwise."""
    if callable(getattr(optimizer, "train", None)):
        optimizer.train()


def eval_point(run: Run, averaged: bool = False) -> nn.Module:
    """The model to evaluate, at the weights to evaluate.

    SWA's averaged model once averaging has begun. An optimizer with modes is switched to its
    evaluation weights (Schedule-Free's x) and stays there until the next step: the epoch's
    checkpoint is written there and training ends there. A BatchNorm model then gets its running
    statistics recomputed at those weights (torch.optim.swa_utils.update_bn) on the 50 training
    batches of the Schedule-Free README's recipe, a fixed seeded draw without augmentation.
    """
    if averaged:
        return run.swa[0]
    if callable(getattr(run.optimizer, "eval", None)):
        run.optimizer.eval()
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in run.model.modules()):
            update_bn(_bn_batches(run), run.model)
    return run.model


def _bn_batches(run: Run, batches: int = 50) -> Iterator[torch.Tensor]:
    x, bs = run.data.train_x, run.cfg.trainer.batch_size
    gen = torch.Generator().manual_seed(derive_seed(run.cfg.seed, run.cfg.data.name, "batchnorm"))
    idx = torch.randperm(len(x), generator=gen)[: batches * bs].to(x.device)
    for i in range(0, len(idx), bs):
        xb = x[idx[i : i + bs]]
        yield xb.contiguous(memory_format=torch.channels_last) if run.cfg.trainer.channels_last else xb


def effective_lr(optimizer) -> Optional[float]:
    """The step size an lr-free method uses, d·lr (Prodigy, D-Adaptation), where its group has a ``d``."""
    group = optimizer.param_groups[0]
    return float(group["d"]) * float(group["lr"]) if "d" in group else None


def train_epoch(run: Run, epoch: int, bar, t_epoch: float, trained_seconds: float) -> tuple[dict, float, float]:
    """One pass over the batches, with any mid-epoch evaluations: the epoch's first columns, its
    training seconds (evaluation excluded) and its seconds inside ``optimizer.step()``."""
    tc, data, model, optimizer = run.cfg.trainer, run.data, run.model, run.optimizer
    every, n = tc.eval_every_steps or 0, len(run.loader)
    loss_sum = torch.zeros((), device=run.device)
    correct = torch.zeros((), device=run.device, dtype=torch.long)
    timer, eval_seconds = StepTimer(run.device), 0.0
    step = epoch * n
    _train_mode(optimizer)  # after the last epoch's evaluation (or a restored checkpoint) left it in eval
    for x, y in run.loader.epoch(epoch):
        if tc.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=tc.amp):
            out = run.step_model(x)
        loss = F.cross_entropy(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip is not None:  # global norm; the result stays on the device (no sync)
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        timer.step(optimizer)
        if run.scheduler is not None:
            run.scheduler.step()
        loss_sum += loss.detach()
        correct += (out.argmax(1) == y).sum()
        bar.update(1)
        step += 1
        if run.loss_every and step % run.loss_every == 0:  # kept on the device: no host sync per step
            run.step_losses.append((step, loss.detach()))
        if every and step % every == 0 and step % n:  # epoch ends are evaluated by evaluate_epoch
            if timer.cuda:  # else the queued training kernels would be billed to evaluation
                torch.cuda.synchronize(run.device)
            t_eval = time.perf_counter()
            averaged = run.swa is not None and epoch > run.swa[2]  # once averaging has begun: its model
            eval_loss, eval_acc = evaluate(eval_point(run, averaged), data.eval_x, data.eval_y, tc.batch_size, tc.amp)
            _train_mode(optimizer)
            run.evals.append(
                {
                    "step": step,
                    "epoch": step / n,
                    "eval_loss": eval_loss,
                    "eval_acc": eval_acc,
                    "train_seconds": trained_seconds + t_eval - t_epoch - eval_seconds,
                }
            )
            eval_seconds += time.perf_counter() - t_eval
    train_loss = loss_sum.item() / n  # one host sync per epoch
    train_seconds = time.perf_counter() - t_epoch - eval_seconds
    row = {
        "epoch": epoch + 1,
        "step": step,
        "train_loss": train_loss,
        "train_acc": 100.0 * correct.item() / len(data.train_y),
    }
    if "lr" in optimizer.param_groups[0]:  # a plug-in may take none (COCOB)
        row["lr"] = optimizer.param_groups[0]["lr"]
    if (d_lr := effective_lr(optimizer)) is not None:
        row["effective_lr"] = d_lr
    return row, train_seconds, timer.seconds()


def take_step_losses(run: Run) -> list[tuple[int, float]]:
    """The kept training losses as (step, float), read in one host sync (at an epoch's end, where the
    trainer syncs anyway), and forgotten."""
    if not run.step_losses:
        return []
    steps, losses = zip(*run.step_losses)
    run.step_losses = []
    return list(zip(steps, torch.stack(losses).tolist()))


def evaluate_epoch(run: Run, epoch: int) -> tuple[float, float]:
    """(loss, accuracy) at the end of an epoch; SWA averages first and evaluates the averaged model."""
    averaged = run.swa is not None and epoch >= run.swa[2]
    if averaged:  # the notebook evaluates the averaged model (no BatchNorm to refresh)
        run.swa[0].update_parameters(run.model)
        run.swa[1].step()
    tc = run.cfg.trainer
    return evaluate(eval_point(run, averaged), run.data.eval_x, run.data.eval_y, tc.batch_size, tc.amp)


def fit(run: Run, bar) -> Iterator[dict]:
    """Train from ``run.start_epoch`` to the last epoch, yielding each finished epoch's row.

    A non-finite training loss, evaluation or diagnostic ends the run as diverged (``run.status``),
    without a row: metrics.csv keeps the finite epochs only.
    """
    every, n = run.cfg.trainer.eval_every_steps, len(run.loader)
    trained_seconds = sum(r["train_time_s"] for r in run.history)  # training only, over all epochs so far
    for epoch in range(run.start_epoch, run.cfg.trainer.epochs):
        t_epoch = time.perf_counter()
        row, train_seconds, step_seconds = train_epoch(run, epoch, bar, t_epoch, trained_seconds)
        trained_seconds += train_seconds
        if not math.isfinite(row["train_loss"]):
            run.status, run.diverged_at_epoch = "diverged", epoch + 1
            return
        row["eval_loss"], row["eval_acc"] = evaluate_epoch(run, epoch)
        row.update(
            train_time_s=train_seconds,
            epoch_time_s=time.perf_counter() - t_epoch,  # + evaluation
            step_time_ms=1e3 * step_seconds / n,
        )
        if isinstance(run.optimizer, ThermoLion) and run.optimizer.track_stats:
            row.update(run.optimizer.read_stats())
        if not all(math.isfinite(v) for v in row.values()):  # a blow-up on the last steps: diverged too
            run.status, run.diverged_at_epoch = "diverged", epoch + 1
            return
        run.history.append(row)
        if every:
            run.evals.append(
                {
                    "step": row["step"],
                    "epoch": float(epoch + 1),
                    "eval_loss": row["eval_loss"],
                    "eval_acc": row["eval_acc"],
                    "train_seconds": trained_seconds,
                }
            )
        bar.set_postfix(epoch=epoch + 1, loss=f"{row['train_loss']:.4f}", acc=f"{row['eval_acc']:.2f}")
        yield row
