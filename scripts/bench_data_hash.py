"""What hashing a dataset's content costs (runners.datafiles.source_digest), cold and memoised.

    python scripts/bench_data_hash.py            # real MNIST from DATA_ROOT, and a GTSRB-sized folder

Cold: the files are read and hashed (first run on a machine, or after they changed). Memoised: every
later call, which stats the files and reads the small JSON memo. A run pays the memoised cost twice
(at its relaunch check and when it records ``data_sha``); the tensor cache's own check reuses it.
GTSRB's training split is 26,640 PPM files of about 7 KB: the folder written here has that count and
size (random bytes: hashing does not read them as images). Prints a CSV row per case.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runners import datafiles  # noqa: E402


def _time(call, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best


def _case(name: str, split: str, root: Path, cache: Path) -> dict:
    memo = cache / "sources" / f"{name}-{split}.json"

    def cold():
        memo.unlink(missing_ok=True)
        datafiles.source_digest(name, split, str(root), str(cache))

    files = datafiles._source_files(datafiles.get_info(name), root, split)
    size = sum((root / f).stat().st_size for f in files)
    cold_s = _time(cold, 2)
    warm_s = _time(lambda: datafiles.source_digest(name, split, str(root), str(cache)), 5)
    return {
        "dataset": name,
        "files": len(files),
        "mib": round(size / 2**20, 1),
        "cold_s": round(cold_s, 3),
        "memoised_s": round(warm_s, 4),
        "cold_mib_per_s": round(size / 2**20 / cold_s),
    }


def _gtsrb_sized(root: Path, files: int = 26640, size: int = 7 * 1024) -> None:
    base = root / "gtsrb" / "GTSRB" / "Training"
    for i in range(files):
        folder = base / f"{i % 43:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i // 43:05d}_{i:05d}.ppm").write_bytes(os.urandom(size))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="the data root holding MNIST (default: DATA_ROOT)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        root = datafiles.resolve_root(args.root)
        if datafiles._source_files(datafiles.get_info("mnist"), root, "train") is not None:
            rows.append(_case("mnist", "train", root, cache))
        else:
            print(f"# no MNIST under {root}: set DATA_ROOT (../shared/data)", file=sys.stderr)
        fake = Path(tmp) / "data"
        _gtsrb_sized(fake)
        rows.append(_case("gtsrb", "train", fake, cache))
    print(",".join(rows[0]))
    for row in rows:
        print(",".join(str(v) for v in row.values()))


if __name__ == "__main__":
    main()
