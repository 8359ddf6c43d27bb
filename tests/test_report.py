"""Reports from synthetic results with known numbers, and from a real tiny sweep."""

import dataclasses
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from runners import report as R
from runners.atomic import write_csv, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]

# final eval accuracy per (dataset, optimizer) for seeds 0, 1, 2
FINAL = {
    ("mnist", "thermolion"): [99.0, 98.0, 97.5],
    ("mnist", "adam"): [96.0, 95.5, 94.0],  # diffs 3, 2.5, 3.5
    ("fashionmnist", "thermolion"): [86.0, 87.0, 85.5],
    ("fashionmnist", "adam"): [89.0, 89.5, 89.0],  # -3, -2.5, -3.5
    ("cifar10", "thermolion"): [60.0, 58.0, 59.5],
    ("cifar10", "adam"): [59.0, 59.0, 59.0],  # 1, -1, 0.5
}


def fake_run(root: Path, dataset, optimizer, seed, final_acc, status="done", done=True, epochs=3):
    run_dir = root / "paper" / dataset / optimizer / f"seed{seed}"
    rows = [
        {
            "epoch": e,
            "train_loss": 2.0 / e,
            "train_acc": final_acc - (epochs - e),
            "lr": 1e-3,
            "eval_loss": 1.5 / e,
            "eval_acc": final_acc - 2 * (epochs - e),
            "epoch_time_s": 1.0,
            "step_time_ms": 10.0 if optimizer == "adam" else 13.0,
            **(
                {
                    "gate_mean": 0.3 + 0.1 * e,
                    "gas_fraction": 0.8 - 0.1 * e,
                    "alignment_rate": 0.5,
                    "update_over_lr": 1.2,
                    "temperature": 0.99 ** (5 * e),
                }
                if optimizer == "thermolion"
                else {}
            ),
        }
        for e in range(1, epochs + 1)
    ]
    write_csv(run_dir / "metrics.csv", rows)
    write_json(
        run_dir / "run.json",
        {
            "status": status,
            "config": {"protocol": "paper", "seed": seed, "optimizer": {"name": optimizer}, "data": {"name": dataset}},
            "sizes": {"eval_split": "train"},
            "data_notes": [],
        },
    )
    if done:
        write_text(run_dir / "DONE", status)
    return run_dir


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    for (dataset, optimizer), accs in FINAL.items():
        for seed, acc in enumerate(accs):
            fake_run(root, dataset, optimizer, seed, acc)
    fake_run(root, "mnist", "thermolion", 3, 55.0, status="diverged")  # counts at chance (10%), not 55
    fake_run(root, "mnist", "adam", 3, 11.0, status="running", done=False)  # killed mid-run: interrupted
    fake_run(root, "cifar10", "adam", 4, 12.0, status="failed", done=False)
    return root


def test_holm_by_hand():
    assert R.holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])
    out = R.holm([0.2, float("nan"), 0.01])
    assert out[0] == pytest.approx(0.2) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)


