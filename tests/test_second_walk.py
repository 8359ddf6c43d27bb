"""What a new user hit on a second walk (issue 31): verdicts that mixed search spaces, late errors,
tracebacks where one line was promised, figures whose colours collided, and the usage text."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from runners.atomic import write_csv, write_json, write_text
from runners.report import build_report
from runners.report.paths import section_title
from runners.report.tunability import write_tunability
from runners.sweep.compose import compose_run
from runners.sweep.precheck import sweep_jobs
from runners.tuning import tune

from .test_report import fake_run

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- search spaces are configurations
def _trial(root, opt, trial, space, sha, acc, seed=0):
    """A finished tuned-protocol trial run of ``opt`` drawn from ``space`` (trial 0: the defaults' folder)."""
    label = opt if trial == 0 else f"{opt}_lr={space}{trial}"
    run_dir = root / "tuned" / "digits" / label / f"seed{seed}"
    write_csv(
        run_dir / "metrics.csv",
        [{"epoch": 1, "train_loss": 0.5, "train_acc": 90.0, "lr": 1e-3, "eval_loss": 0.3, "eval_acc": acc}],
    )
    config = {
        "protocol": "tuned",
        "seed": seed,
        "trial": trial,
        "search_space": f"conf/search_spaces/{space}.yaml",
        "search_space_sha": sha,
        "optimizer": {"name": opt, "lr": 1e-3 * (trial + 1)},
        "data": {"name": "digits"},
    }
    write_json(run_dir / "run.json", {"status": "done", "sizes": {"eval_split": "val"}, "config": config})
    write_text(run_dir / "DONE", "done")


def _two_space_study(root):
    _trial(root, "thermolion", 0, "thermolion", "aaa", 70.0)
    for i, acc in ((1, 60.0), (2, 72.0)):
        _trial(root, "thermolion", i, "thermolion", "aaa", acc)
    for i, acc in ((1, 20.0), (2, 30.0)):  # the full space: trial i is another configuration
        _trial(root, "thermolion", i, "thermolion_full", "bbb", acc)


def test_the_tunability_report_gives_each_search_space_its_own_row_and_tuning_refuses_the_mix(tmp_path, capsys):
    _two_space_study(tmp_path / "r")
    from runners.report import collect_runs

    runs, _, _ = collect_runs(tmp_path / "r")
    write_tunability(runs, tmp_path, "tuned", "thermolion")
    table = pd.read_csv(tmp_path / "tunability.csv")
    best = table.groupby("optimizer")["expected_max"].max().to_dict()
    # Each space's best of 2 is its own best trial; pooled, trial i of both would average to 40 and 51.
    assert best == {"thermolion [thermolion]": 72.0, "thermolion [thermolion_full]": 30.0}
    assert set(table.groupby("optimizer")["default"].first()) == {70.0}  # the defaults join each space
    md = (tmp_path / "tunability.md").read_text()
    assert "thermolion_full.yaml" in md and "conf/search_spaces/thermolion.yaml" in md
    assert tune.main([str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "thermolion's trials come from 2 search spaces" in err[0]


def test_an_edited_space_file_is_another_space_even_under_its_old_name(tmp_path):
    root = tmp_path / "r"
    _trial(root, "adamw", 0, "adamw", "aaa", 70.0)
    _trial(root, "adamw", 1, "adamw", "aaa", 60.0)
    _trial(root, "adamw", 2, "adamw", "ccc", 10.0)  # same name, other content
    from runners.report import collect_runs

    runs, _, _ = collect_runs(root)
    write_tunability(runs, tmp_path, "tuned", "adamw")
    assert set(pd.read_csv(tmp_path / "tunability.csv")["optimizer"]) == {"adamw [adamw@aaa]", "adamw [adamw@ccc]"}


def test_a_trial_records_its_space_files_content_hash():
    run = compose_run("protocol=tuned", "optimizer=thermolion", "trial=1", "search_space=thermolion_full")
    text = (ROOT / "conf" / "search_spaces" / "thermolion_full.yaml").read_bytes()
    assert run.to_dict()["search_space_sha"] == hashlib.sha256(text).hexdigest()[:12]
    assert run.to_dict()["search_space"] == "conf/search_spaces/thermolion_full.yaml"


def test_self_tuning_keeps_the_defaults_among_the_candidates(tmp_path):
    rows = []
    for dataset, accs in {"a": [77.0, 60.0, 71.0], "b": [80.0, 50.0, 79.0]}.items():  # trial 0 wins everywhere
        rows += [
            {"dataset": dataset, "optimizer_name": "adamw", "optimizer": "adamw", "trial": t, "final_eval_acc": acc}
            for t, acc in enumerate(accs)
        ]
    runs = pd.DataFrame(rows).assign(search_space="conf/search_spaces/adamw.yaml", search_space_sha="x")
    summary = write_tunability(runs, tmp_path, "tuned", "thermolion")
    picks = {r["dataset"]: r for r in summary["self_tuning"]}
    assert {r["trial"] for r in picks.values()} == {0}  # before: trial 2, 71.0 and 79.0, below the defaults
    assert picks["a"]["self_tuned"] == picks["a"]["default"] == 77.0
    assert "defaults (val)" in (tmp_path / "tunability.md").read_text()


# ---------------------------------------------------------------------- one colour per optimizer
@pytest.fixture
def figures(monkeypatch):
    """Every saved figure's lines: {file name: {label: (colour, linestyle)}}, read from the figure objects."""
    import matplotlib.colors as mc
    from matplotlib.figure import Figure

    seen, save = {}, Figure.savefig

    def capture(fig, path, *args, **kwargs):
        lines = {}
        for ax in fig.axes:
            for line in ax.get_lines():
                if not line.get_label().startswith("_"):
                    lines[line.get_label()] = (mc.to_hex(line.get_color()), line.get_linestyle())
            seen.setdefault(Path(path).name + ":ticks", []).append([t for t in ax.get_xticks()])
            seen.setdefault(Path(path).name + ":texts", []).extend(t.get_text() for t in ax.texts)
            seen.setdefault(Path(path).name + ":text colours", {}).update(
                {t.get_text(): mc.to_hex(t.get_color()) for t in ax.texts}
            )
        seen[Path(path).name] = lines
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    return seen


OPTIMIZERS = ["adam", "adamw", "rmsprop", "lion", "muadam", "thermolion", "lookahead", "swats", "swa"]


@pytest.mark.slow
def test_every_optimizer_has_one_colour_in_every_figure_and_colours_never_collide(tmp_path, figures):
    root = tmp_path / "results"
    for dataset in ("mnist", "fashionmnist", "digits"):
        for k, opt in enumerate(OPTIMIZERS):
            fake_run(root, dataset, opt, 0, 90.0 - k)
    for k, opt in enumerate(("adamw_lr=0.0001", "adamw_lr=0.01")):  # lr variants: adamw's colour, another line
        fake_run(root, "mnist", opt, 0, 80.0 - k)
    build_report(root, tmp_path / "report")
    conv = figures["convergence.png"]
    colours = {label: c for label, (c, _) in conv.items()}
    base = {o: colours[o] for o in OPTIMIZERS}
    assert len(set(base.values())) == len(OPTIMIZERS), base
    # Adam, AdamW and SWATS draw nearly one curve under the paper's protocol: their dashes differ, so
    # the last drawn no longer hides the others.
    assert len({conv[o][1] for o in ("adam", "adamw", "swats")}) == 3
    assert colours["adamw_lr=0.0001"] == colours["adamw_lr=0.01"] == base["adamw"]
    assert len({conv[o][1] for o in ("adamw", "adamw_lr=0.0001", "adamw_lr=0.01")}) == 3  # told apart by style
    cd = figures["critical_difference.png:text colours"]  # labels "adamw (3.2)" or "(3.2) adamw"
    named = {next(w for w in text.split() if not w.startswith("(")): c for text, c in cd.items() if "(" in text}
    assert named and all(c == base[opt] for opt, c in named.items()), named  # not the default colour cycle
    for name in ("performance_profile.png", "aggregate.png"):
        for label, (colour, _) in figures[name].items():
            opt = label.split(" (")[0]
            assert colour == colours[opt], (name, label)
    ticks = [t for axes in figures["convergence.png:ticks"] for t in axes]
    assert ticks and all(float(t).is_integer() for t in ticks)  # 3 epochs: no 1.25, 1.5, ...
    phase = figures["thermolion_phase.png"]
    assert len({c for c, _ in phase.values()}) == 4  # four diagnostics, four colours (not four blacks)
    # one seed: no interval (blocks.py's rule), and the figure says why its bars are ticks
    assert any("no interval" in t and "1 run on a dataset" in t for t in figures["aggregate.png:texts"])


def test_the_index_lists_the_files_made_and_names_sections_in_words(tmp_path):
    root = tmp_path / "results"
    for dataset in ("mnist", "fashionmnist"):  # two datasets: no critical-difference diagram
        for opt in ("thermolion", "adamw", "lion"):
            fake_run(root, dataset, opt, 0, 90.0)
    out = tmp_path / "report"
    (out / "paper").mkdir(parents=True)
    (out / "paper" / "critical_difference.png").write_bytes(b"an older report's")
    build_report(root, out)
    assert not (out / "paper" / "critical_difference.png").exists()
    index = (out / "README.md").read_text()
    assert "critical_difference.png" not in index.split("- **")[1] and "`aggregate.png`" in index
    assert "**paper protocol** (`paper/`)" in index
    assert section_title("paper+epochs=2,train_subset=500") == "paper protocol, with epochs 2, train subset 500"
    assert (
        (out / "paper" / "table_final.md")
        .read_text()
        .startswith(
            "# Final accuracy on the training subset (as the paper), %, mean ± std over seeds: paper protocol\n\n"
            "Section `paper`."
        )
    )


# ---------------------------------------------------------------------- one line, not a traceback
@pytest.mark.slow
def test_ctrl_c_in_a_sweep_is_one_line_saying_the_same_command_resumes(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "run.py", "-m", "optimizer=thermolion,adamw", f"results_dir={tmp_path}"]
        + ["trainer.epochs=50", "data.image_size=16", "trainer.progress=off"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal's Ctrl-C
    )
    try:
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob("rigorous/digits/*/seed0/metrics.csv")) and time.monotonic() < deadline:
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("interrupted:") and "the same command resumes it" in lines[0]


@pytest.mark.slow
def test_a_refused_slurm_submission_is_one_line(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\necho 'sbatch: error: invalid partition specified: nope' >&2\n"
        "echo 'sbatch: error: Batch job submission failed: Invalid partition name specified' >&2\nexit 1\n"
    )
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    proc = subprocess.run(
        [sys.executable, "run.py", "-m", "hydra/launcher=slurm", "optimizer=adamw,lion", f"results_dir={tmp_path}/r"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "Invalid partition name specified" in lines[0] and "nothing was started" in lines[0]


@pytest.mark.slow
def test_a_report_to_an_unwritable_folder_is_one_line(tmp_path):
    fake_run(tmp_path / "r", "mnist", "adamw", 0, 90.0)
    (tmp_path / "afile").write_text("not a folder")
    proc = subprocess.run(
        [sys.executable, "-m", "runners.report", str(tmp_path / "r"), "--out", str(tmp_path / "afile" / "rep")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "cannot write the report" in lines[0], proc.stderr


# ---------------------------------------------------------------------- the usage text
def test_help_is_our_usage_text_naming_every_group_and_each_experiments_size():
    proc = subprocess.run(
        [sys.executable, "run.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    text = proc.stdout
    assert "search_spaces" not in text and "== Config groups ==" not in text  # not Hydra's generic dump
    for group in ("optimizer", "dataset", "model", "protocol"):
        for option in (ROOT / "conf" / group).glob("*.yaml"):
            assert option.stem in text, (group, option.stem)
    for experiment in (ROOT / "conf" / "experiment").glob("*.yaml"):
        line = next(line for line in text.splitlines() if line.strip().startswith(experiment.stem + " "))
        runs = int(line.split()[-2])
        assert runs == len(sweep_jobs([f"+experiment={experiment.stem}"])), line
    assert "python -m runners.status" in text and "dry run" in text


@pytest.mark.slow
def test_a_single_run_says_how_to_make_a_report(tmp_path):
    proc = subprocess.run(
        [sys.executable, "run.py", f"results_dir={tmp_path}", "trainer.epochs=1", "data.image_size=8"]
        + ["trainer.progress=off", "optimizer=adamw"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert f"python -m runners.report {tmp_path}" in proc.stdout
    assert json.loads(next(tmp_path.glob("rigorous/digits/*/seed0/run.json")).read_text())["status"] == "done"


def test_time_to_target_evaluations_keep_a_section_the_papers_protocol():
    from runners.report.paper import is_paper_section

    assert is_paper_section("paper") and is_paper_section("paper+eval_every_steps=5")
    assert not is_paper_section("paper+epochs=2") and not is_paper_section("paper+eval_every_steps=5,epochs=2")
    assert not is_paper_section("rigorous")
