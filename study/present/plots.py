"""Plotly figures of a study, each drawn from the tidy table (and, for training curves, Ray's per-epoch results).

One colour per arm across every figure, accuracies in points everywhere,
plain tick labels, and sizes that follow the page (``responsive``) while the
PNG export uses a fixed width. Figures can be redrawn for any finished,
interrupted or copied study without rerunning it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from scipy import stats
from plotly.subplots import make_subplots

from ..analyse.analysis import Grid, _nanmean, best_cells, best_of_k_band, cells
from ..define.claims import TIE
from ..define.roles import colours
from ..analyse.paired import compare_cells

CLIP = 10.0  # heatmap colours resolve the top CLIP points; everything further below is one colour
CELL_TEXT = 12  # px: one size in every cell of every panel (plotly would shrink each cell's text to fit it)


def _ticks(values) -> list[str]:
    return [f"{v:g}" for v in values]


def _grid(table: pd.DataFrame, values: str, lrs, wds) -> pd.DataFrame:
    """One column of a per-cell table as an lr x weight-decay grid (missing cells NaN)."""
    return table.pivot(index="lr", columns="weight_decay", values=values).reindex(index=lrs, columns=wds)


def _panels(arms: list[str], titles: list[str], per_row: int | None = None) -> tuple[go.Figure, list[dict]]:
    """One heatmap panel per arm, ``per_row`` to a row (all in one row by default); returns the figure
    and each panel's ``row``/``col``, and sets its height (440 px for one row)."""
    per_row = per_row or len(arms)
    rows = -(-len(arms) // per_row)
    # rows 330 px apart, 120 of them between panels: the axis title above, the next panel's title below
    fig = make_subplots(rows=rows, cols=per_row, subplot_titles=titles, shared_yaxes=True, horizontal_spacing=0.02,
                        vertical_spacing=120 / (330 * rows))
    where = [{"row": i // per_row + 1, "col": i % per_row + 1} for i in range(len(arms))]
    for w in where:
        fig.update_xaxes(title_text="decay rate λ", type="category", **w)
        if w["col"] == 1:
            fig.update_yaxes(title_text="learning rate η", type="category", **w)
    fig.update_layout(height=440 if rows == 1 else 160 + 330 * rows)
    return fig, where


def heatmaps(df: pd.DataFrame, g: Grid, label: str, runs: dict | None = None, per_row: int | None = None) -> go.Figure:
    """Test accuracy per (λ, η) cell and arm; colour = points below the validation-chosen best cell.
    ``per_row``: panels to a row (default: all in one; an image for a narrow viewer takes 2)."""
    c = cells(df)
    top = best_cells(c)["mean"].mean()
    fig, where = _panels(g.arms, g.arms, per_row)
    for arm, w in zip(g.arms, where):
        mine = c[c["arm"] == arm]
        mean, sd, div = (_grid(mine, col, g.lrs, g.wds) for col in ("mean", "sd", "diverged"))
        text = [[("" if np.isnan(m) else f"{m:.1f}") + ("" if np.isnan(s) else f"<br>±{s:.1f}") + (" ✗" if d > 0 else "")
                 + (" ⚠" if lr * wd >= 1 else "")
                 for m, s, d, wd in zip(mr, sr, dr, g.wds)] for mr, sr, dr, lr in zip(mean.values, sd.values, div.values, g.lrs)]
        links = [[(runs or {}).get((arm, lr, wd), "") for wd in g.wds] for lr in g.lrs]
        fig.add_trace(go.Heatmap(
            z=np.clip(mean.values - top, -CLIP, 0), x=_ticks(g.wds), y=_ticks(g.lrs), text=text,
            texttemplate="%{text}", textfont={"size": CELL_TEXT}, customdata=links, coloraxis="coloraxis",
            hovertemplate=f"{arm}<br>η=%{{y}} λ=%{{x}}<br>{label} %{{text}}<br>%{{customdata}}<extra></extra>",
        ), **w)
    fig.update_layout(
        title={"text": f"{label}, mean ± sd over seeds (points)<br><sup>colour: points below the best cell chosen "
                       f"on validation ({top:.1f}), clipped at −{CLIP:g}; ✗ diverged (chance); ⚠ η·λ ≥ 1</sup>"},
        coloraxis={"colorscale": "Viridis", "cmin": -CLIP, "cmax": 0,
                   "colorbar": {"title": "pts vs best", "thickness": 12}})
    return fig


def difference_heatmaps(g: Grid, baseline: str, test: str, correction: str, alpha: float,
                        per_row: int | None = None) -> go.Figure | None:
    """Arm − baseline per cell (paired over seeds); * marks cells significant after one correction over
    every panel's λ > 0 cells; λ = 0 is one trial shared by all arms, shown as such."""
    others = [a for a in g.arms if a != baseline]
    if baseline not in g.arms or not others:
        return None
    cmp = compare_cells(g, baseline, test, correction, alpha)
    bound = max([float(cmp["diff"].abs().max()) if len(cmp) else 0.0, 1.0])
    fig, where = _panels(others, [f"{a} − {baseline}" for a in others], per_row)
    for a, w in zip(others, where):
        d = cmp[cmp["arm"] == a]
        z, sig = _grid(d, "diff", g.lrs, g.wds), _grid(d.assign(s=d["significant"].astype(float)), "s", g.lrs, g.wds)
        text = [["shared" if wd == 0 and not np.isnan(v) else ("" if np.isnan(v) else f"{v:+.1f}")
                 + ("*" if s == 1 else "") + (" ⚠" if lr * wd >= 1 else "")
                 for v, s, wd in zip(vr, sr, g.wds)] for vr, sr, lr in zip(z.values, sig.values, g.lrs)]
        fig.add_trace(go.Heatmap(z=z.values, x=_ticks(g.wds), y=_ticks(g.lrs), text=text, texttemplate="%{text}",
                                 textfont={"size": CELL_TEXT}, coloraxis="coloraxis",
                                 hovertemplate=f"{a} − {baseline}<br>η=%{{y}} λ=%{{x}}<br>%{{text}} pt<extra></extra>"),
                      **w)
    tested = int(cmp["p"].notna().sum())
    fig.update_layout(title={"text": f"difference to {baseline}, points, paired by seed<br><sup>* significant: {test} "
                                     f"test over seeds, {correction} correction over all {tested} λ > 0 cells shown, "
                                     f"α = {alpha:g}; λ = 0 is one trial shared by every arm; ⚠ η·λ ≥ 1</sup>"},
                      coloraxis={"colorscale": "RdBu", "cmid": 0, "cmin": -bound, "cmax": bound,
                                 "colorbar": {"title": "pts", "thickness": 12}})
    return fig


def tuning_curves(g: Grid, label: str) -> go.Figure:
    """Expected test score of the validation-best of k random cells: the mean of each seed's curve, with
    a 95% t-band over seeds (at k = every cell, the tuned accuracy of the ``best`` claim)."""
    fig = go.Figure()
    colour = colours(g.arms)
    for arm in g.arms:
        curve, lo, hi = best_of_k_band(g, arm)
        k = np.arange(1, len(curve) + 1)
        if np.isfinite(lo).all():
            fig.add_trace(go.Scatter(x=np.r_[k, k[::-1]], y=np.r_[hi, lo[::-1]], fill="toself", opacity=0.2,
                                     line={"width": 0, "color": colour[arm]}, showlegend=False, legendgroup=arm,
                                     hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=k, y=curve, name=arm, legendgroup=arm, mode="lines", line={"color": colour[arm]}))
    fig.update_layout(title="expected test accuracy after trying k random cells (the best on validation wins)",
                      xaxis={"title": "k (cells tried)", "type": "log", "tickvals": [1, 2, 3, 5, 10, 20, 50, 100],
                             "ticktext": ["1", "2", "3", "5", "10", "20", "50", "100"]},
                      yaxis_title=f"{label} (points)", height=420)
    return fig


def cell_distribution(df: pd.DataFrame, g: Grid, label: str) -> go.Figure:
    """Empirical distribution of cell means (an EDF as in Optuna's plot_edf, over the grid's cells
    rather than over trials, since seeds of a cell are one setting): further right, less tuning needed."""
    c = cells(df)
    fig = go.Figure()
    colour = colours(g.arms)
    for arm in g.arms:
        vals = np.sort(c[c["arm"] == arm]["mean"].to_numpy())
        fig.add_trace(go.Scatter(x=vals, y=np.arange(1, len(vals) + 1) / len(vals), name=arm, mode="lines",
                                 line_shape="hv", line={"color": colour[arm]}))
    fig.update_layout(title="distribution of cell accuracies", xaxis_title=f"{label} (points)",
                      yaxis={"title": "fraction of cells ≤ x", "tickformat": ".0%"}, height=420)
    return fig


def effective_decay_curves(g: Grid, effective: dict[str, float], label: str) -> go.Figure | None:
    """Accuracy against the effective decay rate λ_eff = λ · (mean λ_p/λ): arms compared at equal decay
    mass. Per λ > 0, the η with the best validation mean at that λ; error bars are 95% t-intervals
    of the test mean over seeds."""
    if not effective:
        return None
    fig = go.Figure()
    colour = colours(g.arms)
    for a, arm in enumerate(g.arms):
        if not effective.get(arm):
            continue
        xs, ys, half, etas = [], [], [], []
        for j, wd in enumerate(g.wds):
            if wd <= 0:
                continue
            val = _nanmean(g.val[a, :, j], axis=-1)
            if not np.isfinite(val).any():
                continue
            tied = np.flatnonzero(val >= np.nanmax(val) - TIE)  # η tied on validation share the pick
            per_seed = _nanmean(g.test[a, tied, j], axis=0)
            seeds = per_seed[np.isfinite(per_seed)]
            xs.append(wd * effective[arm])
            ys.append(seeds.mean())
            etas.append(", ".join(f"{g.lrs[i]:g}" for i in tied))
            half.append(float(stats.t.ppf(0.975, len(seeds) - 1) * stats.sem(seeds)) if len(seeds) >= 3 else np.nan)
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=f"{arm} (λ_eff = {effective[arm]:.2f} λ)",
                                     error_y={"type": "data", "array": half, "visible": True}, customdata=etas,
                                     hovertemplate="λ_eff=%{x:.3g}<br>best η on validation %{customdata}"
                                                   "<br>%{y:.1f} pt<extra></extra>",
                                     line={"color": colour[arm]}))
    fig.update_layout(title="accuracy against effective decay<br><sup>at each λ, the η best on validation; "
                            "95% t-intervals over seeds</sup>",
                      xaxis={"title": "effective decay rate λ_eff = λ · mean(λ_l / λ)", "type": "log", "dtick": 1},
                      yaxis_title=f"{label} (points)", height=420)
    return fig


PART_STYLE = {"total": ("lpwd − wd", "#222222", "solid"), "placement": ("placement: pwd − wd", "#1f77b4", "dot"),
              "decay mass": ("decay mass: pwd@lpwd-mass − pwd", "#d62728", "solid"),
              "layer shape": ("layer shape: lpwd − pwd@lpwd-mass", "#2ca02c", "dash")}


def decomposition_curves(decomposition: dict | None, per_row: int = 3) -> go.Figure | None:
    """lpwd − wd split into placement, decay mass and layer shape, λ by λ: the test accuracy averaged
    over η in the first panel, then one panel per η. Error bars: 95% paired t-intervals over seeds
    (uncorrected). The parts add up to the total in every cell, and where mass closes lpwd's edge over
    pwd and where layer shape carries it changes with λ, which one share cannot show."""
    if not decomposition:
        return None
    c = decomposition["cells"]
    panels = [("mean over η", c["parts"])] + [(f"η = {lr:g}", row) for lr, row in zip(c["lrs"], c["per_lr"])]
    if len(c["lrs"]) == 1:
        panels = panels[:1]
    cols = min(per_row, len(panels))
    rows = -(-len(panels) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[t for t, _ in panels], shared_yaxes=True,
                        horizontal_spacing=0.04, vertical_spacing=0.24 / rows)
    x = c["lambdas"]
    for k, (title, table) in enumerate(panels):
        r, col = k // cols + 1, k % cols + 1
        for part, (name, colour, dash) in PART_STYLE.items():
            d = table[part]
            up = [h - m for h, m in zip(d["hi"], d["diff"])]
            down = [m - lo for m, lo in zip(d["diff"], d["lo"])]
            fig.add_trace(go.Scatter(x=x, y=d["diff"], mode="lines+markers", name=name, legendgroup=part,
                                     showlegend=k == 0, line={"color": colour, "dash": dash},
                                     error_y={"type": "data", "array": up, "arrayminus": down, "visible": True},
                                     hovertemplate=f"{name}<br>λ=%{{x:g}}<br>%{{y:+.1f}} pt<extra>{title}</extra>"),
                          row=r, col=col)
        fig.add_hline(y=0, line={"color": "#999", "width": 1}, row=r, col=col)
        fig.update_xaxes(type="log", tickvals=x, ticktext=_ticks(x), title_text="λ" if r == rows else None,
                         row=r, col=col)
    fig.update_yaxes(title_text="points", row=1, col=1)
    fig.update_layout(title=f"lpwd − wd, split λ by λ<br><sup>test accuracy, {c['seeds']} seeds, 95% paired "
                            "t-intervals (uncorrected); the parts add up to the total in every cell</sup>",
                      height=300 * rows + 170, legend={"orientation": "h", "y": -0.18 if rows == 1 else -0.06})
    return fig


def training_curves(histories: dict[tuple[str, str], pd.DataFrame], arms: list[str]) -> go.Figure:
    """Validation accuracy, R_op and weight norm per epoch: each arm's best cell (solid) and worst (dotted)."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=["validation accuracy (points)",
                                                        "R_op (share of weights crossing 0)", "weight norm"])
    colour = colours(arms)
    for (arm, which), (label, h) in histories.items():
        for col, key in enumerate(["val_acc", "r_op", "weight_norm"], start=1):
            y = h[key] * (100 if key == "val_acc" else 1)
            # R_op is probed every diagnostics_every-th step: an epoch without a probed step has no value,
            # and the line is drawn across it rather than broken
            fig.add_trace(go.Scatter(x=h["epoch"], y=y, name=f"{arm} {which}: {label}", legendgroup=f"{arm}{which}",
                                     showlegend=col == 1, mode="lines", connectgaps=True,
                                     line={"color": colour[arm], "dash": "solid" if which == "best" else "dot"}),
                          row=1, col=col)
            fig.update_xaxes(title_text="epoch", row=1, col=col)
    fig.update_layout(title="training curves<br><sup>each arm's best cell (solid) and worst cell (dotted), seed "
                            "of the first finished trial; R_op drawn across epochs it was not probed in</sup>",
                      height=460,
                      legend={"orientation": "h", "y": -0.25})
    return fig


def forest(result: dict, question: str) -> go.Figure:
    """A forest plot of one question across studies: each study's effect (arm − baseline, the mean
    of its per-seed paired differences) with its 95% t-interval, one colour per arm, and the
    pooled random-effects estimate with its Hartung–Knapp interval as a diamond at the bottom, the
    prediction interval for a new setting as a thin line through it."""
    from ..define.claims import CLAIMS, QUESTIONS
    from ..analyse.verdict import _scale

    arms, studies = result["arms"], result["studies"]
    claim = CLAIMS[result["primary"][question]]
    m = _scale(claim.unit)[0]
    colour = colours([result["baseline"], *arms])
    small = "<span style='font-size:12px'>{}</span>"  # sub-labels at 12 px: plotly's <sub> draws them at 7
    labels = [f"{r['study']}<br>" + small.format(f"{r['dataset']}, {r['model']}, {r['start']}, {r['base']}")
              for r in studies]
    pooled_label = "<b>pooled</b><br>" + small.format("random effects, HKSJ")
    rows = labels + [pooled_label]
    fig = go.Figure()
    spread = 0.6 / max(1, len(arms))
    for i, arm in enumerate(arms):
        offset = (i - (len(arms) - 1) / 2) * spread
        e = [r["arms"][arm][question] for r in studies]
        p = result["pooled"][arm][question]
        y = [len(rows) - 1 - k + offset for k in range(len(studies))]
        x = [m * d["diff"] for d in e]
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="markers", name=arm, legendgroup=arm, marker={"color": colour[arm], "size": 8},
            # no bar where a setting has no interval (both arms tuned decay off on every seed)
            error_x={"type": "data", "symmetric": False,
                     "array": [None if d["hi"] is None else m * d["hi"] - v for d, v in zip(e, x)],
                     "arrayminus": [None if d["lo"] is None else v - m * d["lo"] for d, v in zip(e, x)],
                     "visible": True},
            customdata=[[d["answer"], *(np.nan if d[k] is None else m * d[k] for k in ("lo", "hi"))] for d in e],
            hovertemplate=arm + ": %{x:.2f} [%{customdata[1]:.2f}, %{customdata[2]:.2f}]<br>study's answer: "
                          "%{customdata[0]}<extra></extra>"))
        if np.isfinite(p.get("pred_lo") if p.get("pred_lo") is not None else np.nan):
            fig.add_trace(go.Scatter(
                x=[m * p["pred_lo"], m * p["pred_hi"]], y=[offset, offset], mode="lines", legendgroup=arm,
                showlegend=False, line={"color": colour[arm], "width": 1.5, "dash": "dot"},
                hovertemplate=f"{arm}: a new setting like these, %{{x:.2f}} (95% prediction interval)<extra></extra>"))
        fig.add_trace(go.Scatter(
            x=[m * p["estimate"]], y=[offset], mode="markers", name=f"{arm} pooled", legendgroup=arm,
            showlegend=False, marker={"color": colour[arm], "size": 14, "symbol": "diamond"},
            error_x={"type": "data", "symmetric": False, "array": [m * (p["hi"] - p["estimate"])],
                     "arrayminus": [m * (p["estimate"] - p["lo"])], "visible": True, "thickness": 3},
            hovertemplate=(f"{arm} pooled: %{{x:.2f}} [{m * p['lo']:.2f}, {m * p['hi']:.2f}]<br>{p['answer']}; "
                           f"I² = {100 * p['i2']:.0f}%<extra></extra>")))
    fig.add_vline(x=0, line={"color": "#888", "dash": "dash"})
    fig.update_yaxes(tickvals=list(range(len(rows)))[::-1], ticktext=rows, range=[-0.7, len(rows) - 0.3],
                     automargin=True)
    better = "→ arm better" if claim.higher_is_better else "← arm better"
    fig.update_layout(
        title={"text": f"{QUESTIONS[question]}? {claim.short}, arm − {result['baseline']} ({better})<br><sup>"
                       "95% intervals; pooled: the diamond's line, a new setting's: dotted</sup>"},
        xaxis_title=f"{claim.short} difference ({claim.unit})", height=140 + 62 * len(rows),
        legend={"orientation": "h", "y": -120 / (140 + 62 * len(rows)), "x": 0}, margin={"l": 20, "r": 20})
    return fig
