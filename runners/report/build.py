"""The report's driver: every section of a results folder, then the index and summary.json."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

import pandas as pd

from ..atomic import write_json, write_text
from ..outcomes import recorded_warnings
from ..run_folder import find_runs
from .aggregate_files import write_aggregate
from .collect import OPTIMIZER_ORDER, Collected, ReportError, _ordered, assemble, read_run
from .figures import plot_convergence, plot_phase
from .paper import write_paper_comparison
from .paths import section_title, shown_command, shown_path
from .runs_table import runs_frame
from .self_tuning import is_self_tuning, tuned_reference, write_self_tuning
from .stats import paired_stats, write_stats
from .tables import final_table, markdown_table, package_mixes, write_final_tables, write_overhead
from .tables_io import is_report, read_tables, write_tables
from .time_to_target import write_time_to_target
from .tunability import write_tunability
from .tuning import sensitivity, write_sensitivity, write_tuned_table

REFERENCES = ("adamw", "adam")  # the default reference optimizer, then its stand-in
# Every file a section can have; each report removes them first, so none is left from an older one.
SECTION_FILES = tuple(
    f"{stem}.{ext}"
    for stem, exts in {
        "table_final": "csv md tex",
        "stats": "csv md",
        "aggregate": "csv md png",
        "critical_difference": "png",
        "time_to_target": "csv md",
        "performance_profile": "png",
        "convergence": "png pdf",
        "thermolion_phase": "png",
        "overhead": "md",
        "lr_sensitivity": "png md",
        "tuned_table": "csv md",
        "tunability": "csv md png",
        "self_tuning": "csv md png",
    }.items()
    for ext in exts.split()
)


def reference_of(runs: pd.DataFrame, candidate: str) -> str:
    """AdamW where a section has it, else Adam, else the first other optimizer present."""
    present = set(runs["optimizer"])
    others = [o for o in _ordered(present, OPTIMIZER_ORDER) if o != candidate]
    return next((r for r in REFERENCES if r in present), others[0] if others else candidate)


def build_report(
    results_dir: Union[Path, Sequence[Path]],
    out: Path,
    baseline: Optional[str] = None,
    candidate: Optional[str] = None,
    command: Optional[str] = None,
    target_reference: Optional[str] = None,
    target: Optional[float] = None,
) -> dict:
    """Every section of ``results_dir`` into ``out``. ``results_dir`` is a results folder (its run folders
    are read), a report folder (its own tables are read: ``tables_io``), or several of either, merged.
    ``baseline`` (overhead ratios) and ``target_reference`` (time-to-target) default to the one reference
    optimizer, AdamW, or the first present in a section; a name given explicitly must have runs here."""
    sources = [Path(results_dir)] if isinstance(results_dir, (str, Path)) else [Path(p) for p in results_dir]
    out = Path(out)
    collected = _collect_checked(sources, baseline, target_reference, candidate)
    runs, excluded = collected.runs, collected.excluded
    candidate = candidate or "thermolion"
    out.mkdir(parents=True, exist_ok=True)
    _remove_old_sections(out, set(runs["protocol"].unique()))
    summary = {
        "results_dir": collected.source,
        "command": shown_command(command),
        "candidate": candidate,
        "baseline": baseline,
        "complete_runs": int(len(runs)),
        "counted_runs": {s: int(n) for s, n in runs["status"].value_counts().items()},
        "excluded": excluded,
        "warnings": [
            {"run_dir": r["run_dir"], "warning": w} for r in collected.records for w in recorded_warnings(r.get("info"))
        ],
        "protocols": {},
    }
    options = dict(candidate=candidate, baseline=baseline, target_reference=target_reference, target=target)
    times = []
    for protocol, prun in runs.groupby("protocol"):
        summary["protocols"][protocol], ttt_runs = _section(collected, protocol, prun, out / protocol, **options)
        if ttt_runs is not None:
            times.append(ttt_runs)
    summary["paper_comparison"] = write_paper_comparison(runs, out, collected.attempts)  # None where none fits
    frame = runs_frame(collected.records, pd.concat(times) if times else pd.DataFrame())
    table_path = write_tables(frame, collected.read, out)
    summary["runs_table"] = table_path.name
    write_json(out / "summary.json", summary)
    write_text(out / "README.md", _index(out, command, summary, runs, excluded, table_path.name))
    from .page import write_page  # lazily: `python -m runners.report.page` runs it as a script

    write_page(out)  # last: it links every file of the folder
    return summary


def _collect_checked(sources: list[Path], *names: Optional[str]) -> Collected:
    """The runs of every source; a ReportError when there are none, or when a named optimizer has none."""
    read, shown = [], []
    for source in sources:
        if not source.is_dir():
            raise ReportError(f"{source} is not a folder; pass the results_dir of a sweep (e.g. outputs) or a report")
        if is_report(source):  # its own tables; the runs keep the names they have there
            records = read_tables(source)
            shown.append(json.loads((source / "summary.json").read_text()).get("results_dir") or shown_path(source))
        else:
            records = [read_run(d, source) for d in find_runs(source)]
            shown.append(shown_path(source))
        if len(sources) > 1:  # merged: a run is named by its source too, so names stay distinct
            prefix = shown_path(source).rstrip("/")
            records = [{**r, "run_dir": f"{prefix}/{r['run_dir']}"} for r in records]
        read += records
    collected = assemble(read)
    collected.source = " + ".join(shown)
    if collected.runs.empty:
        found = Counter(e["status"] for e in collected.excluded)
        by = ", ".join(f"{n} {s}" for s, n in found.items()) or "no run folders"
        where = " ".join(shown_path(s) for s in sources)
        raise ReportError(
            f"no finished runs under {where} ({by}; python -m runners.status {where} "
            "lists them); run a sweep first, e.g. python run.py -m optimizer=thermolion,adamw"
        )
    present = sorted(collected.runs["optimizer"].unique())
    for flag, name in zip(("--baseline", "--target-reference", "--candidate"), names):
        if name is not None and name not in present:
            raise ReportError(f"{flag} {name!r} has no complete runs here; the optimizers present are {present}")
    return collected


def _remove_old_sections(out: Path, sections: set) -> None:
    """An earlier report's section whose runs are gone must not outlive it (the page links every file of
    ``out``): its report files are removed, and its folder if nothing else is left in it. Files this
    report never writes are kept, and so is any folder without a report file."""
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and p.name not in sections):
        written = [folder / name for name in SECTION_FILES if (folder / name).is_file()]
        for path in written:
            path.unlink()
        if written and not any(folder.iterdir()):
            folder.rmdir()


def _section(
    collected: Collected,
    protocol: str,
    prun: pd.DataFrame,
    pout: Path,
    candidate: str,
    baseline: Optional[str],
    target_reference: Optional[str],
    target: Optional[float],
) -> tuple[dict, Optional[pd.DataFrame]]:
    """One protocol section's files: (its summary, its runs' times to target or None)."""
    pout.mkdir(parents=True, exist_ok=True)
    for name in SECTION_FILES:  # an earlier report's file this one does not write must not outlive it
        (pout / name).unlink(missing_ok=True)
    tuned = write_tuned_table(prun, pout, candidate)
    prun = prun[prun["tuned_from"].isna()]  # the tuned re-runs have their own table
    trial = prun["trial"].fillna(0)
    tunability = write_tunability(prun[prun["trial"].notna()], pout, protocol, candidate) if (trial > 0).any() else None
    prun = prun[trial == 0]  # tuning trials have their own analysis; the tables keep the defaults
    if prun.empty:
        return {"tuned": tuned, "tunability": tunability}, None
    epochs, attempts = collected.epochs, collected.attempts
    pep = epochs[epochs["run_dir"].isin(prun["run_dir"])] if "run_dir" in epochs else epochs.iloc[:0]
    patt = attempts[
        (attempts["protocol"] == protocol) & attempts["tuned_from"].isna() & (attempts["trial"].fillna(0) == 0)
    ]
    curves = collected.curves[collected.curves["run_dir"].isin(prun["run_dir"])]
    reference = target_reference or reference_of(prun, candidate)
    table = final_table(prun, patt)
    write_final_tables(table, pout, protocol, prun["code_version"], prun["hardware"], prun["packages"])
    _warn_mixes(protocol, prun)
    st = paired_stats(prun, candidate)
    counts = write_stats(st, pout, candidate) if not st.empty else {}
    plot_convergence(pep, pout, protocol)
    lrs = sensitivity(prun)
    ttt, ttt_runs = write_time_to_target(prun, curves, pout, protocol, reference, target, patt)
    self_tuning = None
    if is_self_tuning(prun):
        self_tuning = write_self_tuning(
            prun, curves, pout, protocol, candidate, reference, tuned_reference(collected.runs, prun), patt
        )
    return {
        "tuned": tuned,
        "tunability": tunability,
        "aggregate": write_aggregate(prun, pout, protocol, candidate, patt),
        "time_to_target": ttt,
        "self_tuning": self_tuning,
        "lr_robustness": write_sensitivity(lrs, pout, protocol, candidate) if not lrs.empty else [],
        "runs": int(len(prun)),
        "table": table.to_dict(orient="records"),
        "stats": st.to_dict(orient="records"),
        "win_tie_loss": counts,
        "overhead": write_overhead(prun, pout, baseline or reference_of(prun, candidate)),
        "phase_figure": plot_phase(pep, pout, candidate),
        "curves": mean_curves(pep),  # what convergence.png and thermolion_phase.png draw, for index.html
        "code_versions": prun["code_version"].value_counts().to_dict(),
        "package_mixes": package_mixes(prun["packages"]),
    }, ttt_runs


CURVE_COLUMNS = ("eval_acc", "train_loss", "eval_loss", "gate_mean", "gas_fraction", "alignment_rate", "temperature")


def mean_curves(epochs: pd.DataFrame) -> list[dict]:
    """Per (dataset, optimizer, epoch): the mean and std over seeds of each curve column, and the mean
    step and training seconds at the epoch's end (the x axes of index.html)."""
    if epochs.empty:
        return []
    cols = [c for c in CURVE_COLUMNS if c in epochs and epochs[c].notna().any()]
    g = epochs.groupby(["dataset", "optimizer", "epoch"])
    frame = g[cols].mean().add_suffix("_mean").join(g[cols].std(ddof=1).add_suffix("_std"))
    for x in ("step", "train_time_s"):
        if x in epochs:
            frame[x] = g[x].mean()
    frame = frame.reset_index()
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


