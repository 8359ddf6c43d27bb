"""The noise generators of one ThermoLion: the caller's generator, or one owned per device (the
``"torch"`` stream); and the seed, the whole state of the counter-based ``"philox"`` stream.

Owned generators are made at the first step on their device (so an optimizer builds on ``meta``
parameters, and building it draws nothing from torch's global RNG). Their seed is ``seed`` when given,
else ``torch.initial_seed()`` (read, never drawn), mixed with the device's name so that two devices
draw different noise. Under ``torch.distributed`` the seed is rank 0's of ``process_group``: one
broadcast, inside the first step that needs it, so that replicas seeded ``seed + rank`` still draw the
same noise. Their states travel in the optimizer's ``state_dict``.
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["NoiseGenerators", "device_seed"]


def device_seed(seed: int, device: str) -> int:
    """One generator seed per device from the optimizer's seed, so that devices draw different noise."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{device}".encode()).digest()[:8], "little") & (2**63 - 1)


def _seed_of_rank0(seed: int, process_group) -> int:
    """``seed`` as rank 0 of ``process_group`` has it (one broadcast), or as given outside torch.distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(process_group) == 1:
        return seed
    box = [seed]
    src = dist.get_global_rank(process_group, 0) if process_group is not None else 0
    dist.broadcast_object_list(box, src=src, group=process_group)
    return int(box[0])


class NoiseGenerators:
    def __init__(self, generator: Optional[torch.Generator] = None, seed: Optional[int] = None, process_group=None):
        self.generator = generator  # the caller's, or None: one owned per device
        self.owned: dict[str, torch.Generator] = {}  # by device, made at its first use
        self.pending: dict[str, Tensor] = {}  # loaded states of owned generators not made yet ("*": the first)
        self.seed, self.synced = seed, False
        self.process_group = process_group

    def __getstate__(self) -> dict:
        return {**self.__dict__, "process_group": None}  # not picklable: a copy uses the default group

    @torch.compiler.disable  # seeding (hashlib, manual_seed) is bookkeeping: never traced by Dynamo
    def for_device(self, device: torch.device) -> torch.Generator:
        """The caller's generator, or the owned one of ``device`` (made, and seeded, at its first use)."""
        if self.generator is not None:
            if torch.device(self.generator.device) != device:
                raise ValueError(
                    f"generator is on {self.generator.device} but parameters are on {device}: pass a "
                    "generator on the parameters' device, or none (the optimizer then owns one per device)"
                )
            return self.generator
        key = str(device)
        gen = self.owned.get(key)
        if gen is None:
            gen = torch.Generator(device=device).manual_seed(device_seed(self.owned_seed(), key))
            state = self.pending.pop(key, self.pending.pop("*", None))
            if state is not None:
                gen.set_state(state)
            self.owned[key] = gen
        return gen

    def owned_seed(self) -> int:
        """``seed`` or ``torch.initial_seed()``, rank 0's under torch.distributed (broadcast once)."""
        if not self.synced:
            seed = self.seed if self.seed is not None else torch.initial_seed()
            self.seed, self.synced = _seed_of_rank0(seed, self.process_group), True
        assert self.seed is not None
        return self.seed

    def state_dict(self) -> dict:
        """The optimizer state dict's entries: ``generator_state`` (the caller's), or ``generator_states``
        by device and ``generator_seed`` (owned)."""
        if self.generator is not None:
            return {"generator_state": self.generator.get_state()}
        out: dict[str, Any] = {
            "generator_states": {**self.pending, **{k: g.get_state() for k, g in self.owned.items()}}
        }
        if self.synced:
            out["generator_seed"] = self.seed
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        """Takes the entries :meth:`state_dict` wrote (popping them from ``state_dict``). One
        ``generator_state`` (version 0.1, before per-device generators) restores the caller's generator,
        or the first owned one made."""
        single = state_dict.pop("generator_state", None)
        states = dict(state_dict.pop("generator_states", {}))
        seed = state_dict.pop("generator_seed", None)
        if self.generator is not None:
            if single is not None:
                self.generator.set_state(single)
            return
        if single is not None:
            states.setdefault("*", single)
        if seed is not None:
            self.seed, self.synced = int(seed), True
        for key, state in states.items():
            if key in self.owned:
                self.owned[key].set_state(state)
            else:
                self.pending[key] = state
