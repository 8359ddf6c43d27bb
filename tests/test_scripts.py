"""The benchmark and prefetch scripts run and write what they promise (tiny settings)."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_step_writes_ratios_to_adamw_foreach(tmp_path):
    out = tmp_path / "bench.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/bench_step.py",
            "--sizes",
            "1M",
            "--repeats",
            "1",
            "--no-compiled",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    by_name = {r["optimizer"]: r for r in rows}
    assert float(by_name["adamw_foreach"]["ratio_to_adamw_foreach"]) == 1.0
    assert {"thermolion_foreach_harness", "thermolion_foreach_noise_off", "adamw_fused", "adam", "lion"} <= set(by_name)
    assert float(by_name["adam"]["ratio_to_adam"]) == 1.0 and float(by_name["adamw"]["ratio_to_adamw"]) == 1.0
    assert all(float(r["median_ms"]) > 0 for r in rows) and int(rows[0]["numel"]) == 1_070_794


@pytest.mark.slow
def test_prefetch_rejects_unknown_names_and_caches_digits(tmp_path):
    bad = subprocess.run(
        [sys.executable, "scripts/prefetch_data.py", "imagenet"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "unknown dataset(s) imagenet" in bad.stderr
    ok = subprocess.run(
        [sys.executable, "scripts/prefetch_data.py", "digits", "--cache-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "digits-all-32.pt").exists()


@pytest.mark.slow
def test_bench_gpu_breaks_a_run_down_on_the_cpu(tmp_path):
    out = tmp_path / "overhead.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/bench_gpu.py",
            "--device",
            "cpu",
            "--only",
            "breakdown",
            "--dataset",
            "digits",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in csv.DictReader(out.open())}
    parts = ["startup_and_bookkeeping", "data_load_and_copy", "build", "steps", "evaluation"]
    assert all(float(rows[f"{p}_s"]["value"]) >= 0 for p in parts)
    assert sum(float(rows[f"{p}_share"]["value"]) for p in parts) == pytest.approx(1.0, abs=0.01)
    cuda = subprocess.run(
        [sys.executable, "scripts/bench_gpu.py", "--device", "cuda"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if not __import__("torch").cuda.is_available():
        assert cuda.returncode != 0 and "no CUDA device here" in cuda.stderr


@pytest.mark.slow
def test_write_configs_help_prints_usage_and_writes_nothing():
    files = sorted((ROOT / "conf").rglob("*.yaml"))
    before = {p: p.stat().st_mtime_ns for p in files}
    proc = subprocess.run(
        [sys.executable, "scripts/write_configs.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "--check" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in files} == before
