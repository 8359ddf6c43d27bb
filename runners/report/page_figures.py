"""The interactive figures of ``index.html``, drawn by Plotly from the data the PNG figures use.

Each optimizer has the colour and dash of the PNGs (``palette``); its band over seeds shares its legend
group, so a click on the legend hides both. Figures are returned as HTML fragments that expect
plotly.js on the page (loaded once, from the report folder).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from .collect import DATASET_ORDER, OPTIMIZER_ORDER, _ordered
from .figures import PHASE_COLOURS, PHASE_COLUMNS
from .palette import styles

__all__ = ["convergence_figure", "phase_figure", "iqm_figure", "profile_figure", "fragment"]

_DASH = {"-": "solid", "--": "dash", "-.": "dashdot", ":": "dot"}
METRICS = (("eval_acc", "evaluation accuracy (%)"), ("train_loss", "training loss"), ("eval_loss", "evaluation loss"))
AXES = (("epoch", "epoch"), ("step", "optimizer steps"), ("train_time_s", "training seconds"))


def fragment(fig, div_id: str) -> str:
    """The figure (a plotly Figure, or its plain dict) as a <div> and its script, without the library (the
    page loads it once). Plain dicts skip plotly's validation, most of the cost of a large report."""
    import plotly.io as pio

    return pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        validate=False,
        config={"displaylogo": False},
    )


def _line_style(style: dict) -> dict:
    return {"color": style["color"], "dash": _DASH.get(style["linestyle"], "solid"), "width": 2}


def _rgba(colour: str, alpha: float) -> str:
    from matplotlib.colors import to_rgb

    r, g, b = (int(255 * c) for c in to_rgb(colour))
    return f"rgba({r},{g},{b},{alpha})"


spread = "mean ± std over seeds"


def _has_spread(sub: pd.DataFrame) -> bool:
    """Whether any curve has a std: one seed per optimizer has none (std of one value is NaN)."""
    stds = [c for c in sub.columns if c.endswith("_std")]
    return bool(stds) and sub[stds].notna().any().any()


def convergence_figure(curves: pd.DataFrame, dataset: str) -> dict:
    """Mean over seeds with a ±1 std band per optimizer (``summary.json``'s curves); menus switch the
    metric and the x axis. A plain figure dict (see ``fragment``)."""
    sub = curves[curves["dataset"] == dataset].sort_values("epoch")
    optimizers = _ordered(sub["optimizer"], OPTIMIZER_ORDER)
    style = styles(optimizers)
    metrics = [(m, label) for m, label in METRICS if f"{m}_mean" in sub and sub[f"{m}_mean"].notna().any()]
    axes = [(a, label) for a, label in AXES if a in sub and sub[a].notna().all()]
    data: list[dict] = []
    ys: dict[str, list] = {m: [] for m, _ in metrics}
    xs: dict[str, list] = {a: [] for a, _ in axes}
    for opt in optimizers:
        d = sub[sub["optimizer"] == opt]
        for part in ("low", "high", "mean"):
            for m, _ in metrics:
                mean, std = d[f"{m}_mean"].astype(float), d[f"{m}_std"].astype(float).fillna(0.0)
                ys[m].append((mean - std if part == "low" else mean + std if part == "high" else mean).tolist())
            for a, _ in axes:
                xs[a].append(d[a].astype(float).tolist())
        x, y = d["epoch"].tolist(), ys[metrics[0][0]]
        band = {"type": "scatter", "x": x, "legendgroup": opt, "hoverinfo": "skip", "showlegend": False}
        data.append({**band, "y": y[-3], "mode": "lines", "line": {"width": 0}})
        data.append(
            {
                **band,
                "y": y[-2],
                "mode": "lines",
                "line": {"width": 0},
                "fill": "tonexty",
                "fillcolor": _rgba(style[opt]["color"], 0.15),
            }
        )
        data.append(
            {
                "type": "scatter",
                "x": x,
                "y": y[-1],
                "mode": "lines+markers" if len(x) <= 3 else "lines",
                "name": opt,
                "legendgroup": opt,
                "line": _line_style(style[opt]),
                "hovertemplate": f"{opt}<br>%{{x}}: %{{y:.4g}}<extra></extra>",
            }
        )
    menus = [
        _menu([(label, {"y": ys[m]}, {"yaxis.title.text": label}) for m, label in metrics], 0.0),
        _menu([(label, {"x": xs[a]}, {"xaxis.title.text": label}) for a, label in axes], 0.45),
    ]
    layout = {
        "title": {"text": f"{dataset}: " + (spread if _has_spread(sub) else "one seed each (no spread to show)")},
        "xaxis": {"title": {"text": "epoch"}},
        "yaxis": {"title": {"text": metrics[0][1]}},
        "updatemenus": menus,
        "height": 420,
        "margin": {"t": 90},
        "template": _template(),
    }
    return {"data": data, "layout": layout}


