"""``Workbench.sample_scores``: a model's accuracy per task on a sample of test images, once per model state. Where
the sample is every loaded image (a lesson sized for a CPU) these are the evaluation's cells, so the lesson's steps,
the cost view and the accuracy table score each model once."""

from __future__ import annotations

import pytest

from tests.helpers import tiny_task, tiny_zoo
from wemoe.evaluation.sample_eval import accuracy_by_task, sample_data, with_average
from wemoe.workbench.loaded_zoo import LoadedZoo
from wemoe.workbench.result_cache import ResultCache
from wemoe.workbench.workbench import Workbench

NAMES = ["pretrained", "experts", "task_arithmetic", "wemoe"]


@pytest.fixture
def benches():
    zoo = tiny_zoo(n_experts=3, noise=0.2)
    loaded = LoadedZoo(zoo, [tiny_task(name, n_classes=3, n_images=12, seed=i)
                             for i, name in enumerate(zoo.task_names)])
    cache = ResultCache()
    first, second = Workbench.sharing(loaded, cache, "zoo"), Workbench.sharing(loaded, cache, "zoo")
    for bench in (first, second):
        bench.merge("task_arithmetic")
        bench.merge("wemoe")
    return first, second, cache


def test_a_sample_of_every_image_is_the_evaluations_cells(benches):
    first, second, cache = benches
    table = first.evaluate(NAMES)
    misses = cache.misses
    scores = second.sample_scores(NAMES, per_task=12)  # every task has 12 images: the whole evaluation
    assert cache.misses == misses  # nothing computed again
    for name in NAMES:
        assert scores[name] == pytest.approx({column: float(v) for column, v in table.loc[name].items()}, abs=1e-9)


def test_a_smaller_sample_is_scored_on_it_once_per_model_state(benches):
    first, second, cache = benches
    scores = first.sample_scores(NAMES, per_task=5)
    sample = sample_data(first.data(), 5)
    models = first.models(NAMES)
    for name in NAMES:
        expected = with_average(accuracy_by_task(models[name], sample, first.heads()))
        assert scores[name] == pytest.approx(expected, abs=1e-9)
    misses = cache.misses
    assert second.sample_scores(NAMES, per_task=5) == scores  # the other session: from the cache
    assert cache.misses == misses
