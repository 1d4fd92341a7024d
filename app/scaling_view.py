"""Accuracy against the number of tasks (issue #33), served from the shipped results ``assets/scaling/<zoo>.json``
(``pocket.json``: the eight-task pocket zoo; ``pocket-20.json``: the twenty-task one).

The results are made by ``python -m wemoe scaling`` (``wemoe.analysis.scaling``); computing one takes minutes, so the
app shows the shipped JSON and the command that recomputes it, the one the JSON records (``"run"``); a choice picks
which shipped result the chart shows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from app import figures

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "assets" / "scaling"
SHIPPED = SHIPPED_DIR / "pocket.json"


def load_result(path: Path = SHIPPED) -> dict[str, Any] | None:
    """The scaling result at ``path`` (``python -m wemoe scaling --json``), or None when there is none to read."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def scaling_figure(report: dict[str, Any]) -> go.Figure:
    """One line per method: x the number of tasks merged, y the mean normalized accuracy over that count's subsets,
    error bars one standard deviation (hover: the minimum, maximum and number of subsets)."""
    figure = go.Figure()
    counts = [int(c) for c in report["counts"]]
    for method, by_count in report["summary"].items():
        cells = [by_count[str(c)] for c in counts]
        figure.add_trace(go.Scatter(
            x=counts, y=[c["mean"] for c in cells], mode="lines+markers", name=method,
            error_y={"type": "data", "array": [c["std"] for c in cells], "visible": True},
            customdata=[[c["std"], c["min"], c["max"], c["subsets"]] for c in cells],
            hovertemplate=(f"{method}, %{{x}} tasks: %{{y:.1f}} ± %{{customdata[0]:.1f}} "
                           "(min %{customdata[1]:.1f}, max %{customdata[2]:.1f}, %{customdata[3]} subsets)"
                           "<extra></extra>")))
    figure.update_layout(title=f"normalized accuracy against the number of tasks ({report.get('zoo', 'zoo')})",
                         xaxis={"title": "number of tasks merged", "tickvals": counts},
                         yaxis_title="normalized accuracy (% of the experts)", height=420)
    return figures.legend_below(figure)


def scaling_caption(report: dict[str, Any]) -> str:
    """What the chart shows, how it was made and the command that recomputes it (Markdown)."""
    adaptation = report.get("adaptation") or {}
    adapted = f", adaptive merges {adaptation['steps']} steps ({adaptation['loss']} loss)" if adaptation else ""
    samples = report.get("samples_per_task")
    run = report.get("run", {})
    return (f"{report['subsets_per_count']} seeded random subsets of the zoo's {len(report['tasks'])} tasks per count "
            f"(fewer where fewer exist: all {len(report['tasks'])} tasks are one subset), each merged with the "
            f"methods' default parameters{adapted}, scored on {samples or 'all'} test images per task. A point is the "
            f"mean over the subsets of merged / expert accuracy averaged over the subset's tasks; bars: one standard "
            f"deviation. Shipped result, measured on {run.get('cpu', 'an unrecorded CPU')} in "
            f"{report.get('seconds', '?')} s. Recompute it with:\n\n```\n{run.get('command', '')}\n```")


def shipped_view(path: Path = SHIPPED) -> tuple[go.Figure, str]:
    """The chart and its caption from the shipped result; without one, a message saying how to make it."""
    report = load_result(path)
    if report is None:
        command = "python -m wemoe scaling --zoo pocket --counts 2,4,8 --subsets 3 --json assets/scaling/pocket.json"
        return figures.empty_figure("No shipped scaling result."), f"Make one with:\n\n```\n{command}\n```"
    return scaling_figure(report), scaling_caption(report)


def shipped_results(folder: Path = SHIPPED_DIR) -> dict[str, Path]:
    """The shipped results by zoo name (the file's stem), the eight-task pocket zoo's first."""
    paths = sorted(Path(folder).glob("*.json"), key=lambda p: (p.stem != "pocket", p.stem))
    return {p.stem: p for p in paths}


def zoo_view(zoo: str, folder: Path = SHIPPED_DIR) -> tuple[go.Figure, str]:
    """The chart and caption of one zoo's shipped result (``zoo``: a key of :func:`shipped_results`)."""
    results = shipped_results(folder)
    if zoo not in results:
        return figures.empty_figure(f"No shipped scaling result for {zoo!r}."), (
            f"Shipped results: {', '.join(results) or 'none'}.")
    return shipped_view(results[zoo])


def scaling_tab() -> None:
    """The analysis tab's "Number of tasks" contents, inside the caller's ``gr.Tab``: a choice of the shipped results
    (shown where there is more than one), the chart and its caption."""
    import gradio as gr

    results = list(shipped_results()) or ["pocket"]
    chart, text = zoo_view(results[0]) if shipped_results() else shipped_view()
    choice = gr.Radio(results, value=results[0], label="Zoo", visible=len(results) > 1, elem_id="scaling-zoo")
    plot = gr.Plot(chart, label="Accuracy against the number of tasks", elem_id="view-scaling")
    caption = gr.Markdown(text)
    choice.change(zoo_view, [choice], [plot, caption], api_name="scaling_view", show_progress="hidden")
