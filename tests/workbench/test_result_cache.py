"""One loaded zoo and one result cache shared by many workbenches: hits equal fresh computations, bit for bit, and no
workbench can change what another sees."""

from __future__ import annotations

import threading

import pytest
import torch

from tests.helpers import tiny_task, tiny_zoo
from wemoe.adaptation.adaptive import trainable_parameters
from wemoe.methods import get_method
from wemoe.workbench.loaded_zoo import LoadedZoo
from wemoe.workbench.result_cache import ResultCache
from wemoe.workbench.workbench import Workbench

RUN = {"steps": 3, "lr": 5e-2, "per_task": 4}


def _loaded() -> LoadedZoo:
    zoo = tiny_zoo(n_experts=3, seed=8, layers=3)
    return LoadedZoo(zoo, [tiny_task(n, n_classes=3, n_images=10, seed=i) for i, n in enumerate(zoo.task_names)])


def _routers(bench: Workbench, name: str = "wemoe") -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainable_parameters(bench.merges[name].model)]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture
def shared():
    return _loaded(), ResultCache()


def test_workbenches_share_one_zoo_its_data_heads_and_experts(shared):
    loaded, cache = shared
    a, b = Workbench.sharing(loaded, cache, "z"), Workbench.sharing(loaded, cache, "z")
    assert a.zoo is b.zoo is loaded.zoo
    assert all(a.heads()[t] is b.heads()[t] for t in a.task_names)
    assert all(a.data()[t] is b.data()[t] for t in a.task_names)
    experts_a, experts_b = a.models(["experts"])["experts"], b.models(["experts"])["experts"]
    assert all(experts_a[t] is experts_b[t] for t in a.task_names)
    tower = experts_a[a.task_names[0]]  # the zoo's own expert tensors, not a copy
    state = loaded.zoo.experts[a.task_names[0]]
    assert all(p.data_ptr() == state[n].data_ptr() for n, p in tower.named_parameters())


def test_a_cached_merge_adaptation_and_table_equal_a_fresh_computation_bitwise(shared):
    loaded, cache = shared
    fresh = Workbench.sharing(loaded)  # no cache
    first, second = Workbench.sharing(loaded, cache, "z"), Workbench.sharing(loaded, cache, "z")
    for bench in (fresh, first, second):
        bench.merge("task_arithmetic")
        bench.merge("wemoe")
        records = list(bench.adapt("wemoe", **RUN))
        assert [r.step for r in records] == [1, 2, 3]
    assert not first.merges["wemoe"].from_cache and second.merges["wemoe"].from_cache
    assert second.merges["task_arithmetic"].model is first.merges["task_arithmetic"].model  # static: shared as is
    assert second.merges["wemoe"].model is not first.merges["wemoe"].model
    assert _same(_routers(second), _routers(fresh)) and _same(_routers(first), _routers(fresh))
    assert [r.loss for r in second.merges["wemoe"].history] == [r.loss for r in fresh.merges["wemoe"].history]
    names = ["pretrained", "experts", "task_arithmetic", "wemoe", "wemoe_oracle"]
    tables = [bench.evaluate(names) for bench in (fresh, first, second)]
    assert tables[0].equals(tables[1]) and tables[0].equals(tables[2])
    analyses = [bench.routing_analysis("wemoe", per_task=4) for bench in (fresh, first, second)]
    assert [hit for _, hit in analyses] == [False, False, True]
    assert torch.equal(analyses[0][0].routing, analyses[2][0].routing)


def test_a_merge_from_the_cache_is_the_merge_as_made_whoever_adapted_theirs(shared):
    loaded, cache = shared
    first, second = Workbench.sharing(loaded, cache, "z"), Workbench.sharing(loaded, cache, "z")
    pristine = [p.detach().clone() for p in trainable_parameters(get_method("wemoe")(loaded.zoo))]
    first.merge("wemoe")
    list(first.adapt("wemoe", **RUN))  # the first computed the merge, then adapted its model
    second.merge("wemoe")
    assert second.merges["wemoe"].from_cache and _same(_routers(second), pristine)


def test_adapting_a_cached_copy_further_changes_no_one_else(shared):
    loaded, cache = shared
    first, second, third = (Workbench.sharing(loaded, cache, "z") for _ in range(3))
    for bench in (first, second):
        bench.merge("wemoe")
        list(bench.adapt("wemoe", **RUN))
    kept = _routers(first)
    list(second.adapt("wemoe", steps=2, lr=0.1, per_task=4))  # the second session adapts its copy further
    assert not _same(_routers(second), kept)
    assert _same(_routers(first), kept)
    third.merge("wemoe")
    list(third.adapt("wemoe", **RUN))
    assert third.merges["wemoe"].from_cache and _same(_routers(third), kept)


def test_two_sessions_adapting_different_copies_of_the_same_merge_stay_apart(shared):
    loaded, cache = shared
    a, b = Workbench.sharing(loaded, cache, "z"), Workbench.sharing(loaded, cache, "z")
    a.merge("wemoe")
    b.merge("wemoe")
    untouched = _routers(b)
    list(a.adapt("wemoe", steps=2, lr=0.1, per_task=4))
    assert _same(_routers(b), untouched)
    list(b.adapt("wemoe", steps=2, lr=0.01, per_task=4))
    assert not _same(_routers(a), _routers(b))