def _warn_mixes(protocol: str, prun: pd.DataFrame) -> None:
    """One stderr line for each thing a section's table mixes: hardware, code, package versions."""
    mixed = []
    if prun["hardware"].nunique() > 1:
        mixed.append(f"hardware {sorted(prun['hardware'].unique())}")
    if prun["code_version"].nunique() > 1:
        mixed.append(f"code versions {sorted(prun['code_version'].unique())}")
    mixed += [f"{name} versions {versions}" for name, versions in package_mixes(prun["packages"]).items()]
    for what in mixed:
        print(f"report: warning: the {protocol} table mixes {what}", file=sys.stderr)


def _index(
    out: Path,
    command: Optional[str],
    summary: dict,
    runs: pd.DataFrame,
    excluded: list,
    table_name: str,
) -> str:
    """The report folder's README.md: what was counted, the diverged runs, the runs without a number, the files."""
    index = [
        f"# Report for `{summary['results_dir']}`\n",
        f"Command: `{shown_command(command)}`\n" if command else "",
        f"{len(runs)} counted run(s) in {', '.join(sorted(summary['protocols']))} "
        f"({', '.join(f'{n} {s}' for s, n in summary['counted_runs'].items())}); {len(excluded)} without a number. "
        "A diverged run counts at chance accuracy and never reaches a target; failed, interrupted and running "
        "runs get no number but every table cell counts them (runners/outcomes.py).\n",
    ]
    diverged = runs[runs["status"] == "diverged"]
    if not diverged.empty:
        index.append("## Diverged (counted at chance)\n")
        index.append(
            markdown_table(
                ["run", "diverged at epoch"],
                [[r.run_dir, _epoch(r.diverged_at_epoch)] for r in diverged.itertuples()],
            )
        )
    if summary.get("warnings"):
        index.append("## Warnings the runs recorded (their numbers are unaffected)\n")
        index.append(markdown_table(["run", "warning"], [[w["run_dir"], w["warning"]] for w in summary["warnings"]]))
    if excluded:
        index.append("## Without a number\n")
        index.append(
            markdown_table(["run", "status", "reason"], [[e["run_dir"], e["status"], e["reason"]] for e in excluded])
        )
    index.append(
        "\n**`index.html`** is this report as one page (tables, interactive figures, every run, provenance): "
        "open it in a browser, from disk.\n"
        f"\nFiles here: `{table_name}` (one row per run), "
        + ("`paper_comparison.md`, " if summary["paper_comparison"] is not None else "")
        + "`summary.json`; per section, the files it has (a file is missing where its section lacks what it "
        "needs, e.g. `critical_difference.png` below 3 datasets):\n",
    )
    for section in sorted(summary["protocols"]):
        made = sorted(p.name for p in (out / section).iterdir() if p.is_file()) if (out / section).is_dir() else []
        index.append(f"- **{section_title(section)}** (`{section}/`): " + ", ".join(f"`{name}`" for name in made))
    return "\n".join(index)