@pytest.mark.slow
def test_table_cells_stats_and_win_counts_match_hand_computation(results, tmp_path):
    out = tmp_path / "report"
    summary = R.build_report(results, out)
    assert summary["complete_runs"] == 19  # 18 done + 1 diverged, which is a result
    assert sorted(e["status"] for e in summary["excluded"]) == ["failed", "interrupted"]

    table = pd.read_csv(out / "paper" / "table_final.csv")
    cell = table[(table.dataset == "mnist") & (table.optimizer == "thermolion")].iloc[0]
    with_chance = [99.0, 98.0, 97.5, 10.0]  # the diverged seed at chance, 100 / 10 classes
    assert cell["mean"] == pytest.approx(statistics.mean(with_chance))
    assert cell["std"] == pytest.approx(statistics.stdev(with_chance))
    assert (cell["n"], cell["attempted"], cell["done"], cell["diverged"]) == (4, 4, 3, 1) and not cell["best"]
    adam = table[(table.dataset == "mnist") & (table.optimizer == "adam")].iloc[0]
    assert (adam["n"], adam["attempted"], adam["interrupted"]) == (3, 4, 1) and adam["best"]
    md = (out / "paper" / "table_final.md").read_text()
    assert "| dataset | adam | thermolion |" in md  # the paper's optimizer order
    # adam: mean 95.1667, std sqrt(13/12); thermolion with its diverged seed at chance
    assert "| mnist | **95.17 ± 1.04 (3/4, 1 interrupted)** | 76.12 ± 44.09 (3/4, 1 diverged) |" in md
    assert "| fashionmnist | **89.17 ± 0.29 (3/3)** | 86.17 ± 0.76 (3/3) |" in md
    assert "| cifar10 | 59.00 ± 0.00 (3/4, 1 failed) | **59.17 ± 1.04 (3/3)** |" in md
    assert md.index("| mnist") < md.index("| fashionmnist") < md.index("| cifar10")  # the paper's order

    stats = pd.read_csv(out / "paper" / "stats.csv").set_index("dataset")
    # paired t with 2 degrees of freedom: p = 1 - t / sqrt(t^2 + 2), t = mean/(sd/sqrt(3))
    t = 3.0 / (0.5 / math.sqrt(3))
    p_hand = 1 - t / math.sqrt(t * t + 2)
    assert stats.loc["mnist", "mean_diff"] == pytest.approx(3.0)
    assert stats.loc["mnist", "p_ttest"] == pytest.approx(p_hand, rel=1e-6)
    assert stats.loc["fashionmnist", "p_ttest"] == pytest.approx(p_hand, rel=1e-6)
    expected_holm = R.holm(stats["p_ttest"].to_numpy())
    assert stats["p_ttest_holm"].to_numpy() == pytest.approx(expected_holm)
    assert stats.loc["mnist", "p_ttest_holm"] == pytest.approx(3 * p_hand, rel=1e-6)
    # 3 seeds: Student's t interval, 3 ± t(0.975, 2) * 0.5 / sqrt(3), t(0.975, 2) = 4.302653 (tables)
    half = 4.302653 * 0.5 / math.sqrt(3)
    assert stats.loc["mnist", ["ci_low", "ci_high"]].tolist() == pytest.approx([3 - half, 3 + half], rel=1e-6)
    assert stats.loc["mnist", "ci_method"] == "t"
    assert stats.loc["mnist", "p_wilcoxon"] == pytest.approx(0.25)  # exact: 3 positive ranks, 2/2^3
    assert stats["outcome"].to_dict() == {"mnist": "win", "fashionmnist": "loss", "cifar10": "tie"}
    assert summary["protocols"]["paper"]["win_tie_loss"] == {"adam": {"win": 1, "tie": 1, "loss": 1, "untested": 0}}
    assert summary["protocols"]["paper"]["overhead"]["thermolion"]["ratio_to_adam"] == pytest.approx(1.3)
    index = (out / "README.md").read_text()
    assert "| paper/mnist/thermolion/seed3 | ? |" in index  # diverged, counted at chance
    assert "| paper/mnist/adam/seed3 | interrupted |" in index and "| paper/cifar10/adam/seed4 | failed |" in index
    assert json.loads((out / "summary.json").read_text())["complete_runs"] == 19


def test_paper_comparison_states_whether_claims_reproduced(tmp_path):
    root = tmp_path / "results"
    for seed in range(2):
        fake_run(root, "gtsrb", "thermolion", seed, 70.0 + seed)
        fake_run(root, "gtsrb", "adam", seed, 72.0 + seed)
    R.build_report(root, tmp_path / "out")
    text = (tmp_path / "out" / "paper_comparison.md").read_text()
    assert "| gtsrb | thermolion | 87.98 | 70.50 ± 0.71 (2/2) | -17.48 |" in text
    assert "gtsrb: paper ThermoLion − Adam = +20.60 points; ours -2.00 (n=2): **not reproduced**" in text
    assert "cifar10: not run here" in text