def test_a_cancelled_adaptation_is_not_cached(shared):
    loaded, cache = shared
    first, second = Workbench.sharing(loaded, cache, "z"), Workbench.sharing(loaded, cache, "z")
    first.merge("wemoe")
    records = first.adapt("wemoe", steps=5, lr=5e-2, per_task=4)
    next(records), next(records)
    records.close()  # the user pressed Cancel after two steps
    assert first.merges["wemoe"].adapt_steps == 2 and first.merges["wemoe"].key is None
    second.merge("wemoe")
    list(second.adapt("wemoe", steps=5, lr=5e-2, per_task=4))
    assert not second.merges["wemoe"].from_cache and second.merges["wemoe"].adapt_steps == 5


def test_the_same_run_asked_by_two_threads_at_once_is_computed_once(shared):
    loaded, cache = shared
    benches = [Workbench.sharing(loaded, cache, "z") for _ in range(2)]
    for bench in benches:
        bench.merge("wemoe")
    misses = cache.misses
    barrier = threading.Barrier(2)

    def run(bench):
        barrier.wait()
        list(bench.adapt("wemoe", **RUN))

    threads = [threading.Thread(target=run, args=(b,)) for b in benches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.misses == misses + 1
    assert sorted(b.merges["wemoe"].from_cache for b in benches) == [False, True]
    assert _same(_routers(benches[0]), _routers(benches[1]))


def test_a_failed_computation_stores_nothing_and_the_next_caller_computes():
    cache = ResultCache()

    def fail():
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        cache.get_or_compute("k", fail)
    assert "k" not in cache
    assert cache.get_or_compute("k", lambda: 42) == (42, False)
    assert cache.get_or_compute("k", lambda: 0) == (42, True)


def test_a_second_session_watches_the_run_in_flight_without_claiming_it_then_gets_it_from_the_cache(shared):
    loaded, cache = shared
    owner, waiter = Workbench.sharing(loaded, cache, "z"), Workbench.sharing(loaded, cache, "z")
    for bench in (owner, waiter):
        bench.merge("wemoe")
    assert list(waiter.waiting_for_run("wemoe", **RUN)) == []  # nothing in flight: nothing to wait for
    running = owner.adapt("wemoe", **RUN)
    next(running)  # the owner has claimed the run and finished its first step; it pauses here
    watching = waiter.waiting_for_run("wemoe", **RUN, every=0.01)
    assert next(watching).startswith(f"step 1/{RUN['steps']}, loss ")
    assert next(watching).startswith("step 1/")  # watching claims nothing: the flight is still the owner's
    other = waiter.waiting_for_run("wemoe", steps=RUN["steps"] + 1, lr=RUN["lr"], per_task=RUN["per_task"])
    assert list(other) == []  # another setting is another run: not this one's flight
    list(running)
    assert list(watching) == []  # the run finished: the wait ends
    list(waiter.adapt("wemoe", **RUN))
    assert waiter.merges["wemoe"].from_cache and _same(_routers(owner), _routers(waiter))


def test_adapt_reports_waiting_for_the_same_run_in_flight_item_by_item(shared):
    from wemoe.workbench.cached_runs import Waiting

    loaded, cache = shared
    owner, waiter = Workbench.sharing(loaded, cache, "z"), Workbench.sharing(loaded, cache, "z")
    for bench in (owner, waiter):
        bench.merge("wemoe")
    running = owner.adapt("wemoe", **RUN)
    next(running)  # the owner claimed the run (paused after its first step)
    waiting = waiter.adapt("wemoe", **RUN, report_waiting=True)
    item = next(waiting)  # returns within half a second: a caller can release its lock between items
    assert isinstance(item, Waiting) and item.progress.startswith("step 1/") and not item.counts_as_step
    list(running)
    records = [r for r in waiting if not isinstance(r, Waiting)]
    assert [r.step for r in records] == [1, 2, 3] and waiter.merges["wemoe"].from_cache
    assert _same(_routers(owner), _routers(waiter))


def test_zoos_loaded_with_another_adaptation_split_share_no_result():
    """A heldout zoo scores half of each tiny test set (the other half adapts): under the same key as the test zoo
    its table and adaptation runs must be its own, not the test zoo's from the cache."""
    zoo = tiny_zoo(n_experts=2, seed=8, layers=3)
    tasks = [tiny_task(n, n_classes=3, n_images=10, seed=i) for i, n in enumerate(zoo.task_names)]
    cache = ResultCache()
    plain = Workbench.sharing(LoadedZoo(zoo, tasks), cache, "zoo")
    held = Workbench.sharing(LoadedZoo(zoo, tasks, adapt_split="heldout"), cache, "zoo")
    first, second = plain.evaluate(["pretrained"]), held.evaluate(["pretrained"])
    assert set(first.attrs["samples_per_task"].values()) == {10}
    assert set(second.attrs["samples_per_task"].values()) == {5}
    assert second.equals(Workbench(zoo, tasks, adapt_split="heldout").evaluate(["pretrained"]))
    for bench in (plain, held):
        bench.merge("wemoe")
        records = list(bench.adapt("wemoe", **RUN, split="test"))
        assert not any(r.from_cache for r in records if hasattr(r, "from_cache"))
        assert not bench.merges["wemoe"].from_cache
