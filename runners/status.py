"""What each run of a results folder is doing, from its files alone (``python -m runners.status``).

    python -m runners.status outputs                                     # counts, and every run not done
    python -m runners.status outputs optimizer=thermolion,adamw seed=0,1,2   # ... and the sweep's missing runs
    python -m runners.status outputs +experiment=tunability              # an experiment's planned sweep

Counts the runs by status (``runners.outcomes``) and lists those that are not done: interrupted
(whose owner is gone), running (with its heartbeat age), failed (the error's first line), diverged
(the epoch) and stale (each difference from what would run now: the code version, a package's
version, the device type), and the commands of the sweeps that wrote there (launcher included).
Given the overrides of a ``run.py -m`` sweep, it also lists the planned runs that have no folder yet.
It reads files only, starts nothing and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from .outcomes import STATUSES, recorded_warnings
from .sweep.sweeps import recorded_sweeps

__all__ = ["planned_runs", "current_identity", "main"]

SWEEPS_SHOWN = 5
ORDER = ("done", "diverged", "stale", "running", "interrupted", "failed", "unreadable")


def planned_runs(results_dir: Path, overrides: list[str]) -> list[Path]:
    """The run folders a ``run.py -m <overrides>`` sweep writes into ``results_dir``, expanded the way
    Hydra's basic sweeper expands them (``runners.sweep.precheck``)."""
    from .config import RunConfig
    from .sweep.precheck import compose_jobs, sweep_jobs

    jobs = compose_jobs(sweep_jobs([*overrides, f"results_dir={results_dir}"]))
    return [RunConfig.from_dict(cfg).run_dir() for cfg in jobs]


def current_identity():
    """``info -> reasons``: why a finished run (its run.json) would not give the same numbers if run now."""
    import torch

    from .datafiles import data_digest
    from .identity import code_version, stale_reasons
    from .sweep.provenance import machine
    from .train.build import pick_device
    from .train.settings import DataConfig

    code, here, digests = code_version(), machine(torch.device("cpu")), {}

    def data_now(info: dict):
        try:  # the recorded data section as the typed settings data_digest reads (frozen: a dict key)
            recorded = info["config"]["data"]
            data = DataConfig(**{k: recorded[k] for k in ("name", "eval_split", "root", "cache_dir", "image_size")})
        except (KeyError, TypeError):
            return None
        if data not in digests:  # once per dataset and split setting, not once per run
            try:
                digests[data] = data_digest(data)
            except (OSError, ValueError):
                digests[data] = None
        return digests[data]

    def reasons(info: dict) -> list[str]:
        configured = str((info.get("config") or {}).get("trainer", {}).get("device", "auto"))
        try:
            device = pick_device(configured).type
        except RuntimeError:  # a device string this torch cannot parse: nothing to compare
            device = None
        now = here if device == "cpu" else None  # another device type is named as such
        return stale_reasons(info, code, device, machine=now, data=data_now(info))

    return reasons


def machine_differences(records: list[dict]) -> Counter:
    """How many finished runs were made with another floating-point order than this machine's, by
    difference (``runners.identity.machine_notes``): shown, not counted stale, unless exact_machine."""
    import torch

    from .identity import machine_notes
    from .sweep.provenance import machine

    here, out = machine(torch.device("cpu")), Counter()
    for r in records:
        env = (r.get("info") or {}).get("environment") or {}
        if r["status"] in ("done", "diverged", "stale") and env.get("device_type") == "cpu":
            for note in machine_notes(env, here):
                out[note] += 1
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runners.status", description=__doc__.splitlines()[0])
    ap.add_argument("results_dir", type=Path)
    ap.add_argument("overrides", nargs="*", help="a sweep's overrides, as run.py -m takes them: list its missing runs")
    args = ap.parse_args(argv)
    if not args.results_dir.is_dir():
        print(f"status: {args.results_dir} is not a folder; pass a sweep's results_dir (e.g. outputs)", file=sys.stderr)
        return 2
    from .report.collect import collect
    from .report.paths import shown_command

    records = collect(args.results_dir, stale=current_identity()).records
    counts = Counter(r["status"] for r in records)
    print(
        f"{args.results_dir}: {len(records)} run(s): "
        + ", ".join(f"{counts[s]} {s}" for s in ORDER if counts[s])
        + (" (nothing here yet)" if not records else "")
    )
    sweeps = recorded_sweeps(args.results_dir)
    if sweeps:
        shown = min(len(sweeps), SWEEPS_SHOWN)
        print(f"\nsweeps that wrote here ({len(sweeps)}; the last {shown}, each command re-runs it as it ran):")
        for when, command in sweeps[-SWEEPS_SHOWN:]:
            print(f"  {when}: {shown_command(command)}")
    warned = [(r["run_dir"], w) for r in records for w in recorded_warnings(r.get("info"))]
    if warned:
        print("\nwarnings the runs recorded (their numbers are unaffected):")
        for run_dir, warning in warned:
            print(f"  {run_dir}: {warning}")
    differences = machine_differences(records)
    if differences:
        print("\nmade on another machine (last bits only; recorded, not stale unless exact_machine=true):")
        for note, count in sorted(differences.items()):
            print(f"  {count} run(s): {note}")
    for status in ORDER[1:]:
        listed = [r for r in records if r["status"] == status]
        if listed:
            print(f"\n{status} ({STATUSES.get(status, 'no number: its files cannot be read')}):")
            for r in listed:
                print(f"  {r['run_dir']}: {r.get('reason', '')}")
    if args.overrides:
        try:
            planned = planned_runs(args.results_dir, args.overrides)
        except Exception as err:  # noqa: BLE001 - a bad override is reported, never a traceback
            print(f"\nstatus: cannot expand the sweep {' '.join(args.overrides)}: {err}", file=sys.stderr)
            return 2
        have = {(args.results_dir / r["run_dir"]).resolve() for r in records}
        missing = [p for p in planned if p.resolve() not in have]
        print(
            f"\nplanned sweep: {len(planned)} run(s), {len(planned) - len(missing)} with a folder, "
            f"{len(missing)} missing"
        )
        for p in missing:
            print(f"  {p.relative_to(args.results_dir) if p.is_relative_to(args.results_dir) else p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
