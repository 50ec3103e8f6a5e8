"""Plotly figures of a study: heatmaps, differences, tuning curves, training curves.

Every figure is built from the tidy table (and, for training curves, the
per-epoch results Ray keeps per trial), so figures can be redrawn for any
finished, interrupted or copied study without rerunning it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .analysis import best_of_k_band, cells, compare


def _labels(values) -> list[str]:
    return [f"{v:.0e}" if v else "0" for v in values]


def _grid(table: pd.DataFrame, values: str, lrs, wds) -> pd.DataFrame:
    """One column of a per-cell table as an lr x weight-decay grid (missing cells NaN)."""
    return table.pivot(index="lr", columns="weight_decay", values=values).reindex(index=lrs, columns=wds)


def heatmaps(df: pd.DataFrame, metric: str) -> go.Figure:
    """One heatmap per variant, x = weight decay, y = lr, one shared colour scale."""
    c = cells(df)
    variants = list(dict.fromkeys(df["variant"]))
    lrs, wds = sorted(c["lr"].unique()), sorted(c["weight_decay"].unique())
    fig = make_subplots(rows=1, cols=len(variants), subplot_titles=variants, shared_yaxes=True,
                        horizontal_spacing=0.03)
    lo, hi = c["mean"].min(), c["mean"].max()
    for i, v in enumerate(variants, start=1):
        mine = c[c["variant"] == v]
        grid, sd, div = (_grid(mine, col, lrs, wds) for col in ("mean", "sd", "diverged"))
        text = [[("" if np.isnan(m) else f"{m:.1f}") + ("" if np.isnan(s) else f"±{s:.1f}") + (" ✗" if d and d > 0 else "")
                 for m, s, d in zip(mr, sr, dr)] for mr, sr, dr in zip(grid.values, sd.values, div.values)]
        fig.add_trace(go.Heatmap(
            z=grid.values, x=_labels(wds), y=_labels(lrs), text=text, texttemplate="%{text}",
            coloraxis="coloraxis", hovertemplate=f"{v}<br>lr=%{{y}}<br>wd=%{{x}}<br>{metric}=%{{z:.2f}}<extra></extra>",
        ), row=1, col=i)
        fig.update_xaxes(title_text="weight decay λ", type="category", row=1, col=i)
    fig.update_yaxes(title_text="learning rate η", type="category", row=1, col=1)
    fig.update_layout(title=f"{metric} (points, mean over seeds; ✗ = diverged, counted as chance)",
                      coloraxis={"colorscale": "Viridis", "cmin": lo, "cmax": hi}, height=420,
                      width=max(500, 330 * len(variants)))
    return fig


def difference_heatmaps(df: pd.DataFrame, baseline: str) -> go.Figure | None:
    """Variant - baseline per cell, diverging scale centred at 0; * marks p < 0.05 (Welch)."""
    variants = [v for v in dict.fromkeys(df["variant"]) if v != baseline]
    if baseline not in set(df["variant"]) or not variants:
        return None
    lrs, wds = sorted(df["lr"].unique()), sorted(df["weight_decay"].unique())
    diffs = {v: compare(df, v, baseline) for v in variants}
    bound = max(float(d["diff"].abs().max()) for d in diffs.values() if len(d)) or 1.0
    fig = make_subplots(rows=1, cols=len(variants), subplot_titles=[f"{v} − {baseline}" for v in variants],
                        shared_yaxes=True, horizontal_spacing=0.03)
    for i, v in enumerate(variants, start=1):
        d = diffs[v]
        z, p = _grid(d, "diff", lrs, wds), _grid(d, "p", lrs, wds)
        text = [[("" if np.isnan(a) else f"{a:+.1f}") + ("*" if not np.isnan(q) and q < 0.05 else "")
                 for a, q in zip(ar, qr)] for ar, qr in zip(z.values, p.values)]
        fig.add_trace(go.Heatmap(z=z.values, x=_labels(wds), y=_labels(lrs), text=text, texttemplate="%{text}",
                                 coloraxis="coloraxis"), row=1, col=i)
        fig.update_xaxes(title_text="weight decay λ", type="category", row=1, col=i)
    fig.update_yaxes(title_text="learning rate η", type="category", row=1, col=1)
    fig.update_layout(title=f"difference to {baseline} (points; * = p < 0.05, Welch's t-test over seeds)",
                      coloraxis={"colorscale": "RdBu", "cmid": 0, "cmin": -bound, "cmax": bound}, height=420,
                      width=max(500, 330 * len(variants)))
    return fig


def tuning_curves(df: pd.DataFrame, metric: str) -> go.Figure:
    """Expected best score after k random cells (with a 90% bootstrap band over seeds)."""
    fig = go.Figure()
    for v in dict.fromkeys(df["variant"]):
        curve, lo, hi = best_of_k_band(df, v)
        k = np.arange(1, len(curve) + 1)
        fig.add_trace(go.Scatter(x=np.r_[k, k[::-1]], y=np.r_[hi, lo[::-1]], fill="toself", opacity=0.2,
                                 line={"width": 0}, showlegend=False, legendgroup=v, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=k, y=curve, name=v, legendgroup=v, mode="lines"))
    fig.update_layout(title=f"expected best {metric} after k randomly chosen cells", xaxis_title="k (cells tried)",
                      yaxis_title=f"{metric} (points)", xaxis_type="log", height=420, width=700)
    return fig


def cell_distribution(df: pd.DataFrame, metric: str) -> go.Figure:
    """Empirical distribution of cell means: the further right, the less tuning matters."""
    c = cells(df)
    fig = go.Figure()
    for v in dict.fromkeys(df["variant"]):
        vals = np.sort(c[c["variant"] == v]["mean"].to_numpy())
        fig.add_trace(go.Scatter(x=vals, y=np.arange(1, len(vals) + 1) / len(vals), name=v, mode="lines",
                                 line_shape="hv"))
    fig.update_layout(title="empirical distribution of cell accuracies", xaxis_title=f"{metric} (points)",
                      yaxis_title="fraction of cells ≤ x", height=420, width=700)
    return fig


def training_curves(history: dict[str, pd.DataFrame]) -> go.Figure:
    """val accuracy, R_op and weight norm per epoch for each variant's best cell."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=["val accuracy", "R_op (opposing penalty rate)", "weight norm"])
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for i, (label, h) in enumerate(history.items()):
        color = palette[i % len(palette)]
        for col, key in enumerate(["val_acc", "r_op", "weight_norm"], start=1):
            fig.add_trace(go.Scatter(x=h["epoch"], y=h[key], name=label, legendgroup=label, showlegend=col == 1,
                                     line={"color": color}), row=1, col=col)
            fig.update_xaxes(title_text="epoch", row=1, col=col)
    fig.update_layout(title="training curves of each variant's best cell", height=420, width=1200)
    return fig
