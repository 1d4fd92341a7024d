"""Choosing the experts: a merge of 2 of a zoo's experts is the merge of a zoo that only has those 2 (#29 item 1)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import tiny_task, tiny_zoo
from wemoe.errors import ZooError
from wemoe.workbench.result_cache import ResultCache
from wemoe.workbench.workbench import EXPERTS, PRETRAINED, Workbench
from wemoe.zoo.zoo import Zoo


@pytest.fixture(scope="module")
def zoo():
    return tiny_zoo(n_experts=3, seed=7, layers=2)


@pytest.fixture(scope="module")
def tasks(zoo):
    return {n: tiny_task(n, n_classes=3, n_images=9, seed=i) for i, n in enumerate(zoo.task_names)}


def _alone(zoo: Zoo, names: list[str]) -> Zoo:
    """A zoo built with only these experts (not a subset of another)."""
    return Zoo(name=zoo.name, clip=zoo.clip, experts={n: dict(zoo.experts[n]) for n in names},
               preprocess=zoo.preprocess, tokenizer=zoo.tokenizer)


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "wemoe"])
def test_merging_two_of_three_experts_equals_a_zoo_of_those_two(zoo, tasks, method):
    chosen = ["task0", "task2"]
    subset = Workbench(zoo, list(tasks.values())).with_tasks(chosen)
    alone = Workbench(_alone(zoo, chosen), [tasks[n] for n in chosen])
    assert subset.task_names == alone.task_names == chosen
    mine, theirs = subset.merge(method).model.state_dict(), alone.merge(method).model.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    names = [PRETRAINED, EXPERTS, method]
    assert subset.evaluate(names).equals(alone.evaluate(names))


def test_a_choice_is_one_subset_whatever_its_order(zoo, tasks):
    bench = Workbench(zoo, list(tasks.values()))
    assert bench.with_tasks(["task2", "task0"]).task_names == ["task0", "task2"]
    assert bench.with_tasks(None).task_names == zoo.task_names
    assert bench.with_tasks(["task0", "task1"]).with_tasks(None).task_names == zoo.task_names  # back to every expert


def test_the_cache_keys_differ_by_subset(zoo, tasks):
    cache = ResultCache(max_entries=16)
    whole = Workbench.sharing(Workbench(zoo, list(tasks.values())).loaded, cache, ("tiny", None))
    first, second = whole.with_tasks(["task0", "task1"]), whole.with_tasks(["task0", "task2"])
    assert len({whole.cache_key, first.cache_key, second.cache_key}) == 3
    assert whole.with_tasks(zoo.task_names).cache_key == whole.cache_key  # every expert: the zoo's own key
    a, b = first.merge("task_arithmetic"), second.merge("task_arithmetic")
    mine, theirs = a.model.state_dict(), b.model.state_dict()
    assert not b.from_cache and any(not torch.equal(mine[k], theirs[k]) for k in mine)  # another subset, another merge
    again = whole.with_tasks(["task1", "task0"]).merge("task_arithmetic")
    assert again.from_cache and again.model is a.model


def test_the_subset_shares_what_was_loaded(zoo, tasks):
    bench = Workbench(zoo, list(tasks.values()))
    sub = bench.with_tasks(["task1", "task2"])
    assert sub.data()["task1"] is bench.data()["task1"] and set(sub.heads()) == {"task1", "task2"}
    assert sub.loaded.expert_tower("task2") is bench.loaded.expert_tower("task2")


def test_a_bad_choice_says_what_to_choose(zoo, tasks):
    bench = Workbench(zoo, list(tasks.values()))
    with pytest.raises(ZooError, match="No expert for task.*'nope'.*Choose among: task0, task1, task2"):
        bench.with_tasks(["task0", "nope"])
    with pytest.raises(ZooError, match="at least two experts"):
        bench.with_tasks(["task0", "task0"])


def test_the_cli_reports_the_chosen_tasks_only(zoo, tasks, tmp_path, monkeypatch):
    import wemoe.loading
    from wemoe.__main__ import main
    from wemoe.tasks.registry import register_task

    for task in tasks.values():
        register_task(task)
    monkeypatch.setattr(wemoe.loading, "load_zoo", lambda spec, progress=None: zoo)
    out = tmp_path / "out.json"
    assert main(["table", "--zoo", "tiny", "--tasks", "task0,task2", "--methods", "task_arithmetic",
                 "--lambda", "0.3", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["tasks"] == ["task0", "task2"]
    assert set(report["methods"]["task_arithmetic"]["per_task"]) == {"task0", "task2"}
    assert main(["table", "--zoo", "tiny", "--tasks", "task0", "--methods", "task_arithmetic"]) == 2
