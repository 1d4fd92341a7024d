"""The Workbench facade itself: what a merge keeps, what a stopped or failed one leaves, names, keys and the cache."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import tiny_task, tiny_zoo
from wemoe.errors import MethodError
from wemoe.stopping import Stopped
from wemoe.workbench.result_cache import ResultCache
from wemoe.workbench.workbench import EXPERTS, PRETRAINED, Workbench


@pytest.fixture
def bench():
    zoo = tiny_zoo(n_experts=2, seed=3, layers=2)
    return Workbench(zoo, [tiny_task(n, n_classes=3, n_images=6, seed=i) for i, n in enumerate(zoo.task_names)])


def test_merge_keeps_the_result_under_its_name_and_build_keeps_nothing(bench):
    made = bench.build("task_arithmetic", {"lambda": 0.5})
    assert bench.merges == {} and made.params == {"lambda": 0.5}
    kept = bench.merge("task_arithmetic", {"lambda": 0.5}, name="ta")
    assert list(bench.merges) == ["ta"] and bench.merges["ta"] is kept
    assert all(torch.equal(a, b) for a, b in zip(kept.model.state_dict().values(), made.model.state_dict().values(),
                                                 strict=True))


def test_a_failed_or_stopped_merge_leaves_the_merges_as_they_were(bench):
    bench.merge("task_arithmetic")
    before = dict(bench.merges)
    with pytest.raises(MethodError):
        bench.merge("task_arithmetic", {"lambda": 9.0})
    with pytest.raises(Stopped):
        bench.build("wudi", {"steps": 20}, stop=lambda: True)
    assert bench.merges == before


def test_build_many_stops_between_methods_and_returns_what_it_made(bench):
    calls = []

    def stop_after_first() -> bool:
        calls.append(1)
        return "task_arithmetic" in made_so_far

    made_so_far: dict = {}
    made = bench.build_many({"task_arithmetic": {}, "ties": {}}, stop=stop_after_first, made=made_so_far)
    assert list(made) == ["task_arithmetic"] and made is made_so_far and calls
    everything = bench.build_many({"task_arithmetic": {}, "ties": {}})
    assert list(everything) == ["task_arithmetic", "ties"] and bench.merges == {}


def test_merge_keys_exist_only_with_a_cache(bench):
    bench.merge("task_arithmetic")
    assert bench.merge_key("task_arithmetic") is None and bench.merge_key("missing") is None
    shared = Workbench.sharing(bench.loaded, ResultCache(max_entries=8), ("tiny", None))
    first = shared.merge("task_arithmetic")
    again = Workbench.sharing(bench.loaded, shared.cache, ("tiny", None)).merge("task_arithmetic")
    assert shared.merge_key("task_arithmetic") == ("merge", "task_arithmetic", (("lambda", 0.3),))
    assert not first.from_cache and again.from_cache and again.model is first.model  # a static merge is shared


def test_evaluate_scores_the_named_models_on_every_task(bench):
    bench.merge("task_arithmetic")
    table = bench.evaluate([PRETRAINED, EXPERTS, "task_arithmetic"])
    assert list(table.index) == [PRETRAINED, EXPERTS, "task_arithmetic"]
    assert list(table.columns) == [*bench.task_names, "average"]
    assert ((table >= 0) & (table <= 100)).all().all()


def test_routed_merge_names_the_first_wemoe(bench):
    assert bench.routed_merge() is None
    bench.merge("task_arithmetic")
    bench.merge("wemoe", name="mine")
    assert bench.routed_merge() == "mine"
