#!/usr/bin/env bash
# make test-compat: the optimizer as a user installs it, on each torch given (oldest supported, newest).
# For each version: a venv under .compat/, `pip install torch==V .` (the package asks for torch alone),
# a check that nothing of the harness came along and that a small model trains from outside the
# checkout, then the optimizer's own tests (update rule, paths, state dict, conventions, distributed).
set -euo pipefail
cd "$(dirname "$0")/.."
TESTS="tests/test_thermolion.py tests/test_thermolion_conventions.py tests/test_thermolion_paths.py
       tests/test_distributed.py tests/test_baselines.py"
[ $# -gt 0 ] || { echo "usage: $0 TORCH_VERSION [TORCH_VERSION ...]  (for instance 2.6.0 2.15.0)" >&2; exit 2; }
for version in "$@"; do
  venv=".compat/torch-$version"
  echo "== torch $version ($venv)"
  if [ ! -f "$venv/.installed" ] || [ pyproject.toml -nt "$venv/.installed" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # PIP_CONSTRAINT: a machine's pip config may cap torch at the release it keeps on disk (this project's
    # machines: /etc/xdg/pip/constraints.txt); the compat venvs ask the registry for the version named.
    PIP_CONSTRAINT=/dev/null "$venv/bin/python" -m pip install --quiet "torch==$version" .
    "$venv/bin/python" -m pip install --quiet pytest numpy  # the test runner, and numpy for torch's tensor_numpy
    touch "$venv/.installed"
  fi
  "$venv/bin/python" -m pip install --quiet --no-deps --force-reinstall .  # this checkout's code, every time
  # From outside the checkout: the installed wheel, not the source tree.
  (cd / && "$OLDPWD/$venv/bin/python" - <<'PY'
import importlib.util

import torch

import thermolion
from thermolion import ThermoLion

harness = [m for m in ("hydra", "pandas", "timm", "scipy", "torchvision", "schedulefree") if importlib.util.find_spec(m)]
assert not harness, f"pip install . brought the harness's packages along: {harness}"
assert "site-packages" in thermolion.__file__, thermolion.__file__
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
opt = ThermoLion(model.parameters(), lr=1e-2)
x, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
first = None
for _ in range(50):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    first = first if first is not None else loss.item()
assert loss.item() < first, (first, loss.item())
print(f"installed thermolion {thermolion.__version__} on torch {torch.__version__}: loss {first:.3f} -> {loss.item():.3f}")
PY
  )
  "$venv/bin/python" -m pytest -q -p no:cacheprovider $TESTS
done
