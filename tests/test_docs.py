"""Every shell and Python block of README.md and docs/ runs, so that the pages cannot rot.

Sybil parses the pages and evaluates their blocks in order, one shared namespace (Python) and one
sandbox (shell) for all pages, so a page may read what an earlier page made (the report page reads the
runs the running page made). The rules, stated once:

* ``python`` blocks run as written;
* ``bash`` blocks run with ``bash -euo pipefail`` in a sandbox that links the checkout's code (outputs
  land in the sandbox), at a small size: ``SMALL`` is added to every ``python run.py`` line and, as
  ``RUN_ARGS``, to ``make run``; a ``make test`` line is this suite itself, and is left out (not run);
* ``console`` blocks (``$ command`` then its output) run as written and their output must match what the
  page shows, with ``...`` matching anything (doctest's ELLIPSIS);
* a block that cannot run here follows ``<!-- skip: next "reason" -->``, and the reason is shown;
* a fenced block of any other language fails the test below: a new language joins these rules or none.
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import SkipTest

import pytest
from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md"] + [f"docs/{p}" for p in (
    "index.md", "optimizer.md", "api.md", "running.md", "report.md", "many-runs.md", "trackers.md", "tuning.md",
    "reliability.md", "contributing.md",
)]  # fmt: skip
SMALL = "trainer.epochs=1 data.train_subset=512"
LINKED = ("run.py", "conf", "runners", "models", "thermolion", "hydra_plugins", "examples", "scripts", "Makefile",
          "pyproject.toml", "constraints.txt", ".venv")  # fmt: skip
SHARED = ROOT.parent / "shared"
TIMEOUT_S = 600
SANDBOX: dict[str, Path] = {}


def smaller(script: str) -> str:
    """The block with ``SMALL`` added to each ``python run.py`` and ``make run`` line (before a comment)."""
    out = []
    for line in script.replace("\\\n", " ").splitlines():
        command, comment = re.match(r"^(.*?)(\s+#\s.*)?$", line).groups()
        if re.match(r"\s*(python run\.py|\.venv/bin/python run\.py)\b", command) and "--help" not in command:
            command += " " + SMALL
        elif re.match(r"\s*make run\b", command):
            command += f" RUN_ARGS='{SMALL}'"
        elif re.match(r"\s*make test\s*$", command):
            command = ": make test  # this suite itself: not run from within it"
        out.append(command + (comment or ""))
    return "\n".join(out) + "\n"


def _shell(script: str) -> subprocess.CompletedProcess:
    if not SANDBOX:
        pytest.fail("the docs' sandbox was not set up (run the module, not one block)")
    if re.search(r"dataset=\S*(mnist|fashionmnist)", script) and not (SHARED / "data").is_dir():
        raise SkipTest(f"needs MNIST and FashionMNIST in {SHARED / 'data'}, which is absent")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DATA_ROOT", None)  # as a new shell has it: the pages say when to export it
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=SANDBOX["cwd"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def run_bash(example) -> str | None:
    proc = _shell(smaller(example.parsed))
    if proc.returncode != 0:
        return f"exit {proc.returncode} from\n{smaller(example.parsed)}\n{(proc.stdout + proc.stderr)[-4000:]}"
    return None


def run_console(example) -> str | None:
    checker, flags = doctest.OutputChecker(), doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    for block in re.split(r"^\$ ", example.parsed, flags=re.M)[1:]:
        command, _, want = block.partition("\n")
        proc = _shell(command)
        got = proc.stdout + proc.stderr
        if proc.returncode != 0 or not checker.check_output(want, got, flags):
            return f"$ {command}\nexit {proc.returncode}; the page shows:\n{want}\nit printed:\n{got[-4000:]}"
    return None


DOCS = Sybil(
    parsers=[
        PythonCodeBlockParser(),
        CodeBlockParser(language="bash", evaluator=run_bash),
        CodeBlockParser(language="console", evaluator=run_console),
        SkipParser(),
    ],
    path=str(ROOT),
)
DOCUMENTS = {page: DOCS.parse(ROOT / page) for page in PAGES}
EXAMPLES = [(page, example) for page, document in DOCUMENTS.items() for example in document]


@pytest.fixture(scope="module", autouse=True)
def sandbox(tmp_path_factory):
    home = tmp_path_factory.mktemp("docs")
    cwd = home / "checkout"
    cwd.mkdir()
    for name in LINKED:
        if (ROOT / name).exists():
            (cwd / name).symlink_to(ROOT / name)
    if SHARED.is_dir():  # `export DATA_ROOT=../shared/data`, as the pages say, works from the sandbox too
        (home / "shared").symlink_to(SHARED)
    SANDBOX["cwd"] = cwd
    yield cwd
    SANDBOX.clear()


def test_every_page_is_read_and_every_fenced_block_has_a_language_with_a_rule():
    found = sorted(p.relative_to(ROOT).as_posix() for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
    assert found == sorted(PAGES), "a page under docs/ that this test does not run: add it to PAGES"
    for page in PAGES:
        for lang in re.findall(r"^```(\S*)", (ROOT / page).read_text(), flags=re.M)[::2]:
            assert lang in ("", "bash", "console", "python"), f"{page}: a ```{lang} block has no rule here"


def test_the_small_size_is_added_to_every_run_and_nothing_else():
    script = "python run.py -m a=1,2 \\\n    b=3   # a comment\npython -m runners.status outputs\nmake run\nmake test\n"
    assert smaller(script) == (
        f"python run.py -m a=1,2      b=3 {SMALL}   # a comment\npython -m runners.status outputs\n"
        f"make run RUN_ARGS='{SMALL}'\n: make test  # this suite itself: not run from within it\n"
    )
    assert smaller("python run.py --help  # the groups\n") == "python run.py --help  # the groups\n"


@pytest.mark.slow
@pytest.mark.parametrize("page,example", EXAMPLES, ids=[f"{p}:{e.line}" for p, e in EXAMPLES])
def test_block(page, example):
    example.evaluate()
