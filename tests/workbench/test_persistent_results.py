"""Workbenches whose result cache keeps results on disk: after a restart (a fresh LoadedZoo, ResultCache and
ResultStore on the same directory) merges, adaptation runs, table rows, routing maps and classifications come back from
disk equal bit for bit to a fresh computation; a changed zoo weight or image misses."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.helpers import tiny_images, tiny_task, tiny_zoo
from wemoe import load_zoo
from wemoe.adaptation.adaptive import trainable_parameters
from wemoe.workbench.loaded_zoo import LoadedZoo
from wemoe.workbench.result_cache import ResultCache
from wemoe.workbench.result_store import ResultStore
from wemoe.workbench.workbench import Workbench

RUN = {"steps": 2, "lr": 5e-2, "per_task": 4}
NAMES = ["pretrained", "experts", "task_arithmetic", "ties", "wemoe", "wemoe_oracle"]


def _session(loaded: LoadedZoo, directory) -> tuple[Workbench, ResultCache]:
    """What one app process holds: a cache with the store on ``directory``, and a workbench on it."""
    cache = ResultCache(store=ResultStore(directory))
    return Workbench.sharing(loaded, cache, ("pocket", 6)), cache


def _lesson(bench: Workbench) -> dict:
    """The default lesson's results: merges, an adaptation run, the table, the routing, a classification."""
    bench.merge("task_arithmetic")
    bench.merge("ties")
    bench.merge("wemoe")
    records = list(bench.adapt("wemoe", **RUN))
    analysis, _ = bench.routing_analysis("wemoe", per_task=3)
    return {"towers": {n: bench.merges[n].model.state_dict() for n in ("task_arithmetic", "ties")},
            "routers": [p.detach().clone() for p in trainable_parameters(bench.merges["wemoe"].model)],
            "records": records, "table": bench.evaluate(NAMES), "routing": analysis,
            "classified": bench.classify(tiny_images(2, seed=5, size=64))}


def _same(a: dict, b: dict) -> None:
    for name, state in a["towers"].items():
        assert all(torch.equal(state[k], b["towers"][name][k]) for k in state), name
    assert len(a["routers"]) == len(b["routers"]) and all(map(torch.equal, a["routers"], b["routers"]))
    assert [(r.step, r.loss, r.entropy) for r in a["records"]] == [(r.step, r.loss, r.entropy) for r in b["records"]]
    assert a["table"].equals(b["table"])
    assert torch.equal(a["routing"].routing, b["routing"].routing)
    assert torch.equal(a["routing"].features, b["routing"].features)
    assert a["routing"].labels == b["routing"].labels
    for x, y in zip(a["classified"], b["classified"], strict=True):
        assert x.models == y.models and x.experts == y.experts and x.guess == y.guess
        assert torch.equal(x.routing, y.routing)


@pytest.fixture(scope="module")
def pocket():
    return load_zoo("pocket")


def test_the_pocket_lesson_after_a_restart_comes_from_disk_equal_to_a_fresh_computation(pocket, tmp_path):
    # the process's first classification differs from every later one in the 7th digit (with or without a cache;
    # seen on AMD EPYC, cause not found): the reference is a later one
    _lesson(Workbench.sharing(LoadedZoo(pocket, samples=6)))
    fresh = _lesson(Workbench.sharing(LoadedZoo(pocket, samples=6)))  # no cache at all
    first, cache = _session(LoadedZoo(pocket, samples=6), tmp_path)
    _same(_lesson(first), fresh)
    assert cache.store.saved >= 6 and cache.disk_hits == 0
    restarted, cache = _session(LoadedZoo(pocket, samples=6), tmp_path)  # a new process: nothing in memory
    again = _lesson(restarted)
    _same(again, fresh)
    assert again["records"] == first.merges["wemoe"].history  # as recorded, elapsed seconds included
    assert all(restarted.merges[n].from_cache for n in ("task_arithmetic", "ties", "wemoe"))
    assert cache.misses == 1  # only the adaptive merge is made again (its routers' run comes from disk)
    assert cache.disk_hits >= 7


def _tiny(noise_at: float = 0.0, images_seed: int = 0) -> LoadedZoo:
    zoo = tiny_zoo(n_experts=2, seed=4)
    if noise_at:
        experts = copy.deepcopy(zoo.experts)
        first = next(iter(experts["task0"]))
        experts["task0"][first].view(-1)[0] += noise_at  # one weight of one expert
        zoo = type(zoo)(zoo.name, zoo.clip, experts, zoo.preprocess, zoo.tokenizer)
    return LoadedZoo(zoo, [tiny_task(n, n_images=8, seed=i + images_seed) for i, n in enumerate(zoo.task_names)])


def test_a_changed_weight_or_image_misses(tmp_path):
    bench, _ = _session(_tiny(), tmp_path)
    bench.merge("task_arithmetic")
    same, _ = _session(_tiny(), tmp_path)
    assert same.build("task_arithmetic").from_cache
    for changed in (_tiny(noise_at=1e-6), _tiny(images_seed=1)):
        other, cache = _session(changed, tmp_path)
        assert other.cache_key != bench.cache_key
        assert not other.build("task_arithmetic").from_cache and cache.disk_hits == 0


def test_the_zoo_key_holds_the_fingerprint_only_with_a_store(tmp_path):
    loaded = _tiny()
    assert Workbench.sharing(loaded, ResultCache(), "z").cache_key == "z"
    bench, _ = _session(loaded, tmp_path)
    assert bench.cache_key == (("pocket", 6), "zoo", loaded.fingerprint())
    assert len(loaded.fingerprint()) == 64 and loaded.subset(["task0", "task1"]).fingerprint() == loaded.fingerprint()
