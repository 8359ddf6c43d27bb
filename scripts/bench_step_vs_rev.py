"""ThermoLion's step() time in this checkout against an earlier revision's, in one process, interleaved.

    python scripts/bench_step_vs_rev.py --rev 1408b5f [--sizes 1M 21M] [--repeats 7] [--steps 20]

The revision's ``thermolion/`` is taken with ``git archive`` into a temporary folder and imported under
another package name, so both versions step the same parameters with the same gradients, in a rotating
order, and each figure is a median of ``repeats`` timings of ``steps`` steps. Prints the ratio of this
checkout to the revision per path (foreach, noise on; foreach, noise off; capturable; the reference
path at 1M only), and writes results/bench_step_vs_rev.csv.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.bench_step import param_shapes  # noqa: E402
from thermolion import ThermoLion  # noqa: E402

PATHS = {
    "foreach, noise on": dict(fused=False),
    "foreach, noise off": dict(fused=False, noise=False),
    "capturable": dict(fused=False, capturable=True),
    "reference": dict(foreach=False),
}


def old_class(rev: str, where: Path) -> type:
    """The ThermoLion class of revision ``rev``, imported as package ``thermolion_<rev>``."""
    name = f"thermolion_{rev}"
    archive = subprocess.run(["git", "archive", rev, "thermolion"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    (where / "thermolion").rename(where / name)
    sys.path.insert(0, str(where))
    return importlib.import_module(name).ThermoLion


def timed(opt, params, grads, steps: int) -> float:
    for p, g in zip(params, grads):
        p.grad = g
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", required=True, help="the git revision to compare against, e.g. 1408b5f")
    ap.add_argument("--sizes", nargs="+", default=["1M", "21M"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        classes = {"this checkout": ThermoLion, args.rev: old_class(args.rev, Path(tmp))}
        for size in args.sizes:
            gen = torch.Generator().manual_seed(0)
            shapes = param_shapes(size)
            grads = [torch.randn(s, generator=gen) for s in shapes]
            for path, kw in PATHS.items():
                if path == "reference" and size != "1M":
                    continue
                runs = {}
                for version, cls in classes.items():
                    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
                    opt = cls(params, generator=torch.Generator().manual_seed(1), **kw)
                    timed(opt, params, grads, 2)  # state made, first-step costs paid
                    runs[version] = (opt, params)
                times = {v: [] for v in classes}
                for r in range(args.repeats):
                    order = list(classes) if r % 2 == 0 else list(classes)[::-1]
                    for version in order:
                        opt, params = runs[version]
                        times[version].append(timed(opt, params, grads, args.steps))
                med = {v: statistics.median(t) for v, t in times.items()}
                ratio = med["this checkout"] / med[args.rev]
                rows.append(
                    {
                        "size": size,
                        "path": path,
                        "this_ms": round(1e3 * med["this checkout"], 3),
                        f"{args.rev}_ms": round(1e3 * med[args.rev], 3),
                        "ratio": round(ratio, 3),
                    }
                )
                print(
                    f"{size:>4} {path:20s} this {rows[-1]['this_ms']:9.3f} ms  {args.rev} "
                    f"{rows[-1][f'{args.rev}_ms']:9.3f} ms  ratio {ratio:.3f}",
                    flush=True,
                )
    out = ROOT / "results" / "bench_step_vs_rev.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"-> {out.relative_to(ROOT)} (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
