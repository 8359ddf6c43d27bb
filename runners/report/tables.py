"""Final-accuracy tables (md, csv, tex), their cells, and the overhead table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ..atomic import write_text
from .collect import DATASET_ORDER, OPTIMIZER_ORDER, _ordered
from .paths import section_heading, section_title

UNCOUNTED = ("failed", "interrupted", "running", "unreadable")  # attempted, with no number (runners.outcomes)


def final_table(runs: pd.DataFrame, attempts: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Long table: one row per (dataset, optimizer) with mean, std and n over the counted runs (diverged
    ones at chance), the attempted runs by status, and whether it is the row's best."""
    g = runs.groupby(["dataset", "optimizer"])["final_eval_acc"]
    table = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()})
    tried = attempts if attempts is not None and not attempts.empty else runs.assign(status=_status(runs))
    counts = tried.groupby(["dataset", "optimizer"])["status"].value_counts().unstack(fill_value=0)
    counts = counts.reindex(columns=["done", "diverged", *UNCOUNTED], fill_value=0)
    table = table.join(counts, how="outer").fillna({"n": 0, **{c: 0 for c in counts.columns}}).reset_index()
    table[["n", *counts.columns]] = table[["n", *counts.columns]].astype(int)
    table["attempted"] = table[list(counts.columns)].sum(axis=1)
    table["best"] = table["mean"] == table.groupby("dataset")["mean"].transform("max")
    return table


def _status(runs: pd.DataFrame) -> pd.Series:
    return runs["status"] if "status" in runs else pd.Series("done", index=runs.index)


def _cell(r, show_n: bool = True) -> str:
    """``97.20 ± 0.40 (3/3)``, ``chance (0/3, 3 diverged)``, ``– (0/2, 2 failed)``: the value over the
    counted runs, then done/attempted and every run that is not done."""
    n, mean, std = int(r["n"]), r["mean"], r["std"]
    if n == 0:
        value = "–"
    elif int(r["diverged"]) == n:
        value = "chance"
    else:
        value = f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"
    if not show_n:
        return value
    others = "".join(f", {int(r[s])} {s}" for s in ("diverged", *UNCOUNTED) if int(r[s]))
    return f"{value} ({int(r['done'])}/{int(r['attempted'])}{others})"


def _wide(table: pd.DataFrame, bold: tuple[str, str]) -> tuple[list[str], list[str], list[list[str]]]:
    datasets = _ordered(table["dataset"], DATASET_ORDER)
    optimizers = _ordered(table["optimizer"], OPTIMIZER_ORDER)
    rows = []
    for d in datasets:
        row = []
        for o in optimizers:
            hit = table[(table["dataset"] == d) & (table["optimizer"] == o)]
            if hit.empty:
                row.append("–")
                continue
            r = hit.iloc[0]
            text = _cell(r)
            row.append(f"{bold[0]}{text}{bold[1]}" if r["best"] else text)
        rows.append(row)
    return datasets, optimizers, rows


def _num(v) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.3g}"
    return str(v)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def code_versions_note(versions: pd.Series) -> str:
    """One line naming the code versions behind a table, with a warning when there are several."""
    counts = versions.value_counts()
    text = "Code version(s): " + ", ".join(f"`{v}` ({n} runs)" for v, n in counts.items()) + "."
    if versions.str.partition("+")[0].nunique() > 1:  # "+..." is a plug-in's own source: not a mix
        text += (
            " **Warning: this table mixes runs from different code.** Re-run the old ones with "
            "`rerun=stale` on the same sweep command."
        )
    return text


def package_mixes(packages: pd.Series) -> dict[str, list[str]]:
    """{package: its versions} for every package recorded at more than one version among a table's runs
    (``packages`` holds collect's "name version, ..." lines); runs of different optimizers recording
    different packages are no mix."""
    seen: dict[str, set[str]] = {}
    for line in packages.dropna().unique():
        if line == "unrecorded":
            seen.setdefault("(any)", set()).add("unrecorded")
            continue
        for item in line.split(", "):
            name, _, version = item.partition(" ")
            seen.setdefault(name, set()).add(version)
    if "(any)" in seen and len(seen) > 1:  # some runs recorded versions and some did not
        seen["(any)"].add("recorded")
    return {k: sorted(v) for k, v in sorted(seen.items()) if len(v) > 1}


