"""The app's plotly figures as a phone shows them: legends under the plot, maps with named axes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app import figures


@dataclass
class Step:
    entropy: dict[str, float]


def _legend_inside_below(figure) -> bool:
    legend = figure.layout.legend
    return legend.orientation == "h" and legend.y < 0 and legend.yanchor == "top"


def test_the_entropy_curve_keeps_its_legend_under_the_plot():
    figure = figures.task_entropy_curve([Step({"digits": 1.0, "shapes": 2.0}), Step({"digits": 0.5, "shapes": 1.5})],
                                        "wemoe")
    assert [trace.name for trace in figure.data] == ["digits", "shapes"] and _legend_inside_below(figure)
    assert figure.layout.margin.b >= 80  # room for the legend inside the figure


def test_a_feature_map_names_its_axes():
    points = np.arange(12, dtype=float).reshape(6, 2)
    figure = figures.feature_maps(points, ["a", "a", "b", "b", "c", "c"], ["a", "b", "b", "b", "c", "a"], "umap")
    titles = [figure.layout[axis].title.text for axis in ("xaxis", "yaxis", "xaxis2", "yaxis2")]
    assert titles == ["UMAP 1", "UMAP 2", "UMAP 1", "UMAP 2"]
