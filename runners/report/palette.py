"""One colour per optimizer in every figure of every report, and a line style per variant of it.

The colour is a function of the optimizer alone, never of which others share the figure: ThermoLion
black, every registered optimizer its own entry of ``PALETTE`` (20 colours that stay apart on white,
more than the registry's other entries), plug-ins a hashed one of the remaining entries with a marker.
Each optimizer also has its own line style (solid, dashed, dash-dot, dotted in registry order): Adam,
AdamW and SWATS draw nearly the same curve under the paper's protocol, and dashes of one colour over
another keep all three visible where a solid line would hide the others. A variant label
(``adamw_lr=0.0001``, ``thermolion [thermolion_full]``) keeps its optimizer's colour and gets a
marker and the next line style, in the order of the variants in the figure.
"""

from __future__ import annotations

import hashlib

from thermolion import OPTIMIZERS

from .collect import OPTIMIZER_ORDER

__all__ = ["PALETTE", "base_of", "colour_of", "styles", "colours"]

# tab10, then ten more chosen to differ from it and from each other in hue or lightness.
PALETTE = (
    "#1f77b4",  # blue
    "#ff7f0e",  # orange
    "#2ca02c",  # green
    "#d62728",  # red
    "#9467bd",  # purple
    "#8c564b",  # brown
    "#e377c2",  # pink
    "#7f7f7f",  # grey
    "#bcbd22",  # olive
    "#17becf",  # cyan
    "#000080",  # navy
    "#800000",  # maroon
    "#008080",  # teal
    "#ff00ff",  # magenta
    "#556b2f",  # dark olive green
    "#ffc20a",  # amber
    "#4b0082",  # indigo
    "#a0522d",  # sienna
    "#00e000",  # bright green
    "#708090",  # slate grey
    "#c71585",  # medium violet red
    "#40e0d0",  # turquoise
    "#daa520",  # goldenrod
    "#1e3f66",  # dark steel blue
)
CANDIDATE = "thermolion"
_REGISTERED = [o for o in OPTIMIZER_ORDER if o != CANDIDATE]
assert len(_REGISTERED) <= len(PALETTE) - 2, "add colours to PALETTE: every registered optimizer needs its own"
_FREE = PALETTE[len(_REGISTERED) :]  # for plug-ins
_LINES = ("-", "--", "-.", ":")
_MARKERS = (None, "o", "s", "^", "D", "v", "P", "X")


def base_of(label: str) -> str:
    """The optimizer a label is a variant of: ``adamw_lr=0.0001`` -> adamw, ``lion [x]`` -> lion."""
    if label in OPTIMIZERS:
        return label
    head = label.split(" [", 1)[0]
    if head in OPTIMIZERS:
        return head
    # the longest registered name followed by "_<setting>=": thermolion_bc_lr=0.1 is thermolion_bc's
    for name in sorted(OPTIMIZERS, key=len, reverse=True):
        if head.startswith(name + "_") and "=" in head[len(name) + 1 :]:
            return name
    return head.split("_", 1)[0] if "=" in head else head


def colour_of(label: str) -> str:
    base = base_of(label)
    if base == CANDIDATE:
        return "black"
    if base in _REGISTERED:
        return PALETTE[_REGISTERED.index(base)]
    return _FREE[_digest(base) % len(_FREE)]


def styles(labels) -> dict[str, dict]:
    """label -> matplotlib keywords (color, linestyle, marker) for the labels of one figure."""
    labels = list(dict.fromkeys(labels))
    out = {}
    for label in labels:
        base = base_of(label)
        variants = [x for x in labels if base_of(x) == base and x != base]
        k = variants.index(label) + 1 if label in variants else 0
        plugin = base != CANDIDATE and base not in _REGISTERED
        own = _MARKERS[_digest(base) % (len(_MARKERS) - 1) + 1]  # a plug-in's marker sets it apart
        marker = own if plugin and k == 0 else _MARKERS[k % len(_MARKERS)]
        line = _LINES[(_line_of(base) + k) % len(_LINES)]
        out[label] = {"color": colour_of(label), "linestyle": line, "marker": marker}
    return out


def _line_of(base: str) -> int:
    """The optimizer's own line style: ThermoLion solid, the registry's others in turn."""
    if base == CANDIDATE:
        return 0
    return _REGISTERED.index(base) if base in _REGISTERED else _digest(base)


def colours(labels) -> dict[str, str]:
    return {label: colour_of(label) for label in labels}


def _digest(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
