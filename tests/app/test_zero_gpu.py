"""The ZeroGPU stand-in behaves like ZeroGPU (in-place changes lost, results and yields returned, duration enforced),
and adaptation in GPU chunks under it equals one uninterrupted run, bit for bit."""

from __future__ import annotations

import copy
import time

import pytest
import torch

from tests import zero_gpu
from tests.helpers import tiny_task, tiny_zoo
from wemoe.adaptation.adapt import AdaptationRun, adapt_in_chunks, run_chunk
from wemoe.adaptation.adaptive import trainable_parameters
from wemoe.methods import get_method
from wemoe.tasks.heads import HeadCache
from wemoe.tasks.images import load_task_images

SETTINGS = {"steps": 7, "lr": 5e-2, "per_task": 4, "loss": "entropy", "seed": 1}


@pytest.fixture(scope="module")
def setup():
    zoo = tiny_zoo(n_experts=2, seed=5)
    tasks = [tiny_task(n, n_classes=3, n_images=10, seed=i) for i, n in enumerate(zoo.task_names)]
    data = {t.name: load_task_images(t, zoo.preprocess, "test") for t in tasks}
    heads = {t.name: HeadCache(zoo.clip, zoo.tokenizer).get(t) for t in tasks}
    return zoo, data, heads


def test_in_place_changes_are_lost_and_results_come_back():
    tensor = torch.ones(3)

    @zero_gpu.GPU(duration=30)
    def work(t):
        t.zero_()
        return t.sum() + 5

    assert float(work(tensor)) == 5.0 and torch.equal(tensor, torch.ones(3))

    @zero_gpu.GPU
    def count(n):
        yield from range(n)

    assert list(count(4)) == [0, 1, 2, 3]


def test_a_call_past_its_duration_is_aborted():
    @zero_gpu.GPU(duration=lambda seconds: seconds / 10)
    def slow(seconds):
        time.sleep(seconds)

    with pytest.raises(zero_gpu.GPUTaskAborted, match="ran past its duration"):
        slow(5.0)


@pytest.mark.parametrize("k", [1, 3])
def test_adaptation_in_forked_gpu_chunks_equals_one_uninterrupted_run(setup, k):
    zoo, data, heads = setup
    whole = get_method("wemoe")(zoo)
    chunked = copy.deepcopy(whole)
    records = list(AdaptationRun(whole, data, heads, SETTINGS).run())
    chunk_records = list(adapt_in_chunks(chunked, data, heads, SETTINGS, k, runner=zero_gpu.GPU(run_chunk)))
    assert [r.loss for r in chunk_records] == [r.loss for r in records]
    assert all(torch.equal(a, b)
               for a, b in zip(trainable_parameters(chunked), trainable_parameters(whole), strict=True))


def test_a_chunk_that_runs_out_of_time_keeps_the_last_finished_chunk(setup):
    zoo, data, heads = setup
    model = get_method("wemoe")(zoo)
    reference = copy.deepcopy(model)
    list(AdaptationRun(reference, data, heads, {**SETTINGS, "steps": 2}).run())
    chunks = {"n": 0}

    def runner(*args):
        chunks["n"] += 1
        if chunks["n"] == 2:  # the second GPU call runs out of its duration
            raise zero_gpu.GPUTaskAborted("GPU task aborted")
        yield from zero_gpu.GPU(run_chunk)(*args)

    done = []
    with pytest.raises(zero_gpu.GPUTaskAborted):
        for record in adapt_in_chunks(model, data, heads, SETTINGS, 2, runner=runner):
            done.append(record.step)
    assert done == [1, 2]
    assert all(torch.equal(a, b)
               for a, b in zip(trainable_parameters(model), trainable_parameters(reference), strict=True))