@pytest.mark.slow
def test_no_complete_runs_is_a_clear_error_and_exit_code(tmp_path):
    root = tmp_path / "results"
    fake_run(root, "mnist", "adam", 0, 50.0, status="failed", done=False)
    proc = subprocess.run(
        [sys.executable, "-m", "runners.report", str(root)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "no finished runs under" in proc.stderr and "(1 failed;" in proc.stderr and "runners.status" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_end_to_end_sweep_then_report(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "run.py",
            "-m",
            f"results_dir={tmp_path}",
            "optimizer=thermolion,adamw",
            "seed=0,1",
            "data.image_size=16",
            "trainer.epochs=2",
            "trainer.progress=off",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "report"  # written by the end-of-sweep callback
    assert f"report written to {out}" in proc.stdout
    proto = out / "rigorous+epochs=2,image_size=16"  # non-default settings: a section of their own
    for name in (
        "table_final.csv",
        "table_final.md",
        "table_final.tex",
        "stats.csv",
        "stats.md",
        "convergence.png",
        "convergence.pdf",
        "thermolion_phase.png",
        "overhead.md",
    ):
        assert (proto / name).stat().st_size > 0, name
    for name in ("summary.json", "README.md"):
        assert (out / name).exists()
    assert not (out / "paper_comparison.md").exists()  # no paper-protocol runs of the paper's datasets here
    readme = (out / "README.md").read_text()
    assert "Command: `python run.py -m results_dir=" in readme and "optimizer=thermolion,adamw" in readme
    overhead = (proto / "overhead.md").read_text()  # the one default reference, present in this sweep
    assert "relative to adamw" in overhead and "| thermolion |" in overhead and "–" not in overhead.split("---")[-1]
    for png in ("convergence.png", "thermolion_phase.png"):
        with Image.open(proto / png) as img:
            img.verify()
        with Image.open(proto / png) as img:
            assert img.width >= 400 and img.height >= 300
    lines = (proto / "table_final.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| dataset"))
    assert header == "| dataset | adamw | thermolion |"
    assert sum(line.startswith("| digits") for line in lines) == 1
    stats = pd.read_csv(proto / "stats.csv")
    assert stats["n"].tolist() == [2] and stats["baseline"].tolist() == ["adamw"]


@pytest.mark.slow
def test_unknown_reference_names_are_rejected_with_the_names_present(tmp_path):
    root = tmp_path / "results"
    for seed in range(2):
        fake_run(root, "mnist", "thermolion", seed, 90.0 + seed)
        fake_run(root, "mnist", "lion", seed, 85.0 + seed)
    for flag in ("--baseline", "--target-reference", "--candidate"):
        proc = subprocess.run(
            [sys.executable, "-m", "runners.report", str(root), flag, "adamw_typo"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2 and f"{flag} 'adamw_typo' has no complete runs here" in proc.stderr
        assert "['lion', 'thermolion']" in proc.stderr and "Traceback" not in proc.stderr
    summary = R.build_report(root, tmp_path / "out")  # no adamw or adam: the reference falls back to lion
    assert summary["protocols"]["paper"]["overhead"]["thermolion"]["ratio_to_lion"] > 0
    assert "relative to lion" in (tmp_path / "out" / "paper" / "overhead.md").read_text()


def test_labels_come_from_run_json_whatever_the_values_hold(tmp_path):
    """A value written with an exponent holds the folder's "+" separator (momentum_decay=1e6 is named
    1e+06): tables take the labels run.json records, never the folder name split back."""
    from runners.report.collect import collect, folder_labels
    from runners.sweep import job as T

    from .test_harness import config

    cfg = dataclasses.replace(config(tmp_path, "nadamw", epochs=1))
    cfg = dataclasses.replace(
        cfg, optimizer=dataclasses.replace(cfg.optimizer, kwargs={**cfg.optimizer.kwargs, "momentum_decay": 1e6})
    )
    result = T.train(cfg)
    assert result.status == "done" and "nadamw_momentum_decay=1e+06+epochs=1" in str(result.run_dir)
    runs = collect(tmp_path / "results").runs
    assert runs["optimizer"].tolist() == ["nadamw_momentum_decay=1e+06"]
    assert runs["protocol"].tolist() == ["rigorous+epochs=1,image_size=16"]
    # run.json written before labels were recorded: the folder is split where a setting's name follows "+"
    assert folder_labels("nadamw_momentum_decay=1e+06+epochs=1,image_size=16") == {
        "optimizer": "nadamw_momentum_decay=1e+06",
        "settings": "epochs=1,image_size=16",
    }
    assert folder_labels("adamw_lr=0.01") == {"optimizer": "adamw_lr=0.01", "settings": ""}


def test_the_hardware_column_tells_cpu_models_kernels_and_gpus_apart():
    from runners.report.collect import hardware_of
    from runners.report.tables import hardware_note

    epyc = {"device": "AMD EPYC", "device_type": "cpu", "cpu_capability": "AVX512", "torch_threads": 2}
    xeon = {**epyc, "device": "Intel Xeon", "cpu_capability": "AVX2"}
    assert hardware_of(epyc) == "AMD EPYC (AVX512, 2 threads)"
    assert hardware_of(xeon) == "Intel Xeon (AVX2, 2 threads)"
    gpu = {"device": "NVIDIA H200", "device_type": "cuda", "gpu_capability": "9.0", "cuda": "13.0", "torch_threads": 16}
    assert hardware_of(gpu) == "NVIDIA H200 (sm 9.0, CUDA 13.0)"
    assert hardware_of({"device": "cpu", "device_type": "cpu", "torch_threads": 2}) == "cpu (2 threads)"  # older runs
    note = hardware_note(pd.Series([hardware_of(epyc), hardware_of(xeon), hardware_of(xeon)]))
    assert "mixes hardware" in note and "`Intel Xeon (AVX2, 2 threads)` (2 runs)" in note


@pytest.mark.slow
def test_a_section_whose_runs_are_gone_leaves_no_file_on_the_remade_page(results, tmp_path):
    import shutil

    for run_json in (results / "paper").rglob("run.json"):  # the same runs again, as a second section
        target = results / "rigorous" / run_json.parent.relative_to(results / "paper")
        shutil.copytree(run_json.parent, target)
        info = json.loads((target / "run.json").read_text())
        info["config"]["protocol"] = "rigorous"
        write_json(target / "run.json", info)
    out = tmp_path / "report"
    R.build_report(results, out)
    assert (out / "rigorous" / "table_final.md").is_file() and "rigorous/table_final.md" in (
        out / "index.html"
    ).read_text()
    (out / "rigorous" / "notes.txt").write_text("mine")  # a file the report never writes stays
    shutil.rmtree(results / "rigorous")
    R.build_report(results, out)
    page = (out / "index.html").read_text()
    assert "rigorous/" not in page.replace("rigorous/notes.txt", "")
    assert sorted(p.name for p in (out / "rigorous").iterdir()) == ["notes.txt"]
    assert (out / "paper" / "table_final.md").is_file()


@pytest.mark.slow
def test_the_paper_comparison_reads_one_section_and_counts_each_seed_once(tmp_path):
    root = tmp_path / "results"
    for seed, (t, a) in enumerate([(99.0, 98.0), (98.5, 98.2), (99.2, 97.9)]):
        for optimizer, acc in (("thermolion", t), ("adam", a)):
            plain = fake_run(root, "mnist", optimizer, seed, acc)
            info = json.loads((plain / "run.json").read_text())
            info["labels"] = {"optimizer": optimizer, "settings": "eval_every_steps=5"}  # another section
            other = root / "paper" / "mnist" / f"{optimizer}+eval_every_steps=5" / f"seed{seed}"
            other.mkdir(parents=True)
            for f in ("metrics.csv", "DONE"):
                (other / f).write_bytes((plain / f).read_bytes())
            write_json(other / "run.json", info)
    summary = R.build_report(root, tmp_path / "report")
    rows = {(r["dataset"], r["optimizer"]): r for r in summary["paper_comparison"]}
    assert rows[("mnist", "thermolion")]["n"] == 3  # the sanity check: seeds 0-2 once, not 6
    text = (tmp_path / "report" / "paper_comparison.md").read_text()
    assert "section `paper` (the other paper-protocol sections, not pooled: `paper+eval_every_steps=5`)" in text
