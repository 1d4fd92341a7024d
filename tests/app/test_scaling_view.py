"""The analysis tab's "Number of tasks" chart, built from the shipped result assets/scaling/pocket.json (issue #33)."""

from __future__ import annotations

import json

from app.scaling_view import SHIPPED, load_result, scaling_figure, shipped_view


def test_the_chart_draws_the_shipped_result():
    report = json.loads(SHIPPED.read_text())
    assert load_result() == report
    figure, caption = shipped_view()
    assert [trace.name for trace in figure.data] == report["methods"]
    for trace in figure.data:
        cells = [report["summary"][trace.name][str(c)] for c in report["counts"]]
        assert list(trace.x) == report["counts"]
        assert list(trace.y) == [c["mean"] for c in cells]
        assert list(trace.error_y.array) == [c["std"] for c in cells]
    assert figure.layout.xaxis.title.text == "number of tasks merged"
    assert report["run"]["command"] in caption and report["run"]["command"].startswith("python -m wemoe scaling")


def test_the_shipped_result_is_the_one_the_readme_describes():
    report = json.loads(SHIPPED.read_text())
    assert report["zoo"] == "pocket" and report["counts"] == [2, 4, 8] and report["subsets_per_count"] == 3
    assert set(report["methods"]) == {"task_arithmetic", "ties", "tsv_m", "iso_cts", "wemoe"}
    runs_per_count = {c: sum(run["count"] == c for run in report["runs"]) for c in report["counts"]}
    assert runs_per_count == {2: 3, 4: 3, 8: 1}  # one subset of all eight tasks exists
    for method, by_count in report["summary"].items():  # the summary is the runs' mean
        for count, cell in by_count.items():
            values = [run["normalized"][method] for run in report["runs"] if run["count"] == int(count)]
            assert abs(cell["mean"] - sum(values) / len(values)) < 1e-3


def test_without_a_result_the_view_says_how_to_make_one(tmp_path):
    figure, caption = shipped_view(tmp_path / "missing.json")
    assert not figure.data and "python -m wemoe scaling" in caption


def test_a_figure_from_a_small_report():
    report = {"counts": [2, 3], "zoo": "tiny", "summary": {"ties": {
        "2": {"mean": 90.0, "std": 1.0, "min": 89.0, "max": 91.0, "subsets": 2},
        "3": {"mean": 80.0, "std": 0.0, "min": 80.0, "max": 80.0, "subsets": 1}}}}
    (trace,) = scaling_figure(report).data
    assert list(trace.y) == [90.0, 80.0] and list(trace.error_y.array) == [1.0, 0.0]


def test_each_shipped_result_is_offered_by_its_zoo_the_eight_task_pocket_first():
    from app.scaling_view import SHIPPED_DIR, shipped_results, zoo_view

    results = shipped_results()
    assert list(results)[0] == "pocket" and set(results) == {p.stem for p in SHIPPED_DIR.glob("*.json")}
    for zoo, path in results.items():
        report = json.loads(path.read_text())
        assert report["zoo"] == zoo
        figure, caption = zoo_view(zoo)
        assert [trace.name for trace in figure.data] == report["methods"] and report["run"]["command"] in caption
        assert zoo in figure.layout.title.text


def test_an_unknown_zoo_is_answered_with_the_shipped_ones(tmp_path):
    from app.scaling_view import shipped_results, zoo_view

    (tmp_path / "pocket.json").write_text(SHIPPED.read_text())
    (tmp_path / "other.json").write_text(SHIPPED.read_text())
    assert list(shipped_results(tmp_path)) == ["pocket", "other"]
    figure, caption = zoo_view("nope", tmp_path)
    assert not figure.data and caption == "Shipped results: pocket, other."
