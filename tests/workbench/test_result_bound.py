"""The result cache bounded in bytes: what a result holds is counted (each storage once), the least recently used
results go first beyond the bound, and a dropped merge comes back equal, bit for bit."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest
import torch
from torch import nn

from tests.helpers import tiny_task, tiny_zoo
from wemoe.workbench.loaded_zoo import LoadedZoo
from wemoe.workbench.result_cache import ResultCache
from wemoe.workbench.result_size import result_bytes
from wemoe.workbench.workbench import Workbench


@dataclass
class Run:
    model: nn.Module
    losses: list[float]
    table: pd.DataFrame


def test_result_bytes_counts_each_storage_once():
    layer = nn.Linear(10, 4)  # 44 floats
    assert result_bytes(layer) == 44 * 4
    weight = torch.zeros(100)
    assert result_bytes({"a": weight, "b": weight[:10], "c": [weight, 3, "x"]}) == 400  # a view: the same storage
    table = pd.DataFrame({"x": [1.0, 2.0], "y": [3.0, 4.0]})
    run = Run(layer, [0.5, 0.25], table)
    assert result_bytes(run) == 44 * 4 + int(table.memory_usage(index=True).sum())
    layer.scratch = torch.zeros(25)  # a tensor kept as a plain attribute of a module counts too
    assert result_bytes(layer) == 44 * 4 + 100
    assert result_bytes(("text", 1, None)) == 0


def _put(cache: ResultCache, key: str, value: object) -> None:
    cache.get_or_compute(key, lambda: value)


def test_the_least_recently_used_go_first_beyond_the_bytes():
    cache = ResultCache(max_entries=100, max_bytes=1000)
    for key in "abc":
        _put(cache, key, torch.zeros(100))  # 400 bytes each: the third is one too many
    assert "a" not in cache and "b" in cache and "c" in cache and cache.kept_bytes == 800 and cache.dropped == 1
    assert cache.get("b") is not None  # b used: c is now the oldest
    _put(cache, "d", torch.zeros(60))  # 1040 bytes with b and c: the oldest, c, goes
    assert "c" not in cache and {"b", "d"} <= {k for k in "abcd" if k in cache} and cache.kept_bytes == 640
    _put(cache, "big", torch.zeros(1000))  # above the bound alone: kept, everything else dropped
    assert len(cache) == 1 and "big" in cache and cache.kept_bytes == 4000
    cache.clear()
    assert len(cache) == 0 and cache.kept_bytes == 0


def test_no_byte_bound_keeps_every_entry_up_to_the_count():
    cache = ResultCache(max_entries=3)
    for key in "abcd":
        _put(cache, key, torch.zeros(1000))
    assert len(cache) == 3 and "a" not in cache


def test_a_merge_dropped_for_the_bound_comes_back_bitwise_equal():
    zoo = tiny_zoo(n_experts=2, seed=4)
    loaded = LoadedZoo(zoo, [tiny_task(n, seed=i) for i, n in enumerate(zoo.task_names)])
    tower = sum(v.numel() * v.element_size() for v in zoo.base_state.values())
    cache = ResultCache(max_bytes=2.5 * tower)  # two merged towers fit, not three
    bench = Workbench.sharing(loaded, cache, "z")
    first = {k: v.clone() for k, v in bench.merge("task_arithmetic", {"lambda": 0.1}).model.state_dict().items()}
    for lam in (0.2, 0.3, 0.4):
        bench.merge("task_arithmetic", {"lambda": lam})
    assert len(cache) == 2 and cache.kept_bytes <= 2.5 * tower and cache.dropped == 2
    again = bench.merge("task_arithmetic", {"lambda": 0.1})
    assert not again.from_cache
    assert all(torch.equal(again.model.state_dict()[k], v) for k, v in first.items())


def test_the_apps_bound_is_a_third_of_the_budget_unless_given(monkeypatch):
    from app.shared import RESULTS_MB_ENV, Shared, results_bytes

    monkeypatch.delenv(RESULTS_MB_ENV, raising=False)
    assert results_bytes(12000) == pytest.approx(4000 * 2**20)
    assert Shared(memory_budget_mb=3000, cache_dir=None).results.max_bytes == pytest.approx(1000 * 2**20)
    monkeypatch.setenv(RESULTS_MB_ENV, "512")
    assert Shared(memory_budget_mb=3000, cache_dir=None).results.max_bytes == 512 * 2**20
