# Two commands work on a fresh machine: `make run` and `make test` (both set up .venv first).
PY      := .venv/bin/python
STAMP   := .venv/.installed
DATA_ROOT ?= $(abspath ../shared/data)
export DATA_ROOT

RESULTS ?= outputs
OUT     ?= $(RESULTS)/report

.PHONY: setup run lint test test-fast test-compat docs test-slurm test-browser test-gpu report bench bench-gpu clean

setup: $(STAMP)

# The package asks for ranges (pyproject.toml); constraints.txt pins every version, so that two machines
# set up a month apart run the same code.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[bench,dev,docs,tracking]"
	touch $(STAMP)

# The main job on the embedded default dataset (scikit-learn's digits), fully offline.
# RUN_ARGS adds overrides: make run RUN_ARGS="trainer.epochs=1" (the docs test runs it so).
run: $(STAMP)
	$(PY) run.py -m optimizer=thermolion,adamw,lion $(RUN_ARGS)

# The lint gate first (ruff check and format, configured in pyproject.toml), then the suite.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q -m "not slurm and not browser"

# The inner loop (under 3 minutes on 2 cores): the lint, then every test not marked slow (end-to-end runs,
# subprocesses, servers, anything over ~2 s). `make test` stays the whole suite and what CI runs.
test-fast: lint
	$(PY) -m pytest -q -m "not slow and not slurm and not browser and not gpu"

# The optimizer alone, on the oldest torch it supports and the newest the registry serves: one venv each
# under .compat/ with `pip install .` (torch and nothing else) and pytest, then the optimizer's tests.
TORCH_FLOOR  ?= 2.6.0
TORCH_NEWEST ?= 2.15.0
test-compat:
	bash scripts/test_compat.sh $(TORCH_FLOOR) $(TORCH_NEWEST)

# The pages under docs/ with the API reference from the docstrings; --strict fails on a broken link.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir build/site

# Report pages in a real browser: Debian's chromium and chromium-driver (installed if missing; root).
test-browser: $(STAMP)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }
	$(PY) -m pytest -q -m browser

# Integration tests against a real single-node Slurm (installs slurm-wlm and munge if missing; root).
test-slurm: $(STAMP)
	bash scripts/slurm_local.sh start >/dev/null
	$(PY) -m pytest -q -m slurm; status=$$?; bash scripts/slurm_local.sh stop; exit $$status

# CUDA checks (fused path vs reference, end to end, kill/resume, bf16 + channels_last, deterministic).
test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu

# Per-run overhead, paper table, rigorous sweep and step ratios on the GPU -> results/bench_gpu.csv
bench-gpu: $(STAMP)
	$(PY) scripts/bench_gpu.py

# Tables, statistics and figures of a results folder: make report RESULTS=outputs OUT=results/mine
report: $(STAMP)
	$(PY) -m runners.report $(RESULTS) --out $(OUT)

bench: $(STAMP)
	$(PY) scripts/bench_step.py

clean:
	rm -rf outputs multirun .pytest_cache
