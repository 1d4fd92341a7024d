"""The accuracy panel: the evaluation's table and downloads, the normalized view and the table's style, on a tiny
random zoo."""

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest

from app import handlers, views


def test_evaluation_fills_the_table_and_writes_the_downloads(merged):
    updates = list(handlers.evaluate(merged, include_oracle=True, update_every=0.0))
    assert len(updates) == 5 * 3 + 1  # unthrottled: one update per cell (5 models x 3 tasks), then the final one
    styled, bars, note, csv_path, json_path = updates[-1]
    assert updates[0][3] is None and csv_path.endswith(".csv") and json_path.endswith(".json")
    expected = merged.bench.evaluate(["pretrained", "experts", "task_arithmetic", "wemoe", "wemoe_oracle"])
    csv = pd.read_csv(csv_path, index_col="model")
    assert np.allclose(csv.values, expected.round(2).values)
    report = json.loads(Path(json_path).read_text())
    assert report["tasks"] == ["task0", "task1", "task2"]
    assert report["samples_per_task"] == {"task0": 12, "task1": 12, "task2": 12}
    assert list(report["methods"]) == ["pretrained", "experts", "task_arithmetic", "wemoe", "wemoe_oracle"]
    assert report["methods"]["task_arithmetic"]["params"] == {"lambda": 0.4}
    assert report["methods"]["wemoe"]["average"] == round(float(expected.loc["wemoe", "average"]), 2)
    assert "task0 12" in note and len(bars.data) == 5
    html = styled.to_html()
    best = expected["average"].round(1).max()
    assert html.count("font-weight: bold") >= 1 and f"{best:.1f}" in html


def test_normalized_accuracy_toggle_divides_each_task_by_its_expert(merged):
    assert merged.table is None and views.accuracy_view(merged, True) == gr.skip()  # nothing evaluated: no change
    *_, last = handlers.evaluate(merged)
    measured, normalized = views.accuracy_view(merged, False), views.accuracy_view(merged, True)
    assert measured.label == views.ACCURACY_LABEL and normalized.label == views.NORMALIZED_LABEL
    table = merged.table
    shown = normalized.value["data"]
    columns = normalized.value["headers"]
    rows = {row[0]: dict(zip(columns, row, strict=True)) for row in shown}
    for task in ("task0", "task1", "task2"):
        expected = table.loc["task_arithmetic", task] / table.loc["experts", task] * 100
        assert float(rows["task_arithmetic"][task]) == pytest.approx(round(expected, 1), abs=0.051)
        assert float(rows["experts"][task]) == pytest.approx(100.0)
    tasks = [table.loc["wemoe", t] / table.loc["experts", t] * 100 for t in ("task0", "task1", "task2")]
    assert float(rows["wemoe"]["average"]) == pytest.approx(round(sum(tasks) / 3, 1), abs=0.051)
    assert [r[0] for r in measured.value["data"]] == [r[0] for r in shown]
    with pytest.raises(gr.Error, match="Normalized accuracy: enter true or false"):
        views.accuracy_view(merged, "yes")


def test_the_accuracy_table_shows_the_average_first_and_marks_the_best_merge():
    rows = ["pretrained", "experts", "task_arithmetic", "wemoe", "wemoe_oracle"]
    table = pd.DataFrame({"pocket_digits": [50.0, 99.0, 70.0, 80.0, 95.0],
                          "pocket_shapes": [40.0, 98.0, 85.0, 85.0, 97.0],
                          "average": [45.0, 98.5, 77.5, 82.5, 96.0]}, index=pd.Index(rows, name="model"))
    styled = views.style_table(table)
    assert list(styled.data.columns) == ["model", "average", "digits", "shapes"]  # average first, short task names
    styles = styled._compute().ctx
    best = {(r, c) for (r, c), props in styles.items() if ("font-weight", "bold") in props}
    # the best merge per column (ties both marked), never a reference row (experts, pretrained, oracle)
    assert best == {(3, 1), (3, 2), (2, 3), (3, 3)}
    italic = {r for (r, _), props in styles.items() if ("font-style", "italic") in props}
    assert italic == {0, 1, 4}
    backgrounds = {v for props in styles.values() for k, v in props if k == "background-color"}
    assert backgrounds and all(v.startswith("rgba(") for v in backgrounds)  # translucent: readable in dark mode too
    only_references = views.style_table(table.loc[["pretrained", "experts"]])._compute().ctx
    assert not any(("font-weight", "bold") in props for props in only_references.values())
