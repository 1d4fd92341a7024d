"""Accuracy against the number of tasks (issue #33): each subset's numbers against merging that subset directly on a
workbench of its own, the seeded subsets, the refusals, and the CLI's JSON."""

from __future__ import annotations

import json
import random
import statistics

import pytest

from tests.helpers import tiny_task, tiny_zoo
from wemoe.__main__ import main
from wemoe.analysis.scaling import accuracy_by_task_count, check_counts, check_methods, task_subsets
from wemoe.errors import WemoeError
from wemoe.workbench.workbench import EXPERTS, Workbench

METHODS = ["task_arithmetic", "ties", "wemoe"]
ADAPTATION = {"steps": 2, "per_task": 3, "seed": 1}


def tiny_tasks(zoo):
    return {name: tiny_task(name, n_classes=3, n_images=12, seed=i) for i, name in enumerate(zoo.task_names)}


@pytest.fixture(scope="module")
def zoo():
    return tiny_zoo(n_experts=4, seed=3, noise=0.05)


@pytest.fixture(scope="module")
def result(zoo):
    bench = Workbench(zoo, list(tiny_tasks(zoo).values()))
    return accuracy_by_task_count(bench, METHODS, [4, 2], subsets=2, seed=5, params={"ties": {"top_k": 50}},
                                  adaptation=ADAPTATION)


def direct_normalized(zoo, subset, method, params=None) -> float:
    """Merge ``subset``'s experts on a workbench of that subset alone and normalize by hand."""
    tasks = tiny_tasks(zoo)
    bench = Workbench(zoo.subset(list(subset)), [tasks[t] for t in subset])
    made = bench.merge(method, params)
    if made.adaptive:
        for _ in bench.adapt(method, **ADAPTATION):
            pass
    table = bench.evaluate([EXPERTS, method])
    return statistics.fmean(100.0 * table.loc[method, t] / table.loc[EXPERTS, t] for t in subset)


def test_every_subset_equals_merging_it_directly(zoo, result):
    assert [run.count for run in result.runs] == [2, 2, 4]  # counts sorted; one subset of all four tasks
    for run in result.runs:
        for method in METHODS:
            params = {"top_k": 50} if method == "ties" else None
            assert run.normalized[method] == pytest.approx(direct_normalized(zoo, run.tasks, method, params), abs=1e-9)
    assert result.params["ties"]["top_k"] == 50.0 and result.adaptation["steps"] == 2


def test_the_summary_is_the_spread_over_the_subsets(result):
    summary = result.summary()
    for method in METHODS:
        values = [run.normalized[method] for run in result.runs if run.count == 2]
        row = summary.loc[(method, 2)]
        assert row["mean"] == pytest.approx(statistics.fmean(values))
        assert row["std"] == pytest.approx(statistics.pstdev(values)) and row["subsets"] == 2
        assert (row["min"], row["max"]) == (min(values), max(values))
        assert summary.loc[(method, 4), "std"] == 0.0
    report = json.loads(json.dumps(result.to_dict()))  # JSON-able as it is
    assert report["summary"]["ties"]["2"]["mean"] == pytest.approx(summary.loc[("ties", 2), "mean"], abs=1e-4)
    assert [run["tasks"] for run in report["runs"]] == [list(run.tasks) for run in result.runs]


def test_the_same_seed_gives_the_same_numbers(zoo, result):
    bench = Workbench(zoo, list(tiny_tasks(zoo).values()))
    again = accuracy_by_task_count(bench, METHODS, [2, 4], subsets=2, seed=5, params={"ties": {"top_k": 50}},
                                   adaptation=ADAPTATION)
    assert again.to_dict() | {"runs": None} == result.to_dict() | {"runs": None}
    assert [(r.tasks, r.normalized) for r in again.runs] == [(r.tasks, r.normalized) for r in result.runs]


TASKS = [f"t{i}" for i in range(8)]


def test_subsets_are_seeded_locally_distinct_and_in_the_zoos_order():
    random.seed(123)
    state = random.getstate()
    first = task_subsets(TASKS, 3, 4, seed=0)
    assert random.getstate() == state  # the global generator is never touched
    assert first == task_subsets(TASKS, 3, 4, seed=0)
    assert first != task_subsets(TASKS, 3, 4, seed=1)
    assert len(set(first)) == 4 and all(list(s) == sorted(s, key=TASKS.index) and len(s) == 3 for s in first)
    assert task_subsets(TASKS, 8, 3) == [tuple(TASKS)]  # only one subset of all eight
    assert task_subsets(TASKS[:3], 2, 5) == [("t0", "t1"), ("t0", "t2"), ("t1", "t2")]  # every one when few exist


def test_each_count_draws_from_its_own_generator():
    twos, fours = task_subsets(TASKS, 2, 3, seed=0), task_subsets(TASKS, 4, 3, seed=0)
    assert not all(set(a) <= set(b) for a, b in zip(twos, fours, strict=True))  # not one stream cut at two lengths
    assert task_subsets(TASKS, 4, 3, seed=0) == fours  # whatever was drawn for other counts before


@pytest.mark.parametrize(("counts", "message"), [
    ([1, 2], "at least 2"), ([2, 9], "has 8 tasks"), ([2, 4, 2], "once: 2"), ([], "at least one"),
])
def test_bad_counts_are_refused(counts, message):
    with pytest.raises(WemoeError, match=message):
        check_counts(counts, 8)


def test_unknown_or_repeated_methods_are_refused():
    with pytest.raises(WemoeError, match="task_arithmetic"):  # the error lists the known methods
        check_methods(["task_arithmetic", "nope"])
    with pytest.raises(WemoeError, match="once"):
        check_methods(["ties", "ties"])


@pytest.mark.parametrize(("argv", "message"), [
    (["--counts", "3"], "has 2 tasks"), (["--counts", "2,2"], "once"), (["--counts", "1,2"], "at least 2"),
    (["--counts", "2,x"], "whole numbers"), (["--counts", "2", "--methods", "nope"], "nope"),
    (["--counts", "2", "--subsets", "0"], "at least one subset"),
])
def test_the_cli_refuses_bad_values_with_one_line(tiny_cli_zoo, capsys, argv, message):
    assert main(["scaling", "--zoo", "tiny", *argv]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and "Traceback" not in error


def test_the_cli_writes_a_json_that_records_its_command(tiny_cli_zoo, tmp_path, capsys):
    out = tmp_path / "scaling.json"
    argv = ["scaling", "--zoo", "tiny", "--methods", "task_arithmetic,wemoe", "--counts", "2", "--subsets", "2",
            "--steps", "1", "--per-task", "2", "--json", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["run"]["argv"] == argv[:] and report["counts"] == [2] and report["adaptation"]["steps"] == 1
    assert report["summary"]["wemoe"]["2"]["subsets"] == 1  # the two-task zoo has one subset of two
    assert "wemoe" in capsys.readouterr().out
