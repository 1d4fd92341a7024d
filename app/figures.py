"""Plotly figures of the app: routing heatmaps, loss curves, accuracy bars, 2-D feature maps."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLOURSCALE = "Viridis"


def empty_figure(message: str) -> go.Figure:
    """A blank figure with a centred message (what to do to fill it)."""
    figure = go.Figure()
    figure.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 14})
    figure.update_layout(xaxis={"visible": False}, yaxis={"visible": False}, height=260, margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return figure


def routing_heatmap(routing: np.ndarray, layers: Sequence[int], experts: Sequence[str], title: str) -> go.Figure:
    """One image's routing weights: rows are upscaled blocks, columns experts; values on hover."""
    figure = go.Figure(
        go.Heatmap(
            z=np.asarray(routing),
            x=list(experts),
            y=[f"block {i}" for i in layers],
            colorscale=COLOURSCALE,
            colorbar={"title": "weight"},
            hovertemplate="%{y}, expert %{x}: %{z:.3f}<extra></extra>",
            texttemplate="%{z:.2f}",
        )
    )
    figure.update_layout(title=title, xaxis_title="expert (task it was fine-tuned on)", yaxis_title="layer",
                         yaxis={"autorange": "reversed"}, height=300 + 18 * len(layers), margin={"t": 50})
    return figure


def short_names(names: Sequence[str]) -> list[str]:
    """Names without the prefix they all share up to an underscore (``pocket_digits`` -> ``digits``)."""
    names = list(names)
    prefix = os.path.commonprefix(names)
    prefix = prefix[: prefix.rfind("_") + 1] if "_" in prefix else ""
    return [n[len(prefix):] or n for n in names] if len(names) > 1 else names


def task_routing_heatmaps(average: np.ndarray, tasks: Sequence[str], layers: Sequence[int], experts: Sequence[str]) -> go.Figure:
    """Per task (one panel each), the mean routing of its images: layers x experts, one shared colour scale."""
    average = np.asarray(average)
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
                colorscale=COLOURSCALE, showscale=i == 0, colorbar={"title": "weight"},
                hovertemplate=f"images of {task}<br>%{{y}}, expert %{{x}}: %{{z:.3f}}<extra></extra>",
            ),
            row=i // columns + 1, col=i % columns + 1,
        )
    figure.update_yaxes(autorange="reversed")
    figure.update_xaxes(tickangle=-30)
    figure.update_layout(title="Average routing weights per task (rows: layers, columns: experts)",
                         height=300 * rows + 80, margin={"t": 80})
    return figure


def loss_curve(histories: Mapping[str, Sequence], title: str = "Adaptation: entropy loss per step") -> go.Figure:
    """Loss (sum over tasks of the mean prediction entropy) per step, one line per adapted merge."""
    if not any(histories.values()):
        return empty_figure("No adaptation yet: merge with WEMoE, then adapt.")
    figure = go.Figure()
    for name, history in histories.items():
        if history:
            figure.add_trace(go.Scatter(x=[r.step for r in history], y=[r.loss for r in history], mode="lines", name=name))
    figure.update_layout(title=title, xaxis_title="step", yaxis_title="entropy (nats, summed over tasks)", height=320)
    return figure


def task_entropy_curve(history: Sequence, name: str) -> go.Figure:
    """Per-task mean entropy per step of one adapted merge."""
    if not history:
        return empty_figure("No adaptation yet.")
    figure = go.Figure()
    for task in history[0].entropy:
        figure.add_trace(go.Scatter(x=[r.step for r in history], y=[r.entropy[task] for r in history], mode="lines", name=task))
    figure.update_layout(title=f"{name}: prediction entropy per task", xaxis_title="step", yaxis_title="entropy (nats)", height=320)
    return figure


def accuracy_bars(table: pd.DataFrame) -> go.Figure:
    """Grouped bars: tasks on the x axis, one bar per model."""
    if table is None or table.empty:
        return empty_figure("Run the evaluation to fill this chart.")
    figure = go.Figure()
    for model, row in table.iterrows():
        figure.add_trace(go.Bar(name=str(model), x=[str(c) for c in row.index], y=row.values,
                                hovertemplate=f"{model}<br>%{{x}}: %{{y:.1f}}%<extra></extra>"))
    figure.update_layout(barmode="group", title="Accuracy per task (%)", yaxis={"title": "accuracy (%)", "range": [0, 100]},
                         height=380, legend={"orientation": "h", "y": -0.2})
    return figure


def feature_maps(points: np.ndarray, true_task: Sequence[str], dominant: Sequence[str], method: str) -> go.Figure:
    """Two side-by-side scatter plots of the same 2-D map: coloured by true task, and by dominant expert."""
    points = np.asarray(points)
    figure = make_subplots(rows=1, cols=2, subplot_titles=["coloured by true task", "coloured by dominant expert"])
    names = list(dict.fromkeys([*true_task, *dominant]))
    palette = ["#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880", "#FF97FF", "#FECB52"]
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
    return figure
