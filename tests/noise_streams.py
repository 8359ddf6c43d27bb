"""The optimizer's arguments for each noise stream, so that a test of a rule about the noise runs on every
stream in ``NOISE_RNGS``: a seeded ``torch.Generator`` for the author's, ``seed`` for the counter-based one."""

from __future__ import annotations

import torch

from thermolion.functional import NOISE_RNGS

__all__ = ["NOISE_RNGS", "noise_kwargs"]


def noise_kwargs(rng: str, seed: int, device: str = "cpu") -> dict:
    if rng == "torch":
        return {"noise_rng": "torch", "generator": torch.Generator(device=device).manual_seed(seed)}
    return {"noise_rng": rng, "seed": seed}
