"""Optimizer step() time and peak extra memory, ThermoLion vs AdamW/Adam/Lion, in one process.

    python scripts/bench_step.py [--sizes 1M 21M 100M] [--repeats 7] [--device cpu|cuda]

Every optimizer steps the same parameters with the same fixed gradients; optimizers are
interleaved round-robin, in a rotating order, so that machine noise and allocator state spread
evenly, and each figure is a median.
Ratios are to AdamW with foreach, the usual default. ThermoLion is measured as a user gets it
(``auto``: foreach below FUSED_MIN_ELEMENTS, the compiled one-kernel path above) and on the
foreach path alone, with the noise on (steps 1..458 with the defaults) and off (afterwards;
same code path as ``noise=False``). The compiled path's first step includes compiling; Inductor's
on-disk cache is pointed at a fresh folder so that this is the cold cost.
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
from thermolion import Lion, ThermoLion  # noqa: E402

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


def make_optimizers(params):
    return {
        "adamw_foreach": torch.optim.AdamW(params, foreach=True),
        "adamw_fused": torch.optim.AdamW(params, fused=True),
        "adam": torch.optim.Adam(params, foreach=True),
        "lion": Lion(params),
        "thermolion_noise_on": ThermoLion(params),
        "thermolion_noise_off": ThermoLion(params, noise=False),
        "thermolion_foreach_noise_on": ThermoLion(params, fused=False),
        "thermolion_foreach_noise_off": ThermoLion(params, fused=False, noise=False),
    }


def bench(size: str, repeats: int, device: str) -> list[dict]:
    gen = torch.Generator(device=device).manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, device=device)) for s in param_shapes(size)]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, device=device)
    n = sum(p.numel() for p in params)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    opts = make_optimizers(params)
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
    args = ap.parse_args()
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    rows = []
    for size in args.sizes:
        rows += bench(size, args.repeats, args.device)
        print(f"\n{size} parameters ({rows[-1]['numel']:,} elements)")
        print(
            f"{'optimizer':30s} {'median ms':>10s} {'x adamw-fe':>10s} {'1st step s':>10s} "
            f"{'peak+ MiB':>10s} {'state MiB':>10s}"
        )
        for r in rows:
            if r["size"] == size:
                print(
                    f"{r['optimizer']:30s} {r['median_ms']:10.2f} {r['ratio_to_adamw_foreach']:10.2f} "
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