def _epoch(value) -> str:
    return "?" if value is None or value != value else str(int(value))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runners.report", description=__doc__.splitlines()[0])
    ap.add_argument(
        "results_dir",
        type=Path,
        nargs="+",
        help="a results folder (its run folders), a report folder (rebuilt from its own tables), or several, merged",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: <results_dir>/report, or the report folder itself; needed with several sources",
    )
    ap.add_argument(
        "--baseline",
        default=None,
        help="reference for overhead ratios (default adamw, else adam, else the first present)",
    )
    ap.add_argument("--candidate", default=None, help="optimizer compared against all others (default thermolion)")
    ap.add_argument(
        "--target-reference",
        default=None,
        help="time-to-target: the target is this optimizer's median final accuracy (default as --baseline)",
    )
    ap.add_argument("--target", type=float, default=None, help="time-to-target: this accuracy (%%) on every dataset")
    args = ap.parse_args(argv)
    sources = args.results_dir
    if args.out is None and len(sources) > 1:
        print("report: several sources are merged into one report: say where with --out", file=sys.stderr)
        return 2
    out = args.out or (sources[0] if is_report(sources[0]) else sources[0] / "report")
    try:
        summary = build_report(
            sources,
            out,
            args.baseline,
            args.candidate,
            command="python -m runners.report " + " ".join(argv if argv is not None else sys.argv[1:]),
            target_reference=args.target_reference,
            target=args.target,
        )
    except ReportError as err:
        print(f"report: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # an unwritable or full --out: one line, not a traceback
        print(
            f"report: cannot write the report to {out} ({err.strerror or err}: {err.filename or out}); "
            "choose a writable folder with --out",
            file=sys.stderr,
        )
        return 2
    print(f"report: {summary['complete_runs']} counted run(s), {len(summary['excluded'])} without a number -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
