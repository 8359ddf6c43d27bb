"""Download datasets and build their tensor caches ahead of time (for offline compute nodes).

    python scripts/prefetch_data.py all                 # the twelve paper datasets + digits
    python scripts/prefetch_data.py mnist cifar10 --root /shared/datasets --size 32

Files go to --root (default: $DATA_ROOT or ~/.cache/thermolion/data), converted tensors to
--cache-dir (default: $THERMOLION_CACHE or ~/.cache/thermolion/tensors). Run it where there is
internet, then point DATA_ROOT (and THERMOLION_CACHE) of the cluster jobs at the same folders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runners.datafiles import DataError, load_split, resolve_cache_dir, resolve_root  # noqa: E402
from runners.train.datasets import DATASETS  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+", help=f"'all' or any of: {', '.join(DATASETS)}")
    ap.add_argument("--root", default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--size", type=int, nargs="+", default=[32], help="image sizes to cache")
    args = ap.parse_args(argv)
    names = list(DATASETS) if args.names == ["all"] else [n.lower() for n in args.names]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        ap.error(f"unknown dataset(s) {', '.join(unknown)}; choose from: all, {', '.join(DATASETS)}")
    print(f"data root: {resolve_root(args.root)}\ncache dir: {resolve_cache_dir(args.cache_dir)}")
    failed = []
    jobs = [(n, s, size) for n in names for s in DATASETS[n].files for size in args.size]
    for name, split, size in (bar := tqdm(jobs, unit="split")):
        bar.set_description(f"{name}/{split}/{size}px")
        try:
            x, y = load_split(name, split, root=args.root, download=True, image_size=size, cache_dir=args.cache_dir)
            tqdm.write(f"{name:13s} {split:5s} {size:3d}px  {tuple(x.shape)}  {int(y.max()) + 1} classes")
        except DataError as err:
            failed.append(name)
            tqdm.write(f"FAILED {name} {split}: {err}")
    if failed:
        print(f"\n{len(set(failed))} dataset(s) failed: {', '.join(sorted(set(failed)))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
