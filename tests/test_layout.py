"""The package layers, read from the source: every import points down the layers, never up.

thermolion and models know nothing of the harness; runners/train (the numeric core) knows nothing
of the config boundary, the sweep machinery, tuning or reports; reports know nothing of sweeps
or tuning; and nothing below the sweep layer imports Hydra.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# folder (or file) -> module prefixes it must not import at run time
FORBIDDEN = {
    "thermolion": ("runners", "models", "hydra", "omegaconf"),
    "models": ("runners", "hydra", "omegaconf"),
    "runners/train": (
        "runners.config",
        "runners.plugins",
        "runners.sweep",
        "runners.tuning",
        "runners.report",
        "hydra",
        "omegaconf",
    ),
    "runners/config.py": ("runners.sweep", "runners.report", "hydra", "omegaconf"),
    "runners/checks.py": ("runners.sweep", "runners.report", "hydra", "omegaconf"),
    "runners/plugins.py": ("runners.sweep", "runners.report", "runners.tuning", "hydra", "omegaconf"),
    "runners/atomic.py": ("runners.", "models", "thermolion"),
    "runners/outcomes.py": ("runners.", "models", "thermolion", "torch", "hydra", "omegaconf"),
    "runners/report": ("runners.sweep", "runners.tuning", "runners.config", "hydra", "omegaconf"),
    "runners/tuning/search_space.py": ("runners.", "hydra", "omegaconf"),
}


def _module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def runtime_imports(path: Path) -> set[str]:
    """Absolute names of the modules a file imports when it runs (``if TYPE_CHECKING:`` blocks are not run)."""
    package = _module_of(path) if path.name == "__init__.py" else _module_of(path).rpartition(".")[0]
    found: set[str] = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module
                found.add(module)
                found.update(f"{module}.{a.name}" for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _files(where: str) -> list[Path]:
    target = ROOT / where
    return [target] if target.is_file() else sorted(target.rglob("*.py"))


@pytest.mark.parametrize("where", sorted(FORBIDDEN))
def test_imports_follow_the_layers(where):
    bad = []
    for path in _files(where):
        assert path.exists()
        for module in runtime_imports(path):
            if module.startswith(FORBIDDEN[where]) and not module.startswith(_module_of(path)):
                bad.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not bad, "\n".join(bad)


def test_the_layer_check_sees_relative_and_absolute_imports(tmp_path):
    sample = ROOT / "runners" / "train" / "loop.py"
    found = runtime_imports(sample)
    assert {"runners.train.data", "runners.train.build", "thermolion"} <= found
    assert "runners.config" not in found  # only under TYPE_CHECKING


def test_only_the_sweep_layer_imports_hydra_at_module_level():
    for path in sorted((ROOT / "runners").rglob("*.py")):
        top = ast.parse(path.read_text()).body
        names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
        if any(n.startswith(("hydra", "omegaconf")) for n in names):
            assert path.relative_to(ROOT).as_posix() == "runners/sweep/hydra_glue.py", path
