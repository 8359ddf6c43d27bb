"""``index.html``: the report as one page to look at, offline, opened from disk.

Written by ``build_report`` beside the other files, from the same data (the section summaries that go
into ``summary.json``, the runs of ``runs.parquet``, the epochs the PNG figures draw): it computes no new
number. plotly.js (its basic bundle, ``vendor/``) is copied into the report folder once (no CDN, no server); the
figures are Plotly's, the tables plain HTML with a few lines of script to sort them by a column.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pandas as pd

from ..atomic import write_bytes, write_text
from .collect import DATASET_ORDER, OPTIMIZER_ORDER, _ordered
from .page_assets import RUNS_JS, SORT_JS, STYLE
from .page_figures import convergence_figure, fragment, iqm_figure, phase_figure, profile_figure
from .paths import section_title
from .tables import _cell, package_mixes
from .time_to_target import TAU_MAX

__all__ = ["write_page", "PLOTLY_JS"]

PLOTLY_JS = "plotly-basic.min.js"  # plotly.js's basic bundle (scatter), vendored: vendor/README.md
# The statistics tables shown inline (csv -> table), the figures shown as images, the verdicts quoted.
_INLINE = (
    ("stats.csv", "Paired by seed: the candidate minus each baseline"),
    ("aggregate.csv", "Across datasets: scores, IQM, ranks"),
    ("time_to_target.csv", "Time to target"),
    ("tuned_table.csv", "Tuned re-runs"),
    ("tunability.csv", "Tunability: expected best of k trials"),
    ("self_tuning.csv", "Self-tuning"),
)
_VERDICTS = ("aggregate.md", "lr_sensitivity.md", "tunability.md", "self_tuning.md", "time_to_target.md")
_IMAGES = ("critical_difference.png", "lr_sensitivity.png", "tunability.png", "self_tuning.png")


def write_page(out: Path) -> Path:
    """Write ``out/index.html`` (and plotly.js once) from the report folder's own
    ``summary.json`` and runs table; return the page's path."""
    out = Path(out)
    summary = json.loads((out / "summary.json").read_text())
    runs = _read_runs(out, summary)
    _copy_plotly(out)
    toc, body = [("top", "Overview")], [_overview(summary)]
    for n, section in enumerate(sorted(summary["protocols"])):
        anchor = f"s{n}"
        toc.append((anchor, section_title(section)))
        body.append(_section(out, section, anchor, summary["protocols"][section]))
    toc += [("runs", f"Runs ({len(runs)})"), ("provenance", "Provenance"), ("files", "Files")]
    body += [_runs(runs), _provenance(summary, runs), _files(out)]
    nav = "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in toc)
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>Report: {html.escape(summary['results_dir'])}</title><style>{STYLE}</style>"
        f"<script src='{PLOTLY_JS}'></script></head><body><nav><b>Contents</b>{nav}</nav><main>"
        + "\n".join(body)
        + f"</main><script>{SORT_JS}{RUNS_JS}</script></body></html>\n"
    )
    path = out / "index.html"
    write_text(path, page)
    return path


def _read_runs(out: Path, summary: dict) -> pd.DataFrame:
    name = summary.get("runs_table") or "runs.parquet"
    path = out / name
    if not path.exists():
        return pd.DataFrame(columns=["run_dir", "status"])
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def _copy_plotly(out: Path) -> None:
    """plotly.js beside the page, once per report folder (again only when the vendored file changed)."""
    import filecmp

    source = Path(__file__).parent / "vendor" / PLOTLY_JS
    target = out / PLOTLY_JS
    if not (target.exists() and filecmp.cmp(source, target, shallow=False)):
        write_bytes(target, source.read_bytes())


def _overview(summary: dict) -> str:
    counted = ", ".join(f"{n} {s}" for s, n in summary.get("counted_runs", {}).items())
    parts = [
        f"<h1 id='top'>Report for <code>{html.escape(summary['results_dir'])}</code></h1>",
        f"<p>{summary['complete_runs']} counted run(s) ({counted}); {len(summary['excluded'])} without a number. "
        "A diverged run counts at chance accuracy; failed, interrupted and running runs get no number but every "
        "table cell counts them.</p>",
    ]
    if summary.get("command"):
        parts.append(f"<p>Command: <code>{html.escape(summary['command'])}</code></p>")
    if summary.get("excluded"):
        rows = [[e["run_dir"], e["status"], e.get("reason", "")] for e in summary["excluded"]]
        parts.append("<h3>Runs without a number</h3>" + _table(["run", "status", "reason"], rows))
    return "\n".join(parts)