def _template() -> dict:
    import plotly.io as pio

    return pio.templates["plotly_white"].to_plotly_json()


def _menu(buttons: list[tuple[str, dict, dict]], x: float) -> dict:
    """A dropdown whose buttons restyle every trace and relabel an axis."""
    return {
        "buttons": [{"label": label, "method": "update", "args": [data, layout]} for label, data, layout in buttons],
        "direction": "down",
        "x": x,
        "xanchor": "left",
        "y": 1.18,
        "yanchor": "top",
        "showactive": True,
    }


def phase_figure(curves: pd.DataFrame) -> Optional[object]:
    """ThermoLion's diagnostics per epoch, one panel per dataset (colour: the diagnostic, as the PNG)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if "gate_mean_mean" not in curves:
        return None
    sub = curves[curves["optimizer"].str.startswith("thermolion") & curves["gate_mean_mean"].notna()]
    if sub.empty:
        return None
    datasets = _ordered(sub["dataset"], DATASET_ORDER)
    fig = make_subplots(rows=1, cols=len(datasets), subplot_titles=datasets, shared_yaxes=True)
    variants = styles(_ordered(sub["optimizer"], OPTIMIZER_ORDER))
    for k, dataset in enumerate(datasets, start=1):
        for opt, style in variants.items():
            d = sub[(sub["dataset"] == dataset) & (sub["optimizer"] == opt)].sort_values("epoch")
            for (col, label), colour in zip(PHASE_COLUMNS, PHASE_COLOURS):
                if d.empty or f"{col}_mean" not in d:
                    continue
                name = label if len(variants) == 1 else f"{label} [{opt}]"
                fig.add_trace(
                    go.Scatter(
                        x=d["epoch"],
                        y=d[f"{col}_mean"].astype(float),
                        name=name,
                        legendgroup=name,
                        showlegend=k == 1,
                        line={**_line_style(style), "color": colour},
                    ),
                    row=1,
                    col=k,
                )
    fig.update_layout(height=380, template="plotly_white", title="ThermoLion's phase per epoch (mean over seeds)")
    return fig


def iqm_figure(table: list[dict]) -> Optional[object]:
    """IQM of the dataset scores with its 95% block-bootstrap interval (where it has one), per optimizer."""
    import plotly.graph_objects as go

    rows = [r for r in table if r.get("iqm") is not None and not pd.isna(r.get("iqm"))]
    if not rows:
        return None
    style = styles([r["optimizer"] for r in rows])
    fig = go.Figure()
    for r in rows:
        has_ci = r.get("iqm_low") is not None and not pd.isna(r.get("iqm_low"))  # blocks.py: none for some
        name = f"{r['optimizer']} ({r['missing']} missing)" if r.get("missing") else r["optimizer"]
        interval = f"[{r['iqm_low']:.3f}, {r['iqm_high']:.3f}]" if has_ci else f"(no CI: {r.get('no_ci')})"
        fig.add_trace(
            go.Scatter(
                x=[r["iqm"]],
                y=[name],
                mode="markers",
                name=name,
                marker={"color": style[r["optimizer"]]["color"], "size": 10},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [r["iqm_high"] - r["iqm"]],
                    "arrayminus": [r["iqm"] - r["iqm_low"]],
                }
                if has_ci
                else {"visible": False},
                hovertemplate=f"{name}: IQM %{{x:.3f}} {interval}<extra></extra>",
            )
        )
    fig.update_layout(
        title="IQM of the dataset scores, 95% block-bootstrap CI",
        height=max(260, 120 + 28 * len(rows)),
        template="plotly_white",
        yaxis={"autorange": "reversed"},
        xaxis_title="IQM score (1 = the best optimizer's mean, 0 = chance)",
    )
    return fig


def profile_figure(ratios: dict, tau_max: float) -> Optional[object]:
    """AlgoPerf's performance profile: share of datasets whose time-to-target ratio is at most τ."""
    import plotly.graph_objects as go

    if not ratios:
        return None
    frame = pd.DataFrame(ratios)
    if frame.empty:
        return None
    taus = np.linspace(1.0, tau_max, 301)
    optimizers = _ordered(frame.columns, OPTIMIZER_ORDER)
    style = styles(optimizers)
    fig = go.Figure()
    for opt in optimizers:
        r = frame[opt].astype(float).fillna(np.inf).to_numpy()  # None: never reached the target
        share = [(r <= t).mean() for t in taus]
        fig.add_trace(go.Scatter(x=taus, y=share, name=opt, line={**_line_style(style[opt]), "shape": "hv"}))
    fig.update_layout(
        title="Performance profile (time to target, in steps)",
        xaxis_title="τ (ratio to the fastest)",
        yaxis_title="share of datasets with ratio ≤ τ",
        yaxis_range=[-0.02, 1.02],
        height=380,
        template="plotly_white",
    )
    return fig
