"""Optimizer step() time and peak extra memory, ThermoLion vs AdamW/Adam/Lion, in one process.

    python scripts/bench_step.py [--sizes 1M 21M 100M] [--repeats 7] [--device cpu|cuda]

Every optimizer steps the same parameters with the same fixed gradients; optimizers are
interleaved round-robin, in a rotating order, so that machine noise and allocator state spread
evenly, and each figure is a median.
Ratios are to AdamW with foreach, to Adam and to AdamW at torch.optim's defaults (on the CPU, the
per-tensor loop). ThermoLion is measured on the foreach path and the compiled bucket path: as the
harness runs it (noise on, diagnostics tracked), with the diagnostics sampled every 10 steps, noise on without
diagnostics (steps 1..458 with the defaults), the same drawn from torch's generator (``noise_rng="torch"``,
the author's stream) instead of the counter-based default, and noise off (afterwards; the same code as
``noise=False``); plus capturable, and ``auto`` (foreach below FUSED_MIN_ELEMENTS, compiled above).
The self-tuning rivals (nadamw, schedulefree_adamw, prodigy, dadapt_adam, muon) are built from the
registry at their defaults, Muon with its param-group policy (``param_groups(..., muon=True)``); on
the CPU only at 1M and 21M, since Muon's Newton-Schulz on 4096x4096 matrices takes tens of seconds a step.
A compiled path's first step includes compiling; Inductor's on-disk cache is pointed at a fresh
folder so that this is the cold cost (set TORCHINDUCTOR_CACHE_DIR to time a warm one).
Writes results/bench_step.csv.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:  # a fresh cache, so the first step shows the cold compile
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_inductor_")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.convnet import ConvNet  # noqa: E402
from thermolion import Lion, ThermoLion, build_optimizer  # noqa: E402

RIVALS = ("nadamw", "schedulefree_adamw", "prodigy", "dadapt_adam", "muon")

ROOT = Path(__file__).resolve().parents[1]


def param_shapes(size: str) -> list[tuple[int, ...]]:
    if size == "1M":  # the paper's ConvNet on 3-channel 32x32 images, 10 classes
        return [tuple(p.shape) for p in ConvNet(3, 10, 32).parameters()]
    if size == "21M":  # a ResNet-ish mix of big and small tensors
        return [(4096, 4096), (4096, 1024)] + [(1024,)] * 8 + [(64, 64, 3, 3)] * 4
    if size == "100M":
        return [(4096, 4096)] * 6 + [(4096,)] * 12
    raise SystemExit(f"unknown size {size!r}; choose from 1M, 21M, 100M")


def peak_rss_reset() -> None:
    try:  # Linux: writing 5 resets VmHWM, the peak resident set size
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def make_rivals(params) -> dict:
    """The self-tuning rivals at their registry defaults; Muon's groups by its policy, in registration order."""
    holder = torch.nn.ParameterList(params)
    opts = {name: build_optimizer(name, holder) for name in RIVALS}
    opts["schedulefree_adamw"].train()  # Schedule-Free steps in train mode only
    return opts


def make_optimizers(params, compiled: bool = True):
    """The rivals at their defaults (on the CPU torch.optim's default is the per-tensor loop), then
    ThermoLion as the harness runs it (noise on, diagnostics tracked) and without each cost, on the
    foreach path (the default below FUSED_MIN_ELEMENTS) and the compiled bucket path."""
    opts = {
        "adam": torch.optim.Adam(params),
        "adamw": torch.optim.AdamW(params),
        "adamw_foreach": torch.optim.AdamW(params, foreach=True),
        "adamw_fused": torch.optim.AdamW(params, fused=True),
        "lion": Lion(params),
    }
    for path, kw in (("foreach", dict(fused=False)), ("compiled", dict(fused=True)))[: 2 if compiled else 1]:
        opts[f"thermolion_{path}_harness"] = ThermoLion(params, track_stats=True, **kw)
        opts[f"thermolion_{path}_stats_every10"] = ThermoLion(params, track_stats=True, stats_every=10, **kw)
        opts[f"thermolion_{path}_noise_on"] = ThermoLion(params, **kw)
        opts[f"thermolion_{path}_torch_noise"] = ThermoLion(params, noise_rng="torch", **kw)  # author's stream
        opts[f"thermolion_{path}_noise_off"] = ThermoLion(params, noise=False, **kw)
    if compiled:
        opts["thermolion_compiled_capturable_harness"] = ThermoLion(
            params, track_stats=True, fused=True, capturable=True
        )
    opts["thermolion_auto_harness"] = ThermoLion(params, track_stats=True)  # what ThermoLion() picks here
    return opts


def bench(size: str, repeats: int, device: str, compiled: bool = True) -> list[dict]:
    gen = torch.Generator(device=device).manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, device=device)) for s in param_shapes(size)]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, device=device)
    n = sum(p.numel() for p in params)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    opts = make_optimizers(params, compiled)
    if device == "cuda" or size in ("1M", "21M"):
        opts.update(make_rivals(params))
    first, times, extra = {}, {k: [] for k in opts}, {}
    for name, opt in opts.items():  # first step: lazy state (and compilation for the fused path)
        sync()
        t0 = time.perf_counter()
        opt.step()
        sync()
        first[name] = time.perf_counter() - t0
    names = list(opts)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate: no fixed neighbour
            opt = opts[name]
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            else:
                peak_rss_reset()
                base = rss_kib("VmRSS") * 1024
            sync()
            t0 = time.perf_counter()
            opt.step()
            sync()
            times[name].append(time.perf_counter() - t0)
            peak = torch.cuda.max_memory_allocated() if device == "cuda" else rss_kib("VmHWM") * 1024
            extra[name] = max(extra.get(name, 0), peak - base)
    ref = statistics.median(times["adamw_foreach"])
    adam, adamw = statistics.median(times["adam"]), statistics.median(times["adamw"])
    rows = []
    for name in opts:
        med = statistics.median(times[name])
        state = sum(
            t.numel() * t.element_size()
            for s in opts[name].state.values()
            for t in (s.values() if isinstance(s, dict) else [])
            if torch.is_tensor(t)
        )
        rows.append(
            dict(
                size=size,
                numel=n,
                device=device,
                optimizer=name,
                median_ms=round(med * 1e3, 3),
                ratio_to_adamw_foreach=round(med / ref, 3),
                ratio_to_adam=round(med / adam, 3),
                ratio_to_adamw=round(med / adamw, 3),
                first_step_s=round(first[name], 3),
                peak_extra_mib=round(extra[name] / 2**20, 1),
                state_mib=round(state / 2**20, 1),
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["1M", "21M", "100M"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_step.csv"))
    ap.add_argument("--no-compiled", action="store_true", help="leave out the compiled paths (no compile time)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    rows = []
    for size in args.sizes:
        rows += bench(size, args.repeats, args.device, not args.no_compiled)
        print(f"\n{size} parameters ({rows[-1]['numel']:,} elements)")
        print(
            f"{'optimizer':40s} {'median ms':>10s} {'x adamw-fe':>10s} {'x adam':>7s} {'1st step s':>10s} "
            f"{'peak+ MiB':>10s} {'state MiB':>10s}"
        )
        for r in rows:
            if r["size"] == size:
                print(
                    f"{r['optimizer']:40s} {r['median_ms']:10.2f} {r['ratio_to_adamw_foreach']:10.2f} "
                    f"{r['ratio_to_adam']:7.2f} "
                    f"{r['first_step_s']:10.2f} {r['peak_extra_mib']:10.1f} {r['state_mib']:10.1f}"
                )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(out)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
