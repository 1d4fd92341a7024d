"""Classifications from several sessions computed as one batch: each image's result equals its own classification
alone; requests wait only while another batch computes; a batch that fails is computed again one request at a time."""

import threading
import time

import pytest
import torch

from tests.helpers import merge_routed, tiny_images, tiny_tasks, tiny_zoo
from wemoe.workbench.classify_batching import ClassifyBatcher
from wemoe.workbench.result_cache import ResultCache
from wemoe.workbench.workbench import Workbench


def _queued(batcher: ClassifyBatcher, count: int) -> None:
    """Wait until ``count`` requests queue behind the one computing (at most 10 s)."""
    deadline = time.monotonic() + 10
    while len(batcher._pending) < count:
        assert time.monotonic() < deadline, "the requests never queued"
        time.sleep(0.005)


def _in_threads(calls):
    results, errors, threads = {}, {}, []
    for name, call in calls.items():
        def run(name=name, call=call):
            try:
                results[name] = call()
            except Exception as error:  # noqa: BLE001  (the test reads it)
                errors[name] = error
        threads.append(threading.Thread(target=run))
        threads[-1].start()
    return threads, results, errors


def test_requests_that_wait_with_one_key_are_computed_together():
    turn = threading.Lock()
    batcher = ClassifyBatcher(turn)
    seen = []

    def doubled(images):
        seen.append(images.shape[0])
        return [float(row.sum()) * 2 for row in images]

    turn.acquire()  # another zoo's classification holds the turn
    first, _, _ = _in_threads({"first": lambda: batcher.run("a", torch.ones(1, 2), doubled)})
    time.sleep(0.05)  # the first leads and waits for the turn; the rest queue behind it
    threads, results, errors = _in_threads({
        "two": lambda: batcher.run("a", torch.full((2, 2), 2.0), doubled),
        "three": lambda: batcher.run("a", torch.full((1, 2), 3.0), doubled),
        "other": lambda: batcher.run("b", torch.full((1, 2), 5.0), doubled),
    })
    _queued(batcher, 3)
    turn.release()
    for thread in [*first, *threads]:
        thread.join(10)
    assert not errors
    assert results == {"two": [8.0, 8.0], "three": [12.0], "other": [20.0]}
    assert sorted(seen) == [1, 1, 3]  # the first alone, then "two" and "three" as one batch, "b" on its own
    assert (batcher.batches, batcher.requests) == (3, 4)


def test_a_failed_batch_is_computed_again_one_request_at_a_time():
    turn = threading.Lock()
    batcher = ClassifyBatcher(turn)

    def fails_with_a_nan(images):
        if torch.isnan(images).any():
            raise ValueError("a NaN image")
        return [float(row.sum()) for row in images]

    turn.acquire()
    first, _, _ = _in_threads({"blocker": lambda: batcher.run("a", torch.zeros(1, 1), fails_with_a_nan)})
    time.sleep(0.05)
    threads, results, errors = _in_threads({"bad": lambda: batcher.run("a", torch.full((1, 1), float("nan")),
                                                                         fails_with_a_nan)})
    _queued(batcher, 1)
    more, more_results, more_errors = _in_threads({"good": lambda: batcher.run("a", torch.ones(1, 1),
                                                                               fails_with_a_nan)})
    _queued(batcher, 2)
    turn.release()
    for thread in [*first, *threads, *more]:
        thread.join(10)
    assert isinstance(errors["bad"], ValueError)
    assert not more_errors
    assert more_results == {"good": [1.0]}


@pytest.fixture(scope="module")
def zoo_and_tasks():
    zoo = tiny_zoo(n_experts=3, seed=4, layers=2)
    return zoo, tiny_tasks(zoo)


def test_images_classified_in_one_batch_equal_each_alone(zoo_and_tasks):
    zoo, tasks = zoo_and_tasks
    images = tiny_images(4, seed=21)
    alone = merge_routed(Workbench(zoo, tasks))  # no cache: never batched
    expected = [alone.classify([image], models=None)[0] for image in images]

    loaded, cache = Workbench(zoo, tasks).loaded, ResultCache()
    sessions = [merge_routed(Workbench.sharing(loaded, cache, "tiny")) for _ in images]
    batcher = loaded.classify_batcher
    loaded.classify_turn.acquire()
    first, results_first, errors_first = _in_threads({0: lambda: sessions[0].classify([images[0]])})
    time.sleep(0.1)
    threads, results, errors = _in_threads(
        {i: (lambda i=i: sessions[i].classify([images[i]])) for i in range(1, len(images))})
    _queued(batcher, len(images) - 1)
    loaded.classify_turn.release()
    for thread in [*first, *threads]:
        thread.join(30)
    assert not errors and not errors_first
    results.update(results_first)
    assert (batcher.batches, batcher.requests) == (2, 4)  # the first alone, the three others together
    assert sessions[1].classify([images[0]]) is results[0]  # kept: another session finds it
    for i, want in enumerate(expected):
        (got,) = results[i]
        assert got.task == want.task and got.guess == want.guess
        assert torch.allclose(got.routing, want.routing, atol=1e-6)
        for name in want.models:
            assert got.models[name].labels == want.models[name].labels
            assert got.models[name].probabilities == pytest.approx(want.models[name].probabilities, abs=1e-5)
        assert set(got.experts) == set(want.experts)
        for task in want.experts:
            assert got.experts[task].labels == want.experts[task].labels
            assert got.experts[task].probabilities == pytest.approx(want.experts[task].probabilities, abs=1e-5)


def test_features_of_unchanging_towers_are_kept_per_image(zoo_and_tasks):
    zoo, tasks = zoo_and_tasks
    images = tiny_images(3, seed=31)
    bench = Workbench.sharing(Workbench(zoo, tasks).loaded, ResultCache(), "tiny")
    bench.merge("task_arithmetic")

    def kept_rows():
        return sum("tower features" in key for key in bench.cache._entries)

    bench.classify(images[:2], task="task0")  # two images in one batch: pretrained and 3 experts, a row each
    assert kept_rows() == 4 * 2
    again = bench.classify(images[1:], task="task0")  # one of them again, beside a new image
    assert kept_rows() == 4 * 3  # only the new image's rows were computed
    alone = Workbench(zoo, tasks)
    alone.merge("task_arithmetic")
    for got, want in zip(again, alone.classify(images[1:], task="task0"), strict=True):
        for task in want.experts:
            assert got.experts[task].probabilities == pytest.approx(want.experts[task].probabilities, abs=1e-5)
