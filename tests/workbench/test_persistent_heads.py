"""Zero-shot heads kept in the persistent result store: a restart with an empty heads folder reads them back bit for
bit instead of running the text tower; a changed class name, template or text weight misses."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.helpers import tiny_task, tiny_tasks, tiny_zoo
from wemoe.tasks import heads
from wemoe.tasks.heads import HeadCache, build_head
from wemoe.workbench import result_store
from wemoe.workbench.loaded_zoo import LoadedZoo
from wemoe.workbench.result_store import ResultStore


@pytest.fixture(scope="module")
def zoo():
    return tiny_zoo(n_experts=2, seed=0)


@pytest.fixture
def no_text_tower(monkeypatch):
    """Make running the text tower fail: what follows must read every head it asks for."""

    def refuse(*args, **kwargs):
        raise AssertionError("the head should have come from the store, not the text tower")

    return lambda: monkeypatch.setattr(heads, "build_head", refuse)


def test_a_restart_with_an_empty_heads_folder_reads_the_store_bit_for_bit(zoo, tmp_path, no_text_tower):
    task = tiny_task(n_classes=4)
    first = HeadCache(zoo.clip, zoo.tokenizer, tmp_path / "heads-1", ResultStore(tmp_path / "results"))
    computed = first.get(task)
    assert first.misses == 1 and first.store.saved == 1
    fresh = build_head(zoo.clip, zoo.tokenizer, task)
    no_text_tower()
    restarted = HeadCache(zoo.clip, zoo.tokenizer, tmp_path / "heads-2", ResultStore(tmp_path / "results"))
    again = restarted.get(task)
    assert torch.equal(again, computed) and torch.equal(again, fresh)
    assert (restarted.hits, restarted.misses, restarted.store.loaded) == (1, 0, 1)
    assert restarted.path(task).is_file()  # the heads folder is filled from the store too


@pytest.mark.parametrize("change", ["class name", "template", "text weights"])
def test_a_changed_class_name_template_or_text_weight_misses(zoo, tmp_path, change):
    task = tiny_task(n_classes=3)
    HeadCache(zoo.clip, zoo.tokenizer, tmp_path / "heads-1", ResultStore(tmp_path / "results")).get(task)
    clip = zoo.clip
    if change == "class name":
        task = dataclasses.replace(task, classnames=("class0", "class1", "a renamed class"))
    elif change == "template":
        task = dataclasses.replace(task, templates=("a photo of a {c}.", "a drawing of {c}."))
    else:
        clip = tiny_zoo(n_experts=1, seed=1).clip
    cache = HeadCache(clip, zoo.tokenizer, tmp_path / "heads-2", ResultStore(tmp_path / "results"))
    head = cache.get(task)
    assert cache.misses == 1 and cache.store.loaded == 0
    assert torch.equal(head, build_head(clip, zoo.tokenizer, task))


def test_a_stored_value_that_is_not_a_tensor_is_a_miss(zoo, tmp_path):
    task = tiny_task(n_classes=3)
    store = ResultStore(tmp_path / "results")
    cache = HeadCache(zoo.clip, zoo.tokenizer, tmp_path / "heads", store)
    store.save(cache.store_key(task), {"not": "a head"})
    assert torch.equal(cache.get(task), build_head(zoo.clip, zoo.tokenizer, task)) and cache.misses == 1


def test_a_loaded_zoo_keeps_its_heads_in_the_cache_dir_of_the_environment(zoo, tmp_path, monkeypatch,
                                                                          no_text_tower):
    monkeypatch.setenv(result_store.CACHE_DIR_ENV, str(tmp_path / "kept"))
    tasks = tiny_tasks(zoo)
    first = LoadedZoo(zoo, tasks, cache_dir=str(tmp_path / "heads-1")).heads()
    assert len(list((tmp_path / "kept" / "results").glob("*.safetensors"))) == len(tasks)
    no_text_tower()
    restarted = LoadedZoo(zoo, tasks, cache_dir=str(tmp_path / "heads-2")).heads()
    assert all(torch.equal(restarted[t], first[t]) for t in first)
    monkeypatch.delenv(result_store.CACHE_DIR_ENV)
    assert LoadedZoo(zoo, tasks, cache_dir=str(tmp_path / "heads-3")).head_cache.store is None
