"""The package layers, read from the source: every import points down the layers, never up.

thermolion and models know nothing of the harness; runners/train (the numeric core) knows nothing
of the config boundary, the sweep machinery, tuning or reports; reports know nothing of sweeps
or tuning; and nothing below the sweep layer imports Hydra.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_UPPER = (  # everything above the leaves
    "runners.train",
    "runners.config",
    "runners.checks",
    "runners.plugins",
    "runners.options",
    "runners.sweep",
    "runners.tuning",
    "runners.tracking",
    "runners.report",
    "runners.status",
    "models",
    "thermolion",
    "hydra",
    "omegaconf",
)

# folder (or file) -> module prefixes it must not import at run time
FORBIDDEN = {
    "thermolion": ("runners", "models", "hydra", "omegaconf"),
    "models": ("runners", "hydra", "omegaconf"),
    "runners/train": (
        "runners.config",
        "runners.checks",
        "runners.options",
        "runners.identity",
        "runners.outcomes",
        "runners.run_folder",
        "runners.status",
        "runners.plugins",
        "runners.sweep",
        "runners.tuning",
        "runners.tracking",
        "runners.report",
        "hydra",
        "omegaconf",
    ),
    "runners/config.py": ("runners.sweep", "runners.report", "hydra", "omegaconf"),
    "runners/checks.py": ("runners.sweep", "runners.report", "hydra", "omegaconf"),
    "runners/plugins.py": ("runners.sweep", "runners.report", "runners.tuning", "hydra", "omegaconf"),
    "runners/atomic.py": ("runners.", "models", "thermolion"),
    # the leaves that read and name run folders: no torch, nothing of the layers above
    "runners/run_folder.py": _UPPER + ("runners.outcomes", "runners.identity", "torch"),
    "runners/outcomes.py": _UPPER + ("runners.identity", "torch"),
    "runners/identity.py": ("runners.", "models", "thermolion", "torch", "hydra", "omegaconf"),
    "runners/options.py": ("runners.", "models", "thermolion", "torch", "hydra", "omegaconf"),
    "runners/timing.py": ("runners.", "models", "thermolion", "hydra", "omegaconf"),
    # the dataset files: reads the core's table and conversion, knows nothing above it
    "runners/datafiles.py": _UPPER[1:],
    "runners/report": ("runners.sweep", "runners.tuning", "runners.config", "hydra", "omegaconf"),
    "runners/tuning/search_space.py": ("runners.", "hydra", "omegaconf"),
    # trackers watch runs: they know the run's config by duck typing, not the sweep, the report or Hydra
    "runners/tracking": ("runners.sweep", "runners.report", "runners.tuning", "runners.config", "hydra", "omegaconf"),
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


def _import_graph(packages: tuple[str, ...]) -> dict[str, set[str]]:
    """module -> the project modules it imports at run time (lazy imports included)."""
    files = {_module_of(p): p for pkg in packages for p in sorted((ROOT / pkg).rglob("*.py"))}

    def owner(name: str):
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    return {m: {o for n in runtime_imports(p) if (o := owner(n)) and o != m} for m, p in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_modules_of_the_harness_import_each_other():
    assert _cycles(_import_graph(("runners", "models"))) == []


def test_the_cycle_check_finds_a_lazy_import_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    # the check reads lazy imports: runners.status imports the report inside main()
    assert "runners.report.collect" in _import_graph(("runners",))["runners.status"]
