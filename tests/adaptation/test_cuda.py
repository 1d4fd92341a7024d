"""On a machine with CUDA: merges, WEMoE's forward pass, adaptation, evaluation and export work there and agree with
the CPU. Marked ``gpu`` (``pytest -m gpu``; bench/gpu_check.sh runs them); skipped with a reason without CUDA."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.helpers import tiny_task, tiny_zoo
from wemoe.adaptation.adapt import adapt
from wemoe.adaptation.adaptive import trainable_parameters
from wemoe.evaluation.evaluate import evaluate
from wemoe.evaluation.export import load_wemoe, save_model
from wemoe.methods import get_method
from wemoe.tasks.heads import HeadCache
from wemoe.tasks.images import load_task_images

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (torch.cuda.is_available() is False)"),
]


@pytest.fixture(scope="module")
def setup():
    zoo = tiny_zoo(n_experts=2, seed=3)
    tasks = [tiny_task(n, n_classes=3, n_images=10, seed=i) for i, n in enumerate(zoo.task_names)]
    data = {t.name: load_task_images(t, zoo.preprocess, "test") for t in tasks}
    heads = {t.name: HeadCache(zoo.clip, zoo.tokenizer).get(t) for t in tasks}
    return zoo, tasks, data, heads


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "wemoe"])
def test_merges_run_on_cuda(setup, method):
    zoo, _, data, _ = setup
    model = get_method(method)(zoo).to("cuda")
    images = next(iter(data.values())).images[:4].to("cuda")
    with torch.no_grad():
        out = model(images)
    assert out.is_cuda and torch.isfinite(out).all()


def test_wemoe_forward_on_cuda_equals_cpu(setup):
    zoo, _, data, _ = setup
    model = get_method("wemoe")(zoo)
    images = next(iter(data.values())).images[:8]
    with torch.no_grad():
        cpu = model(images)
        cuda = copy.deepcopy(model).to("cuda")(images.to("cuda")).cpu()
    assert (cpu - cuda).abs().max() <= 1e-4


def test_adaptation_on_cuda(setup):
    zoo, _, data, heads = setup
    model = get_method("wemoe")(zoo)
    before = [p.detach().clone() for p in trainable_parameters(model)]
    records = list(adapt(model, data, heads, steps=3, lr=5e-2, per_task=4, device="cuda"))
    assert len(records) == 3 and all(torch.isfinite(torch.tensor(r.loss)) for r in records)
    after = trainable_parameters(model)
    assert all(not p.is_cuda for p in after)  # back on the CPU after the run
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_evaluation_on_cuda(setup):
    zoo, _, data, heads = setup
    models = {"wemoe": get_method("wemoe")(zoo), "task_arithmetic": get_method("task_arithmetic")(zoo)}
    on_cpu = evaluate(models, data, heads, device="cpu")
    on_cuda = evaluate(models, data, heads, device="cuda")
    assert on_cpu.index.equals(on_cuda.index) and on_cpu.columns.equals(on_cuda.columns)
    assert ((on_cpu - on_cuda).abs().to_numpy() <= 100 / 10 + 1e-9).all()  # at most one of 10 images flips


def test_export_of_a_cuda_adapted_model(setup, tmp_path):
    zoo, _, data, heads = setup
    model = get_method("wemoe")(zoo)
    list(adapt(model, data, heads, steps=2, lr=5e-2, per_task=4, device="cuda"))
    path = save_model(zoo.clip, model, tmp_path / "wemoe.safetensors")
    loaded = load_wemoe(path, zoo.visual)
    images = next(iter(data.values())).images[:4]
    with torch.no_grad():
        assert torch.allclose(loaded(images), model(images), atol=1e-5)
