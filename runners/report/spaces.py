"""A tuning trial's search space as part of its identity: trial i of one space and trial i of another
(another file, or the same file edited) are different configurations, never seeds of one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["by_space", "space_keys"]


def by_space(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with ``optimizer_name`` naming each (optimizer, search space) apart.

    Trial i of one space and trial i of another are different configurations, never seeds of one: an
    optimizer whose sampled trials come from two spaces (another file, or the same file edited) gets a
    label per space, ``name [space]``, and its defaults (trial 0, one folder for every space) join each.
    """
    runs = runs.assign(space_key=space_keys(runs))
    sampled = runs[runs["trial"] > 0]
    keys = sampled.groupby("optimizer_name")["space_key"].unique()
    if all(len(k) <= 1 for k in keys):
        return runs.drop(columns="space_key")
    parts = []
    for opt, g in runs.groupby("optimizer_name"):
        spaces = list(keys.get(opt, []))
        if len(spaces) <= 1:
            parts.append(g)
            continue
        stems = {k: k.split("@")[0] for k in spaces}
        clash = len(set(stems.values())) < len(spaces)  # one file, edited between sweeps: name its hash too
        for key in spaces:
            label = f"{opt} [{key if clash else stems[key]}]"
            mine = g[(g["trial"] == 0) | (g["space_key"] == key)]
            parts.append(mine.assign(optimizer_name=label, optimizer=label))
    return pd.concat(parts, ignore_index=True).drop(columns="space_key")


def space_keys(runs: pd.DataFrame) -> pd.Series:
    """``<space file stem>[@<content hash>]`` per run (the hash where recorded)."""
    stem = runs["search_space"].map(lambda p: Path(str(p)).stem if isinstance(p, str) else "?")
    if "search_space_sha" not in runs:
        return stem
    sha = runs["search_space_sha"].map(lambda h: f"@{h[:6]}" if isinstance(h, str) else "")
    return stem + sha
