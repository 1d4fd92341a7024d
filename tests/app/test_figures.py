"""The app's plotly figures as a phone shows them: legends under the plot, maps with named axes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app import figures


@dataclass
class Step:
    entropy: dict[str, float]


def _legend_inside_below(figure) -> bool:
    """A horizontal legend on the figure's bottom edge, as wide as the figure: plotly keeps room for it there."""
    legend = figure.layout.legend
    return (legend.orientation == "h" and (legend.xref, legend.yref) == ("container", "container")
            and legend.y == 0 and legend.yanchor == "bottom")


def test_the_entropy_curve_keeps_its_legend_under_the_plot():
    figure = figures.task_entropy_curve([Step({"digits": 1.0, "shapes": 2.0}), Step({"digits": 0.5, "shapes": 1.5})],
                                        "wemoe")
    assert [trace.name for trace in figure.data] == ["digits", "shapes"] and _legend_inside_below(figure)


def test_the_accuracy_bars_keep_their_legend_under_the_plot():
    import pandas as pd

    table = pd.DataFrame({"digits": [90.0, 80.0], "average": [85.0, 75.0]}, index=["experts", "task_arithmetic"])
    assert _legend_inside_below(figures.accuracy_bars(table))


def test_every_figure_is_drawn_on_the_page_background():
    """Transparent paper and plot, grid lines in a grey that reads on white and on black: the page's dark mode shows
    through (app/style.css gives plotly's text the page's colour there)."""
    for figure in (figures.empty_figure("nothing yet"), figures.routing_heatmap([[0.1, -0.2]], [0], ["a", "b"], "x")):
        layout = figure.layout.template.layout
        assert layout.paper_bgcolor == layout.plot_bgcolor == "rgba(0, 0, 0, 0)"
        assert layout.xaxis.gridcolor == layout.yaxis.gridcolor == figures.GRID


def test_a_feature_map_names_its_axes():
    points = np.arange(12, dtype=float).reshape(6, 2)
    figure = figures.feature_maps(points, ["a", "a", "b", "b", "c", "c"], ["a", "b", "b", "b", "c", "a"], "umap")
    titles = [figure.layout[axis].title.text for axis in ("xaxis", "yaxis", "xaxis2", "yaxis2")]
    assert titles == ["UMAP 1", "UMAP 2", "UMAP 1", "UMAP 2"]


def test_routing_per_task_turns_to_one_panel_per_layer_with_many_tasks():
    """#33 item 4: 20 tasks made 20 panels of 20 crowded expert labels; past MANY_TASKS one panel per layer holds
    every task's images as rows, every name on the axes, and the same numbers."""
    rng = np.random.default_rng(0)
    tasks = [f"task{i}" for i in range(20)]
    average = rng.normal(0.3, 0.05, (20, 4, 20))
    figure = figures.task_routing_heatmaps(average, tasks, [0, 1, 2, 3], tasks)
    assert [a.text for a in figure.layout.annotations] == ["block 0", "block 1", "block 2", "block 3"]
    assert len(figure.data) == 4 and [t.showscale for t in figure.data] == [True, False, False, False]
    for j, trace in enumerate(figure.data):
        np.testing.assert_array_equal(np.asarray(trace.z), average[:, j, :])
        assert list(trace.y) == tasks and list(trace.x) == tasks
    assert list(figure.layout.yaxis.tickvals) == tasks and list(figure.layout.xaxis4.tickvals) == tasks
    assert figure.layout.height >= 2 * 14 * 20  # two rows of panels, a readable row per task
    few = figures.task_routing_heatmaps(average[:3, :, :3], tasks[:3], [0, 1, 2, 3], tasks[:3])
    assert [a.text for a in few.layout.annotations] == ["images of task0", "images of task1", "images of task2"]
    np.testing.assert_array_equal(np.asarray(few.data[1].z), average[1, :, :3])


def test_the_page_template_is_merged_once_not_for_every_figure(monkeypatch):
    """A figure draws with plotly's template and the page's, as "plotly+page" would, without merging them again (a
    merge per figure was 12 ms, 15% of the server's Python time in a class of 30)."""
    import json

    import plotly.graph_objects as go
    import plotly.io as pio

    merged = json.loads(go.Figure(go.Bar(y=[1, 2]), layout={"template": f"plotly+{figures.PAGE_TEMPLATE}"}).to_json())

    def no_merge(*templates):
        raise AssertionError("two templates merged again for a figure")

    monkeypatch.setattr(pio.templates, "_merge_2_templates", no_merge)
    made = json.loads(go.Figure(go.Bar(y=[1, 2])).to_json())
    assert made == merged and made["layout"]["template"]["layout"]["paper_bgcolor"] == "rgba(0, 0, 0, 0)"
