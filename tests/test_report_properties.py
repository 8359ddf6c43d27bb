"""The report's verdicts as properties of every run set (issue 42): random sets over datasets x optimizers x
seeds x statuses x sections, checked against metamorphic rules rather than examples.

* failing, diverging or removing one of X's runs never raises X's score (mean, median, IQM), its P, its rank
  or its time-to-target score;
* reordering runs changes no number; renaming run folders changes no number; copying a section under
  another name changes no count of the first;
* every number of the page's tables is in the CSV and summary.json, and every file the page links exists
  (checked on each report the rebuild rule builds);
* a report rebuilt from its own tables equals the report built from the run folders, byte for byte.

Hypothesis prints the failing example and the seed to reproduce it (``print_blob``)."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from runners.report import aggregate as A
from runners.report import build_report
from runners.report import time_to_target as TT
from runners.report.blocks import grid

from .test_report import fake_run

OPTIMIZERS = ("thermolion", "adamw", "lion")
CANDIDATE, REFERENCE = "thermolion", "adamw"
CLASSES = {"d1": 10, "d2": 10, "d3": 4}
EPOCHS = 4
CELL = st.one_of(  # one (dataset, optimizer, seed) cell: a run's outcome, or no run at all
    st.tuples(st.just("done"), st.floats(0, 100, allow_nan=False).map(lambda a: round(a, 2))),
    st.just(("diverged", None)),
    st.just(("failed", None)),
    st.just(("absent", None)),
)


@st.composite
def run_sets(draw, max_datasets=3, max_seeds=3):
    datasets = list(CLASSES)[: draw(st.integers(1, max_datasets))]
    seeds = range(draw(st.integers(1, max_seeds)))
    cells = {(d, o, s): draw(CELL) for d in datasets for o in OPTIMIZERS for s in seeds}
    # at least one counted run of the candidate and of the reference, so there is something to compare
    assume(any(v[0] in ("done", "diverged") and k[1] == CANDIDATE for k, v in cells.items()))
    assume(any(v[0] in ("done", "diverged") and k[1] == REFERENCE for k, v in cells.items()))
    return cells


def frames(cells: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(runs, attempts, curves) as runners.report.collect gives them: a done run's accuracy rises
    linearly to its final value over EPOCHS; a diverged one counts at chance and has no points."""
    runs, attempts, curves = [], [], []
    for (d, o, s), (status, acc) in sorted(cells.items()):
        if status == "absent":
            continue
        name = f"{d}/{o}/seed{s}"
        attempts.append(
            {"dataset": d, "optimizer": o, "seed": s, "status": status, "run_dir": name} | {"num_classes": CLASSES[d]}
        )
        if status == "failed":
            continue
        final = acc if status == "done" else 100.0 / CLASSES[d]
        runs.append(
            {"dataset": d, "optimizer": o, "seed": s, "status": status, "final_eval_acc": final}
            | {"num_classes": CLASSES[d], "run_dir": name}
        )
        if status == "done":
            curves += [
                {"run_dir": name, "step": 10 * e, "epoch": e, "seconds": e, "eval_acc": acc * e / EPOCHS, "fine": False}
                for e in range(1, EPOCHS + 1)
            ]
    columns = ["run_dir", "step", "epoch", "seconds", "eval_acc", "fine"]
    return pd.DataFrame(runs), pd.DataFrame(attempts), pd.DataFrame(curves, columns=columns)


def verdicts(cells: dict) -> dict:
    """Every number the rules speak of, per optimizer."""
    runs, attempts, curves = frames(cells)
    result = A.cross_dataset(grid(runs, attempts), CANDIDATE, n_boot=50)
    table = result["table"].set_index("optimizer")
    ttt = TT.time_to_target(runs, curves, REFERENCE, None, attempts)
    fixed = TT.time_to_target(runs, curves, REFERENCE, 50.0, attempts)
    out = {}
    for o in table.index:
        row = table.loc[o]
        out[o] = {
            "mean": row["mean"],
            "median": row["median"],
            "iqm": row["iqm"],
            "rank": row.get("avg_rank", np.nan),
            "ttt": ttt["score"].get(o, np.nan) if ttt else np.nan,
            "ttt_fixed": fixed["score"].get(o, np.nan) if fixed else np.nan,
        }
        if o == CANDIDATE:
            out[o] |= {f"p_over_{y}": table.loc[y, "p_candidate_better"] for y in table.index if y != o}
    return out