def _section(out: Path, section: str, anchor: str, part: dict) -> str:
    folder = out / section
    title = f"<h2 id='{anchor}'>{html.escape(section_title(section))}</h2>"
    parts = [title, f"<p class='key'>{html.escape(section)}</p>", *_warnings(part)]
    if part.get("table"):
        seeds = max((int(r.get("n") or 0) for r in part["table"]), default=0)
        what = "mean ± std over seeds" if seeds > 1 else "one seed each"
        parts.append(f"<h3>Final accuracy, {what} (done / attempted)</h3>" + _final_table(part["table"]))
    curves = pd.DataFrame(part.get("curves") or [])
    if not curves.empty:
        parts.append(
            "<h3>Convergence</h3><p>Hover for values; click a legend entry to hide an optimizer; the menus "
            "switch the metric and the x axis.</p>"
        )
        for k, dataset in enumerate(_ordered(curves["dataset"], DATASET_ORDER)):
            parts.append(fragment(convergence_figure(curves, dataset), f"{anchor}-conv{k}"))
    elif (folder / "convergence.png").exists():  # a report written before summary.json kept the curves
        parts.append(f"<h3>Convergence</h3><img src='{section}/convergence.png' alt='convergence' loading='lazy'>")
    stats = []
    fig = iqm_figure((part.get("aggregate") or {}).get("table") or [])
    if fig is not None:
        stats.append(fragment(fig, f"{anchor}-iqm"))
    fig = profile_figure((part.get("time_to_target") or {}).get("ratios") or {}, TAU_MAX)
    if fig is not None:
        stats.append(fragment(fig, f"{anchor}-profile"))
    for name, what in _INLINE:
        if (folder / name).exists():
            stats.append(f"<h4>{what} (<a href='{section}/{name}'>{name}</a>)</h4>" + _csv_table(folder / name))
    for name in _IMAGES:
        if (folder / name).exists():
            stats.append(f"<h4>{name}</h4><img src='{section}/{name}' alt='{name}' loading='lazy'>")
    for name in _VERDICTS:
        verdict = _verdict(folder / name)
        if verdict:
            stats.append(f"<h4>Verdict ({name})</h4>{verdict}")
    if stats:
        parts.append("<h3>Statistics</h3>" + "\n".join(stats))
    fig = phase_figure(curves) if not curves.empty else None
    if fig is not None:
        parts.append("<h3>ThermoLion's phase diagnostics</h3>" + fragment(fig, f"{anchor}-phase"))
    elif (folder / "thermolion_phase.png").exists():
        parts.append(f"<h3>ThermoLion's phase diagnostics</h3><img src='{section}/thermolion_phase.png' alt='phase'>")
    return "\n".join(parts)


def _warnings(part: dict) -> list[str]:
    out = []
    if len(part.get("code_versions") or {}) > 1:
        out.append(f"code versions {', '.join(part['code_versions'])}")
    out += [f"{name} versions {', '.join(v)}" for name, v in (part.get("package_mixes") or {}).items()]
    return [f"<div class='warn'>Warning: this section mixes {html.escape(w)}.</div>" for w in out]


