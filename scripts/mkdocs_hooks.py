"""MkDocs hook: the pages show figures that live in the repository's results/ folder (each beside the
command that made it). They are added to the site as they are, not copied into docs/, so a page and
its figure cannot drift apart, and --strict still checks every link to them."""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
LINKED = re.compile(r"\]\((results/[^)\s#]+)\)")


def on_files(files, config):
    docs = Path(config["docs_dir"])
    for page in sorted(docs.glob("*.md")):
        for target in LINKED.findall(page.read_text()):
            if (ROOT / target).is_file() and files.get_file_from_path(target) is None:
                files.append(File(target, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files