MUTATIONS = ("fail", "diverge", "remove")


@settings(max_examples=60, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.filter_too_much])
@given(run_sets(), st.sampled_from(OPTIMIZERS), st.sampled_from(MUTATIONS), st.data())
def test_failing_diverging_or_removing_a_run_never_raises_its_optimizers_numbers(cells, x, how, data):
    mine = sorted(k for k, v in cells.items() if k[1] == x and v[0] in ("done", "diverged"))
    assume(mine)
    cell = data.draw(st.sampled_from(mine))
    worse = dict(cells)
    worse[cell] = {"fail": ("failed", None), "diverge": ("diverged", None), "remove": ("absent", None)}[how]
    d, _, seed = cell
    if how == "remove" and not any(v[0] != "absent" for k, v in worse.items() if (k[0], k[2]) == (d, seed)):
        return  # nobody else ran that seed there: the grid itself shrinks (tested below), no rule about X
    remaining = [k for k, v in worse.items() if v[0] in ("done", "diverged")]
    assume(any(k[1] == CANDIDATE for k in remaining) and any(k[1] == REFERENCE for k in remaining))
    before, after = verdicts(cells), verdicts(worse)
    if x not in after:
        return  # its only run is gone: it is no longer in the section, so it has no numbers to compare
    for name, value in before[x].items():
        new = after[x][name]
        if name == "ttt" and x == REFERENCE:
            continue  # the reference's runs set the target itself: its rule holds at a fixed target (ttt_fixed)
        if np.isnan(value) or np.isnan(new):
            continue  # not defined on one side (e.g. left out of the ranks): nothing to compare
        if name == "rank":
            assert new >= value - 1e-9, (how, cell, name, value, new)
        else:
            assert new <= value + 1e-9, (how, cell, name, value, new)


@settings(max_examples=30, deadline=None, print_blob=True)
@given(run_sets(), st.randoms(use_true_random=False))
def test_reordering_runs_changes_no_number(cells, rnd):
    runs, attempts, _ = frames(cells)
    order = list(range(len(runs)))
    rnd.shuffle(order)
    a = A.cross_dataset(grid(runs, attempts), CANDIDATE, n_boot=50)["table"]
    b = A.cross_dataset(grid(runs.iloc[order], attempts.sample(frac=1, random_state=1)), CANDIDATE, n_boot=50)
    pd.testing.assert_frame_equal(a, b["table"])


@settings(max_examples=60, deadline=None, print_blob=True)
@given(run_sets())
def test_a_seed_only_one_optimizer_ran_is_owed_by_every_other(cells):
    runs, attempts, _ = frames(cells)
    g = grid(runs, attempts)
    tried = attempts.groupby("dataset")["seed"].unique()
    assert set(g["dataset"]) == set(tried.index) and set(g["optimizer"]) == set(attempts["optimizer"])
    for (d, o), block in g.groupby(["dataset", "optimizer"]):
        assert sorted(block["seed"]) == sorted(tried[d]), (d, o)  # every seed tried there, once
        assert ((block["acc"] >= block["chance"]) & (block["acc"] <= 100)).all()
        mine = runs[(runs["dataset"] == d) & (runs["optimizer"] == o)]
        assert int(block["counted"].sum()) == len(mine)  # a miss is exactly a seed without a counted run


# ------------------------------------------------------------------ whole reports from run folders
def write_folders(root: Path, cells: dict, section: str = "") -> None:
    """Run folders of ``cells``; a section other than the default gets its settings in the folder name."""
    for (d, o, s), (status, acc) in cells.items():
        if status == "absent":
            continue
        name = f"{o}+{section}" if section else o
        run_dir = fake_run(root, DATASET_NAME[d], name, s, acc if acc is not None else 50.0, epochs=EPOCHS)
        if status in ("diverged", "failed"):
            info = json.loads((run_dir / "run.json").read_text())
            info.update(status=status, **({"diverged_at_epoch": 2} if status == "diverged" else {}))
            (run_dir / "run.json").write_text(json.dumps(info))
            if status == "diverged":
                (run_dir / "DONE").write_text("diverged")
            else:
                (run_dir / "DONE").unlink()


