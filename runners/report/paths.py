"""How reports name paths: relative to the checkout, so that no machine's layout is committed."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Optional

__all__ = ["REPO", "shown_path", "shown_command", "PATH_COLUMNS", "section_title", "section_heading"]

REPO = Path(__file__).resolve().parents[2]
# Config fields that hold paths (runs.parquet shows them as shown_path does).
PATH_COLUMNS = (
    "config.results_dir",
    "config.data.root",
    "config.data.cache_dir",
    "config.tuned_from",
    "config.search_space",
)


def shown_path(path) -> str:
    """``path`` relative to the checkout (``../runs/paper`` for a folder beside it); relative paths stay."""
    if not os.path.isabs(str(path)):
        return Path(path).as_posix()
    return Path(os.path.relpath(Path(path).resolve(), REPO)).as_posix()


def shown_command(command: Optional[str]) -> Optional[str]:
    """The command with every absolute path argument (also ``key=/abs/path``) shown as :func:`shown_path`."""
    if not command:
        return command
    words = []
    for word in shlex.split(command):
        key, eq, value = word.partition("=") if "=" in word and not word.startswith("/") else ("", "", word)
        words.append(key + eq + shown_path(value) if value.startswith("/") else word)
    return shlex.join(words)


_PROTOCOL_TITLES = {
    "paper": "paper protocol",
    "rigorous": "rigorous protocol",
    "tuned": "tuned protocol (validation split)",
}


def section_title(section: str) -> str:
    """A report section's key (``paper+epochs=2,train_subset=500``) as a title: "paper protocol, with
    epochs 2, train subset 500"."""
    protocol, _, settings = section.partition("+")
    title = _PROTOCOL_TITLES.get(protocol, f"{protocol} protocol")
    if settings:
        title += ", with " + ", ".join(s.replace("_", " ").replace("=", " ") for s in settings.split(","))
    return title


def section_heading(what: str, section: str) -> str:
    """A markdown title in readable words, with the section's raw key (its folder) on the line below."""
    return f"# {what}: {section_title(section)}\n\nSection `{section}`.\n"
