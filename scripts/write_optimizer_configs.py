"""Write conf/optimizer/<name>.yaml for every registered optimizer, from the registry's defaults.

    python scripts/write_optimizer_configs.py

The registry (thermolion/registry.py) is the source of truth; tests/test_harness.py checks that
the files match it. Plug-in optimizers have their own files (conf/optimizer/custom.yaml, examples/).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from thermolion import OPTIMIZERS  # noqa: E402


def main() -> None:
    for name, spec in OPTIMIZERS.items():
        values = {"name": name, **{k: list(v) if isinstance(v, tuple) else v for k, v in spec.defaults.items()}}
        text = f"# {spec.description}\n" + yaml.safe_dump(values, sort_keys=False)
        (ROOT / "conf" / "optimizer" / f"{name}.yaml").write_text(text)
    print(f"wrote {len(OPTIMIZERS)} files under conf/optimizer/")


if __name__ == "__main__":
    main()