DATASET_NAME = {"d1": "mnist", "d2": "fashionmnist", "d3": "cifar10"}
SMALL = run_sets(max_datasets=3, max_seeds=2)
# Whole reports take ~3 s each on 2 cores: a few examples per rule, marked slow (make test runs them).
# No shrinking: at ~3 s a report it runs for minutes; the failure prints its example and its blob.
FEW = settings(
    max_examples=3,
    deadline=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
@FEW
@given(SMALL)
def test_a_report_rebuilt_from_its_own_tables_equals_the_one_from_run_folders(tmp_path_factory, cells):
    root = tmp_path_factory.mktemp("r")
    write_folders(root / "results", cells)
    summary = build_report(root / "results", root / "first")
    _check_page(root / "first", summary)
    shutil.copytree(root / "first", root / "again")
    build_report(root / "again", root / "again")  # in place, from runs.parquet, epochs.parquet
    first, again = _files(root / "first"), _files(root / "again")
    assert sorted(first) == sorted(again)
    assert [n for n in first if first[n] != again[n]] == []


@pytest.mark.slow
@FEW
@given(SMALL, st.randoms(use_true_random=False))
def test_renaming_run_folders_and_copying_a_section_change_no_number_of_the_first(tmp_path_factory, cells, rnd):
    root = tmp_path_factory.mktemp("r")
    write_folders(root / "results", cells)
    first = build_report(root / "results", root / "first")
    renamed = root / "renamed"
    shutil.copytree(root / "results", renamed)
    seeds = sorted(p for p in renamed.rglob("seed*") if p.is_dir())
    names = [f"run{k}" for k in range(len(seeds))]
    rnd.shuffle(names)
    for path, name in zip(seeds, names):
        path.rename(path.with_name(name))
    write_folders(renamed, cells, section="copy=1")  # the same runs again, as another section
    second = build_report(renamed, root / "second")
    assert set(second["protocols"]) == {"paper", "paper+copy=1"}
    for key in ("table", "aggregate", "time_to_target"):
        assert _numbers(first["protocols"]["paper"][key]) == _numbers(second["protocols"]["paper"][key]), key
    for name in ("table_final.csv", "aggregate.csv", "time_to_target.csv"):
        if (root / "first" / "paper" / name).exists():
            assert (root / "first/paper" / name).read_bytes() == (root / "second/paper" / name).read_bytes(), name


def _numbers(value) -> list:
    """Every number in a summary part, in order, without run folder names."""
    text = json.dumps(value, sort_keys=True, default=str)
    return re.findall(r"-?\d+\.\d+(?:e-?\d+)?|Infinity|NaN", text)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("href", "src") and v and not v.startswith(("#", "http", "data:", "javascript:")):
                self.links.append(v)


def _check_page(report: Path, summary: dict) -> None:
    """Every file index.html links exists; every number of its tables is the CSV's and summary.json's."""
    page = (report / "index.html").read_text()
    parser = _Links()
    parser.feed(page)
    broken = [link for link in parser.links if not (report / link.split("#")[0]).is_file()]
    assert parser.links and not broken, broken
    for section, part in summary["protocols"].items():
        if "aggregate" not in part:
            continue
        agg = pd.read_csv(report / section / "aggregate.csv")
        assert [round(v, 9) for v in agg["iqm"]] == [round(r["iqm"], 9) for r in part["aggregate"]["table"]]
        for value in agg["iqm"]:  # the page draws the CSV's table at 4 significant digits
            assert f"<td>{value:.4g}</td>" in page, (section, value)
        table = pd.read_csv(report / section / "table_final.csv")
        for value in table["mean"].dropna():  # each cell carries its value for sorting
            assert f"data-v='{value:.6g}'" in page, (section, value)