def packages_note(packages: Optional[pd.Series]) -> str:
    """A warning when a table's runs were computed with different versions of a package."""
    mixes = package_mixes(packages) if packages is not None else {}
    if not mixes:
        return ""
    listed = "; ".join(f"{k} {' / '.join(v)}" for k, v in mixes.items())
    return (
        f" **Warning: this table mixes package versions:** {listed}. Re-run the old ones with `rerun=stale` "
        "on the same sweep command."
    )


def hardware_note(hardware: Optional[pd.Series]) -> str:
    """A warning when a table's runs ran on different hardware (their numbers may differ slightly)."""
    if hardware is None or hardware.nunique() <= 1:
        return ""
    counts = ", ".join(f"`{h}` ({n} runs)" for h, n in hardware.value_counts().items())
    return f" **Warning: this table mixes hardware:** {counts}; timings are never pooled across it."


def write_final_tables(
    table: pd.DataFrame,
    out: Path,
    protocol: str,
    versions: pd.Series,
    hardware: Optional[pd.Series] = None,
    packages: Optional[pd.Series] = None,
) -> None:
    base = protocol.partition("+")[0]
    what = (
        "accuracy on the training subset (as the paper)"
        if base == "paper"
        else "test accuracy"
        if base == "rigorous"
        else "validation accuracy"
    )
    datasets, optimizers, rows = _wide(table, ("**", "**"))
    md = (
        section_heading(f"Final {what}, %, mean ± std over seeds", protocol) + "\n"
        "Each cell: the mean over its counted runs, a diverged run at chance (100 / classes), then "
        "(done / attempted) and every run that is not done; `chance`: every counted run diverged; `–`: "
        f"none finished. Best per row in bold. {code_versions_note(versions)}{packages_note(packages)}"
        f"{hardware_note(hardware)}\n\n"
        + markdown_table(["dataset"] + optimizers, [[d] + r for d, r in zip(datasets, rows)])
    )
    write_text(out / "table_final.md", md)
    counts = ["attempted", "done", "diverged", *UNCOUNTED]
    csv_table = table.assign(protocol=protocol)[
        ["protocol", "dataset", "optimizer", "mean", "std", "n", "best", *counts]
    ]
    write_text(out / "table_final.csv", csv_table.to_csv(index=False))
    _, _, tex_rows = _wide(table, (r"\textbf{", "}"))
    tex = [
        r"\begin{tabular}{l" + "r" * len(optimizers) + "}",
        r"\toprule",
        " & ".join(["dataset"] + [o.replace("_", r"\_") for o in optimizers]) + r" \\",
        r"\midrule",
    ]
    tex += [
        " & ".join([d] + [c.replace("±", r"$\pm$").replace("_", r"\_") for c in r]) + r" \\"
        for d, r in zip(datasets, tex_rows)
    ]
    tex += [r"\bottomrule", r"\end{tabular}"]
    write_text(
        out / "table_final.tex",
        f"% Final {what} (%), {section_title(protocol)} (section {protocol})\n" + "\n".join(tex) + "\n",
    )


def write_overhead(runs: pd.DataFrame, out: Path, baseline: str) -> dict:
    """overhead.md: each optimizer's median step time over the baseline's, within one hardware only."""
    groups = runs.groupby("hardware") if "hardware" in runs else [("unrecorded", runs)]
    rows, data = [], {}
    for hardware, g in groups:
        med = g.groupby("optimizer")["step_time_ms"].median()
        ref = med.get(baseline, np.nan)
        for opt in _ordered(med.index, OPTIMIZER_ORDER):
            ratio = med[opt] / ref if ref and not math.isnan(ref) else float("nan")
            if len(groups) == 1:
                data[opt] = {"step_time_ms": float(med[opt]), f"ratio_to_{baseline}": float(ratio)}
            else:
                data[f"{opt} on {hardware}"] = {"step_time_ms": float(med[opt]), f"ratio_to_{baseline}": float(ratio)}
            rows.append([opt, hardware, f"{med[opt]:.2f}", "–" if math.isnan(ratio) else f"{ratio:.2f}x"])
    text = (
        f"# Optimizer step time relative to {baseline}\n\nMedian over runs of each run's median "
        "`optimizer.step()` time, as recorded during training (same machine and settings as the runs; "
        "see scripts/bench_step.py for controlled measurements). Ratios compare runs on the same hardware "
        "only.\n\n" + markdown_table(["optimizer", "hardware", "step (ms)", f"vs {baseline}"], rows)
    )
    write_text(out / "overhead.md", text)
    return data
