"""Plotly figures of the app: routing heatmaps, loss curves, accuracy bars, 2-D feature maps."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

COLOURSCALE = "Viridis"
DIVERGING = "RdBu"  # routing coefficients: red below 0, blue above (plotly's RdBu runs red to blue)

PAGE_TEMPLATE = "merge_explorer_page"
GRID = "rgba(128, 128, 128, 0.3)"  # reads on a white page and on a dark one
pio.templates[PAGE_TEMPLATE] = go.layout.Template(layout={
    "paper_bgcolor": "rgba(0, 0, 0, 0)", "plot_bgcolor": "rgba(0, 0, 0, 0)",
    "xaxis": {"gridcolor": GRID, "zerolinecolor": GRID, "linecolor": GRID},
    "yaxis": {"gridcolor": GRID, "zerolinecolor": GRID, "linecolor": GRID},
    "legend": {"bgcolor": "rgba(0, 0, 0, 0)"},
})
# Every figure of the app follows the page's light or dark mode: plotly's colours on a transparent background, whose
# titles, ticks and legends app/style.css turns to the page's text colour in dark mode (gradio gives plotly no theme).
# Merged once and registered: a default of "plotly+page" is merged again (and validated) for every figure made, 12 ms
# each, which was 15% of the server's Python time in a class of 30 (py-spy, bench/README.md); a registered one: 0.4 ms.
PAGE_DEFAULT = "merge_explorer"
pio.templates[PAGE_DEFAULT] = pio.templates.merge_templates("plotly", PAGE_TEMPLATE)
pio.templates.default = PAGE_DEFAULT


def empty_figure(message: str) -> go.Figure:
    """A blank figure with a centred message (what to do to fill it)."""
    figure = go.Figure()
    figure.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 14})
    figure.update_layout(xaxis={"visible": False}, yaxis={"visible": False}, height=260,
                         margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return figure


def routing_heatmap(routing: np.ndarray, layers: Sequence[int], experts: Sequence[str], title: str) -> go.Figure:
    """One image's routing weights: rows are upscaled blocks, columns experts; values on the cells and on hover.

    A weight is the coefficient with which that layer adds the expert's task vector (its change of the pretrained
    weights) for this image: not a probability, so it may be negative or above 1, and a row need not sum to 1. A
    diverging colour scale centred on 0 shows the sign.
    """
    routing = np.asarray(routing)
    finite = routing[np.isfinite(routing)]
    reach = float(np.abs(finite).max()) if finite.size else 1.0
    figure = go.Figure(
        go.Heatmap(
            z=routing,
            x=short_names(experts),
            y=[f"block {i}" for i in layers],
            colorscale=DIVERGING,
            zmid=0.0,
            zmin=-reach,
            zmax=reach,
            colorbar={"title": {"text": "coefficient"}},
            hovertemplate="%{y}: expert %{x}'s task vector added with coefficient %{z:.3f}<extra></extra>",
            texttemplate="%{z:.2f}",
        )
    )
    figure.update_layout(
        title={"text": title, "subtitle": {"text": "task-vector coefficients, not probabilities:<br>"
                                                   "they may be negative or above 1 and need not sum to 1"}},
        xaxis_title="expert (task it was fine-tuned on)", yaxis_title="layer",
        yaxis={"autorange": "reversed"}, height=320 + 18 * len(layers), margin={"t": 90},
    )
    return figure


def short_names(names: Sequence[str]) -> list[str]:
    """Names without the prefix they all share up to an underscore (``pocket_digits`` -> ``digits``)."""
    names = list(names)
    prefix = os.path.commonprefix(names)
    prefix = prefix[: prefix.rfind("_") + 1] if "_" in prefix else ""
    return [n[len(prefix):] or n for n in names] if len(names) > 1 else names


MANY_TASKS = 8
"""Above this many tasks the routing per task is drawn one panel per layer (tasks x experts), not one per task."""


def task_routing_heatmaps(average: np.ndarray, tasks: Sequence[str], layers: Sequence[int],
                          experts: Sequence[str]) -> go.Figure:
    """The mean routing of each task's images (``average``: tasks x layers x experts), one shared colour scale.

    Up to :data:`MANY_TASKS` tasks, one panel per task (layers x experts); with more, one panel per layer (images of
    each task x experts): 20 tasks made 20 panels whose expert labels ran into each other.
    """
    average = np.asarray(average)
    if len(tasks) > MANY_TASKS:
        return _routing_per_layer(average, tasks, layers, experts)
    experts = short_names(experts)
    columns = min(3, len(tasks))
    rows = -(-len(tasks) // columns)
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=[f"images of {t}" for t in tasks],
                           horizontal_spacing=0.08, vertical_spacing=0.25 / max(rows - 1, 1) + 0.05)
    low, high = float(average.min()), float(average.max())
    for i, task in enumerate(tasks):
        figure.add_trace(
            go.Heatmap(
                z=average[i], x=list(experts), y=[f"block {b}" for b in layers], zmin=low, zmax=high,
                colorscale=COLOURSCALE, showscale=i == 0, colorbar={"title": {"text": "coefficient"}},
                hovertemplate=f"images of {task}<br>%{{y}}, expert %{{x}}: coefficient %{{z:.3f}}<extra></extra>",
            ),
            row=i // columns + 1, col=i % columns + 1,
        )
    figure.update_yaxes(autorange="reversed")
    figure.update_xaxes(tickangle=-30)
    figure.update_layout(title="Average routing weights per task (rows: layers, columns: experts; each weight is the "
                               "coefficient of that expert's task vector, not a probability)",
                         height=300 * rows + 80, margin={"t": 80})
    return figure


def _routing_per_layer(average: np.ndarray, tasks: Sequence[str], layers: Sequence[int],
                       experts: Sequence[str]) -> go.Figure:
    """Many tasks: one panel per layer, rows the images of each task, columns the experts, every name labelled."""
    experts, rows_named = short_names(experts), short_names(tasks)
    columns = 2 if len(layers) <= 4 else 3
    rows = -(-len(layers) // columns)
    panel = 14 * len(tasks) + 70  # px: every task's row label readable at 1280 px
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=[f"block {b}" for b in layers],
                           horizontal_spacing=0.1, vertical_spacing=min(0.3, 90 / (panel * rows)))
    low, high = float(average.min()), float(average.max())
    for j, block in enumerate(layers):
        figure.add_trace(
            go.Heatmap(
                z=average[:, j, :], x=list(experts), y=list(rows_named), zmin=low, zmax=high,
                colorscale=COLOURSCALE, showscale=j == 0, colorbar={"title": {"text": "coefficient"}},
                hovertemplate=f"block {block}<br>images of %{{y}}, expert %{{x}}: %{{z:.3f}}<extra></extra>",
            ),
            row=j // columns + 1, col=j % columns + 1,
        )
    every = {"tickmode": "array", "tickfont": {"size": 9}}
    figure.update_yaxes(autorange="reversed", tickvals=list(rows_named), **every)
    figure.update_xaxes(tickangle=-60, tickvals=list(experts), **every)
    figure.update_layout(title={"text": "Average routing weights per layer",
                                "subtitle": {"text": "rows: each task's images; columns: experts; a weight is the "
                                                     "coefficient of that expert's task vector, not a probability"}},
                         height=panel * rows + 120, margin={"t": 80})
    return figure


LOSS_NAMES = {"entropy": "entropy (the paper's)", "im": "IM loss"}
"""How the plots name each adaptation loss (``wemoe.adaptation.adapt.LOSSES``)."""
LOSS_AXES = {
    "entropy": "entropy (nats, summed over tasks)",
    "im": "IM loss (nats, summed over tasks)",
}


def _segments(history: Sequence, losses: Sequence[str] | None) -> list[tuple[str | None, list[int], list[float]]]:
    """One merge's steps on a continued axis (1, 2, ... across adaptation runs), cut where the loss changes.

    ``losses`` names the loss of each step (``None`` or missing: unknown). Returns (loss, steps, values) pieces.
    """
    losses = list(losses or [])
    pieces: list[tuple[str | None, list[int], list[float]]] = []
    for index, record in enumerate(history):
        loss = losses[index] if index < len(losses) else None
        if not pieces or pieces[-1][0] != loss:
            pieces.append((loss, [], []))
        pieces[-1][1].append(index + 1)
        pieces[-1][2].append(record.loss)
    return pieces


def loss_curve(histories: Mapping[str, Sequence], losses: Mapping[str, Sequence[str]] | None = None) -> go.Figure:
    """The adaptation loss per step, one line per adapted merge, named by the loss used.

    ``losses`` maps a merge to the loss (``entropy`` or ``im``) of each step of its history. Steps continue across
    runs ("Adapt more" goes on at step 101 after 100 steps); a change of loss starts a new line, as the two losses'
    values are not comparable.
    """
    if not any(histories.values()):
        return empty_figure("No adaptation yet: merge with WEMoE, then adapt.")
    losses = losses or {}
    figure = go.Figure()
    used: list[str | None] = []
    pieces = {name: _segments(history, losses.get(name)) for name, history in histories.items() if history}
    for loss in (loss for parts in pieces.values() for loss, _, _ in parts):
        if loss not in used:
            used.append(loss)
    for name, parts in pieces.items():
        for loss, steps, values in parts:
            label = name if len(used) == 1 else f"{name} ({LOSS_NAMES.get(loss, 'loss')})"
            figure.add_trace(go.Scatter(x=steps, y=values, mode="lines", name=label))
    if len(used) == 1 and used[0] in LOSS_NAMES:
        title, axis = f"Adaptation: {LOSS_NAMES[used[0]]} per step", LOSS_AXES[used[0]]
    else:
        names = " and ".join(LOSS_NAMES[loss] for loss in used if loss in LOSS_NAMES)
        title, axis = "Adaptation loss per step" + (f" ({names})" if names else ""), "loss (nats, summed over tasks)"
    figure.update_layout(title=title, xaxis_title="step (counted over every adaptation run)", yaxis_title=axis,
                         height=320)
    return figure


def legend_below(figure: go.Figure) -> go.Figure:
    """A horizontal legend under the plot, inside the figure: at the right it took a third of a phone's width.

    Placed on the figure's bottom edge and as wide as the figure (``container`` references), plotly keeps room for it
    under the axis titles, as many rows as the width needs (below the plot in the plot's own units it covered the x
    axis title; as wide as the plot, a phone got one entry per row).
    """
    figure.update_layout(legend={"orientation": "h", "xref": "container", "x": 0.0, "xanchor": "left",
                                 "yref": "container", "y": 0.0, "yanchor": "bottom"})
    return figure


def task_entropy_curve(history: Sequence, name: str) -> go.Figure:
    """Per-task mean entropy per step of one adapted merge (steps counted over every adaptation run)."""
    if not history:
        return empty_figure("No adaptation yet.")
    figure = go.Figure()
    steps = list(range(1, len(history) + 1))
    for task in history[0].entropy:
        figure.add_trace(go.Scatter(x=steps, y=[r.entropy[task] for r in history], mode="lines", name=task))
    figure.update_layout(title=f"{name}: prediction entropy per task", xaxis_title="step", yaxis_title="entropy (nats)",
                         height=320)
    return legend_below(figure)


def accuracy_bars(table: pd.DataFrame) -> go.Figure:
    """Grouped bars: tasks on the x axis, one bar per model."""
    if table is None or table.empty:
        return empty_figure("Run the evaluation to fill this chart.")
    tasks = [c for c in table.columns if c != "average"]  # the average first and short task names, as in the table
    table = table[[c for c in ("average", *tasks) if c in table.columns]]
    table = table.rename(columns=dict(zip(tasks, short_names(tasks), strict=True)))
    figure = go.Figure()
    for model, row in table.iterrows():
        figure.add_trace(go.Bar(name=str(model), x=[str(c) for c in row.index], y=row.values,
                                hovertemplate=f"{model}<br>%{{x}}: %{{y:.1f}}%<extra></extra>"))
    figure.update_layout(barmode="group", title="Accuracy per task (%)",
                         yaxis={"title": "accuracy (%)", "range": [0, 100]}, height=380)
    return legend_below(figure)


def feature_maps(points: np.ndarray, true_task: Sequence[str], dominant: Sequence[str], method: str) -> go.Figure:
    """Two side-by-side scatter plots of the same 2-D map: coloured by true task, and by dominant expert."""
    points = np.asarray(points)
    figure = make_subplots(rows=1, cols=2, subplot_titles=["coloured by true task", "coloured by dominant expert"])
    names = list(dict.fromkeys([*true_task, *dominant]))
    palette = ["#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A",
               "#19D3F3", "#FF6692", "#B6E880", "#FF97FF", "#FECB52"]
    colours = {n: palette[i % len(palette)] for i, n in enumerate(names)}
    for col, labels in ((1, list(true_task)), (2, list(dominant))):
        for name in dict.fromkeys(labels):
            mask = np.array([label == name for label in labels])
            figure.add_trace(
                go.Scattergl(x=points[mask, 0], y=points[mask, 1], mode="markers", name=name, legendgroup=name,
                             showlegend=col == 1 or name not in true_task, marker={"size": 5, "color": colours[name]},
                             hovertemplate=f"{'task' if col == 1 else 'expert'}: {name}<extra></extra>"),
                row=1, col=col,
            )
    figure.update_layout(title=f"{method.upper()} of the WEMoE model's image features", height=420)
    for col in (1, 2):  # the map's own axes: their units mean nothing, their names say what the map is
        figure.update_xaxes(title_text=f"{method.upper()} 1", row=1, col=col)
        figure.update_yaxes(title_text=f"{method.upper()} 2", row=1, col=col)
    return figure
