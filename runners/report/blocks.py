"""Per-dataset blocks: the grid every cross-dataset verdict is computed on.

The rule, stated once (AlgoPerf's rule for misses, applied to runs):

* A section's **grid** is, per dataset, every seed that any optimizer of the section attempted there
  (runs that failed, were interrupted or are still running included). Each optimizer owes one run per
  cell of the grid: its **block** on a dataset is its runs of that dataset's seeds.
* A cell without a counted run (failed, interrupted, running, or never launched) is a **miss**. A miss
  counts as the worst outcome, at chance accuracy, exactly as a diverged run does (and never reaches a
  target). An accuracy below chance also counts at chance: a run that learned nothing scores as one that
  diverged. So failing, diverging or removing a run can never raise a number of its optimizer.
* An optimizer with a miss has an **incomplete** block: every table and figure built on the grid marks
  it with its count of misses, and it gets no confidence interval, since its value is a bound (the
  misses at their worst), not an estimate.
* Every cross-dataset statistic first reduces each block to one number (its mean), so each dataset
  weighs the same whatever its number of seeds.

A dataset on which every run failed stays in the grid, every optimizer at chance there, so that failing a
run never drops a dataset from an optimizer's verdicts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["grid", "block_means", "misses", "left_out_datasets", "mark", "GRID_COLUMNS"]

GRID_COLUMNS = ["dataset", "optimizer", "seed", "acc", "counted", "status", "chance"]


def grid(runs: pd.DataFrame, attempts: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (dataset, optimizer, seed) of the section's grid: ``acc`` the final accuracy as the
    verdicts count it (at least chance; chance for a miss), ``counted`` False for a miss, ``status`` the
    run's status (``missing`` where no run was attempted), ``chance`` the dataset's chance level.

    ``runs``: the counted runs (done or diverged; ``final_eval_acc``, ``num_classes``). ``attempts``:
    every run of the section with a config and its status; None takes the grid from ``runs`` alone."""
    counted = runs[["dataset", "optimizer", "seed", "final_eval_acc", "num_classes"]].copy()
    counted["status"] = runs["status"] if "status" in runs else "done"
    tried = counted[["dataset", "optimizer", "seed", "status", "num_classes"]]
    if attempts is not None and len(attempts):
        cols = [c for c in ("dataset", "optimizer", "seed", "status", "num_classes") if c in attempts]
        tried = pd.concat([tried, attempts[cols]])
    # A dataset where every run failed stays, everyone at chance there, so failing a run never drops one.
    chance = (100.0 / tried.dropna(subset=["num_classes"]).groupby("dataset")["num_classes"].first()).to_dict()
    tried = tried[tried["dataset"].isin(chance)]  # only without its number of classes (runs of old code)
    seeds = tried.groupby("dataset")["seed"].unique()
    optimizers = sorted(set(tried["optimizer"]))
    cells = pd.DataFrame(
        [(d, o, int(s)) for d in sorted(seeds.index) for o in optimizers for s in sorted(seeds[d])],
        columns=["dataset", "optimizer", "seed"],
    )
    # A cell with several counted runs (the same seed twice) is one cell: their mean.
    acc = counted.groupby(["dataset", "optimizer", "seed"])["final_eval_acc"].mean().rename("acc")
    # A miss's status: what its attempt ended as (the last one named), else "missing".
    status = tried.drop_duplicates(["dataset", "optimizer", "seed"], keep="first").set_index(
        ["dataset", "optimizer", "seed"]
    )["status"]
    out = cells.join(acc, on=["dataset", "optimizer", "seed"]).join(status, on=["dataset", "optimizer", "seed"])
    out["counted"] = out["acc"].notna()
    out["status"] = out["status"].fillna("missing")
    out["chance"] = out["dataset"].map(chance)
    out["acc"] = np.maximum(out["acc"].fillna(out["chance"]), out["chance"])
    return out[GRID_COLUMNS].reset_index(drop=True)


def block_means(g: pd.DataFrame) -> pd.DataFrame:
    """datasets x optimizers: each block's mean accuracy as the verdicts count it."""
    return g.pivot_table(index="dataset", columns="optimizer", values="acc", aggfunc="mean")


def misses(g: pd.DataFrame) -> pd.DataFrame:
    """One row per optimizer: ``missing`` (cells without a counted run), ``cells``, and ``missing_on``
    (``dataset k`` for each dataset with a miss), the mark an incomplete optimizer carries."""
    rows = []
    for opt, o in g.groupby("optimizer", sort=False):
        miss = o[~o["counted"]].groupby("dataset").size()
        rows.append(
            {
                "optimizer": opt,
                "missing": int(miss.sum()),
                "cells": int(len(o)),
                "missing_on": ", ".join(f"{d} {n}" for d, n in miss.items()),
                "no_run_on": sorted(set(o["dataset"]) - set(o.loc[o["counted"], "dataset"])),
            }
        )
    return pd.DataFrame(rows, columns=["optimizer", "missing", "cells", "missing_on", "no_run_on"])


def left_out_datasets(runs: pd.DataFrame, attempts: pd.DataFrame | None) -> list[str]:
    """Datasets the section attempted whose number of classes is unknown (no counted run, and attempts
    recorded without it): the grid cannot place chance there."""
    if attempts is None or attempts.empty:
        return []
    known = set(runs["dataset"]) | (
        set(attempts.dropna(subset=["num_classes"])["dataset"]) if "num_classes" in attempts else set()
    )
    return sorted(set(attempts["dataset"]) - known)


def mark(optimizer: str, missing: int) -> str:
    """An optimizer's label where its block is incomplete: ``name (k missing)``."""
    return f"{optimizer} ({missing} missing)" if missing else optimizer
