"""An adaptation cut into chunks (each from a checkpoint, on a fresh copy of the model, as a ZeroGPU call would run)
gives bitwise the result of the same run in one go: same batches, same Adam state, same records."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from tests.helpers import tiny_task, tiny_zoo
from wemoe.adaptation.adapt import AdaptationRun
from wemoe.adaptation.adaptive import trainable_parameters
from wemoe.methods import get_method
from wemoe.tasks.images import load_task_images

SETTINGS = {"steps": 10, "lr": 5e-2, "per_task": 4, "loss": "im", "seed": 3}


@pytest.fixture(scope="module")
def setup():
    zoo = tiny_zoo(n_experts=3, seed=2, layers=3)
    tasks = [tiny_task(n, n_classes=3, n_images=10, seed=i) for i, n in enumerate(zoo.task_names)]
    data = {t.name: load_task_images(t, zoo.preprocess, "test") for t in tasks}
    from wemoe.tasks.heads import HeadCache

    heads = {t.name: HeadCache(zoo.clip, zoo.tokenizer).get(t) for t in tasks}
    return zoo, data, heads


@pytest.mark.parametrize("method", ["wemoe", "adamerging"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_chunks_of_k_steps_equal_one_uninterrupted_run(setup, method, k):
    zoo, data, heads = setup
    whole = get_method(method)(zoo)
    chunked = copy.deepcopy(whole)
    whole_run = AdaptationRun(whole, data, heads, SETTINGS)
    records = list(whole_run.run())

    run = AdaptationRun(chunked, data, heads, SETTINGS)
    checkpoint, chunk_records = run.checkpoint(), []
    while not checkpoint.done:
        worker = copy.deepcopy(chunked)  # what a forked GPU worker sees; its in-place changes are lost
        resumed = AdaptationRun.resume(worker, data, heads, pickle.loads(pickle.dumps(checkpoint)))
        chunk_records += list(resumed.run(k))
        checkpoint = resumed.checkpoint()
        with torch.no_grad():  # the main process loads what the worker returned
            for name, p in chunked.named_parameters():
                if name in checkpoint.trainable:
                    p.copy_(checkpoint.trainable[name])

    assert [r.step for r in chunk_records] == list(range(1, 11))
    assert [r.loss for r in chunk_records] == [r.loss for r in records]
    assert all(torch.equal(a, b)
               for a, b in zip(trainable_parameters(chunked), trainable_parameters(whole), strict=True))
    expected = whole_run.checkpoint()
    assert torch.equal(checkpoint.generator, expected.generator)
    for state, reference in zip(checkpoint.optimizer["state"].values(), expected.optimizer["state"].values(),
                                strict=True):
        assert all(torch.equal(state[key], reference[key]) for key in ("step", "exp_avg", "exp_avg_sq"))


def test_running_out_of_device_memory_keeps_the_last_finished_step_and_says_what_to_do(setup, monkeypatch):
    from wemoe.adaptation.adapt import AdaptationOutOfMemory

    zoo, data, heads = setup
    model = get_method("wemoe")(zoo)
    run = AdaptationRun(model, data, heads, SETTINGS)
    records = [next(run.run(1))]
    kept = [p.detach().clone() for p in trainable_parameters(model)]
    real_step = run.optimizer.step

    def step_cut_short():  # an out-of-memory in the middle of the optimizer's update: some parameters moved
        with torch.no_grad():
            trainable_parameters(model)[0].add_(1.0)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(run.optimizer, "step", step_cut_short)
    with pytest.raises(AdaptationOutOfMemory,
                       match=r"step 2 of 10 \(4 images per task.*fewer images per task \(e\.g\. 2\)"):
        list(run.run())
    assert [r.step for r in records] == [1] and run.step == 1
    assert all(torch.equal(a, b) for a, b in zip(kept, trainable_parameters(model), strict=True))
    assert all(p.device.type == "cpu" for p in model.parameters())
    monkeypatch.setattr(run.optimizer, "step", real_step)
