# Two commands work on a fresh machine: `make run` and `make test` (both set up .venv first).
PY      := .venv/bin/python
STAMP   := .venv/.installed
DATA_ROOT ?= $(abspath ../shared/data)
export DATA_ROOT

RESULTS ?= outputs
OUT     ?= $(RESULTS)/report

.PHONY: setup run lint test test-fast test-slurm test-browser test-gpu report bench bench-gpu clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,tracking]"
	touch $(STAMP)

# The main job on the embedded default dataset (scikit-learn's digits), fully offline.
run: $(STAMP)
	$(PY) run.py -m optimizer=thermolion,adamw,lion

# The lint gate first (ruff check and format, configured in pyproject.toml), then the suite.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -q -m "not slurm and not browser"

# The inner loop (under 3 minutes on 2 cores): the lint, then every test not marked slow (end-to-end runs,
# subprocesses, servers, anything over ~2 s). `make test` stays the whole suite and what CI runs.
test-fast: lint
	$(PY) -m pytest -q -m "not slow and not slurm and not browser and not gpu"

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
