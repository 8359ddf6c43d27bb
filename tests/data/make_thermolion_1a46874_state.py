"""Writes thermolion_1a46874_state.pt: run once with the optimizer as of commit 1a46874 (the last before
the counter-based noise stream: per-device generators, tensor steps, a saved seed), from that checkout's root:
python tests/data/make_thermolion_1a46874_state.py"""

import copy

import torch

from thermolion import ThermoLion

gen = torch.Generator().manual_seed(5)
out = {}
for name, kw in (("owned", {}), ("capturable", {"capturable": True, "generator": torch.Generator().manual_seed(3)})):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    opt = ThermoLion(model.parameters(), **kw)
    grads = [[torch.randn(p.shape, generator=gen) for p in model.parameters()] for _ in range(5)]
    for g in grads[:3]:
        for p, gi in zip(model.parameters(), g):
            p.grad = gi.clone()
        opt.step()
    saved = {
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "optimizer": copy.deepcopy(opt.state_dict()),  # the live state moves on with the next steps
    }
    for g in grads[3:]:
        for p, gi in zip(model.parameters(), g):
            p.grad = gi.clone()
        opt.step()
    final = {k: v.clone() for k, v in model.state_dict().items()}
    out[name] = {"start": start, "saved": saved, "grads": grads, "final": final}
torch.save(out, "tests/data/thermolion_1a46874_state.pt")