def _final_table(records: list[dict]) -> str:
    table = pd.DataFrame(records)
    datasets = _ordered(table["dataset"], DATASET_ORDER)
    optimizers = _ordered(table["optimizer"], OPTIMIZER_ORDER)
    head = "".join(f"<th>{html.escape(o)}</th>" for o in ["dataset", *optimizers])
    rows = []
    for d in datasets:
        cells = [f"<td>{html.escape(d)}</td>"]
        for o in optimizers:
            hit = table[(table["dataset"] == d) & (table["optimizer"] == o)]
            if hit.empty:
                cells.append("<td>–</td>")
                continue
            r = hit.iloc[0]
            value = "" if pd.isna(r["mean"]) else f"{r['mean']:.6g}"
            best = " class='best'" if r["best"] else ""
            cells.append(
                f"<td{best} data-v='{value}' data-dataset='{html.escape(d)}' data-optimizer='{html.escape(o)}'>"
                f"{html.escape(_cell(r) if 'attempted' in r else _old_cell(r))}</td>"
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return _wide(
        f"<table class='sortable final'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>",
        len(optimizers) + 1,
    )


def _old_cell(r) -> str:
    """A cell of a summary.json written before the counts were kept: mean ± std (n)."""
    std = "" if pd.isna(r.get("std")) else f" ± {r['std']:.2f}"
    return f"{r['mean']:.2f}{std} (n={int(r['n'])})"


def _table(header: list[str], rows: list[list], cls: str = "sortable") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return _wide(f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>", len(header))


WIDE_COLUMNS = 8


def _wide(table: str, columns: int) -> str:
    """A table in its own horizontally scrolling box, with a hint when it is wide enough to need one."""
    hint = "<p class='hint'>Wide table: scroll it sideways.</p>" if columns > WIDE_COLUMNS else ""
    return f"{hint}<div class='scroll'>{table}</div>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return "–" if pd.isna(value) else f"{value:.4g}"
    return "" if value is None else str(value)


INLINE_ROWS = 200  # a longer table (one row per run) is linked, not drawn: runs.parquet and its CSV have it


def _csv_table(path: Path) -> str:
    frame = pd.read_csv(path)
    if len(frame) > INLINE_ROWS:
        return f"<p>{len(frame)} rows: open <a href='{path.parent.name}/{path.name}'>{path.name}</a>.</p>"
    return _table(list(frame.columns), frame.itertuples(index=False, name=None))


def _verdict(path: Path) -> str:
    """The bullet points under a file's verdict heading, as HTML (backticks and bold kept)."""
    if not path.exists():
        return ""
    text = path.read_text()
    match = re.search(r"^#+ [^\n]*[Vv]erdict[^\n]*\n(.*?)(?=^#|\Z)", text, re.M | re.S)
    if not match:
        return ""
    lines = [ln.strip() for ln in match.group(1).splitlines() if ln.strip()]
    items = "".join(f"<li>{_inline(ln.lstrip('- '))}</li>" for ln in lines)
    return f"<ul>{items}</ul>"


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _runs(runs_table: pd.DataFrame) -> str:
    """Every run: its status, folder and numbers, and on a click the settings in which it differs from
    the runs' common config (shown once). The rows are a JSON array drawn by the page's script, 500 at a
    time, so that a report of 10,000 runs opens in seconds."""
    config_cols = [c for c in runs_table.columns if c.startswith("config.")]
    common = {}
    for c in config_cols:
        values = runs_table[c].dropna()
        if len(values) and (values == values.iloc[0]).all() and len(values) == len(runs_table):
            common[c[7:]] = values.iloc[0]
    shown = [
        c for c in ("dataset", "optimizer", "seed", "final_eval_acc", "best_eval_acc", "epochs") if c in runs_table
    ]
    rows = []
    for r in runs_table.to_dict(orient="records"):
        own = {k[7:]: v for k, v in r.items() if k in config_cols and k[7:] not in common and not _missing(v)}
        cells = [_fmt(r.get(c)) for c in shown]
        rows.append([str(r["run_dir"]), str(r["status"]), *cells, _fmt(r.get("reason") or r.get("error")), own])
    head = "".join(f"<th data-col='{i}'>{h}</th>" for i, h in enumerate(["run", "status", *shown, "reason", "config"]))
    statuses = "".join(f"<option>{html.escape(s)}</option>" for s in sorted(runs_table["status"].astype(str).unique()))
    data = json.dumps(rows, default=str).replace("</", "<\\/")
    return (
        "<h2 id='runs'>Runs</h2><p>Every run folder, complete or not (<a href='runs.parquet'>runs.parquet</a> "
        "has every column). Click a header to sort, a row's <i>config</i> for the settings in which it differs "
        "from the common config below.</p>"
        f"<p>status <select id='runs-status'><option value=''>all</option>{statuses}</select> "
        "<span id='runs-count'></span> <button id='runs-more'>show 500 more</button></p>"
        f"<table class='runs'><thead><tr>{head}</tr></thead><tbody id='runs-body'></tbody></table>"
        "<details><summary>the config common to every run</summary>"
        f"<pre>{html.escape(json.dumps(common, indent=1, default=str))}</pre></details>"
        f"<script type='application/json' id='runs-data'>{data}</script>"
    )


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _provenance(summary: dict, runs: pd.DataFrame) -> str:
    parts = ["<h2 id='provenance'>Provenance</h2>"]
    if summary.get("command"):
        parts.append(f"<p>Report command: <code>{html.escape(summary['command'])}</code></p>")
    commands = runs["env.hydra"].dropna().unique() if "env.hydra" in runs else []
    for column, title in (("code_version", "code versions"), ("hardware", "hardware"), ("packages", "packages")):
        if column not in runs or runs.empty:
            continue
        rows = [[v, n] for v, n in runs[column].value_counts().items()]
        if column == "packages":
            mixes = package_mixes(runs[column])
            warn = "".join(
                f"<div class='warn'>Warning: {html.escape(k)} at {', '.join(v)}.</div>" for k, v in mixes.items()
            )
        else:
            warn = f"<div class='warn'>Warning: the runs mix {title}.</div>" if len(rows) > 1 else ""
        parts.append(f"<h3>{title.capitalize()}</h3>{warn}" + _table([title, "runs"], rows))
    env = [c for c in ("env.torch", "env.python", "env.device", "env.cpu_count", "env.git_commit") if c in runs]
    if env:
        combos = runs[env].astype(str).value_counts().reset_index()
        parts.append("<h3>Environment</h3>" + _table([*env, "runs"], combos.itertuples(index=False, name=None)))
    if len(commands):
        parts.append("<h3>Hydra version</h3>" + _table(["env.hydra"], [[c] for c in commands]))
    return "\n".join(parts)


def _files(out: Path) -> str:
    links = []
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.suffix in (".csv", ".md", ".tex", ".png", ".pdf", ".parquet", ".json"):
            rel = path.relative_to(out).as_posix()
            links.append(f"<li><a href='{html.escape(rel)}'>{html.escape(rel)}</a></li>")
    return f"<h2 id='files'>Files</h2><ul>{''.join(links)}</ul>"


def main(argv=None) -> int:
    """``python -m runners.report.page REPORT_DIR``: (re)write the page of an existing report folder."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m runners.report.page", description=main.__doc__)
    ap.add_argument("report_dir", type=Path)
    args = ap.parse_args(argv)
    if not (args.report_dir / "summary.json").exists():
        print(
            f"page: {args.report_dir} has no summary.json; make the report first (python -m runners.report)",
            file=sys.stderr,
        )
        return 2
    print(f"page: {write_page(args.report_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
