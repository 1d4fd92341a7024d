"""Workbench.classify against direct computation: top-k through each head, the routing, the routers' guess."""

import pytest
import torch

from tests.helpers import merge_routed, tiny_images, tiny_task, tiny_tasks, tiny_zoo
from wemoe.errors import TaskError
from wemoe.evaluation.predictions import joint_head
from wemoe.moe.layer import moe_layers
from wemoe.moe.routing import routing_weights
from wemoe.tasks.classify import logits, stable_top_k
from wemoe.tasks.images import encode_images
from wemoe.workbench.result_cache import ResultCache
from wemoe.workbench.workbench import PRETRAINED, Workbench


@pytest.fixture(scope="module")
def bench():
    zoo = tiny_zoo(n_experts=3, seed=4, layers=2)
    return merge_routed(Workbench(zoo, tiny_tasks(zoo)))


@pytest.fixture(scope="module")
def images():
    return tiny_images(4, seed=11)


def _towers(bench):
    towers = {PRETRAINED: bench.zoo.visual, **{n: r.model for n, r in bench.merges.items()}}
    return towers, {t: bench.loaded.expert_tower(t) for t in bench.task_names}


def test_top_k_under_a_chosen_head_is_the_models_own_argmax(bench, images):
    batch = encode_images(images, bench.zoo.preprocess)
    results = bench.classify(images, task="task1", k=2)
    models, experts = _towers(bench)
    head, classnames = bench.heads()["task1"], bench.tasks[1].classnames
    assert len(results) == len(images)
    for i, result in enumerate(results):
        assert result.task == "task1" and result.task_chosen
        assert list(result.models) == [PRETRAINED, "task_arithmetic", "wemoe"]
        assert list(result.experts) == bench.task_names
        pairs = [*zip(result.models.values(), models.values(), strict=True),
                 *zip(result.experts.values(), experts.values(), strict=True)]
        for ranked, tower in pairs:
            with torch.no_grad():
                probabilities = logits(tower.eval(), batch[i : i + 1], head).softmax(-1)[0]
            assert len(ranked.labels) == 2 and ranked.tasks == ("task1", "task1")
            assert ranked.labels[0] == classnames[int(probabilities.argmax())]
            assert ranked.probabilities[0] == pytest.approx(float(probabilities.max()), abs=1e-5)
            assert ranked.probabilities[0] >= ranked.probabilities[1]


def test_the_routing_and_the_guess(bench, images):
    batch = encode_images(images, bench.zoo.preprocess)
    tower = bench.merges["wemoe"].model
    expected = routing_weights(tower, batch)
    centroids = bench.routing_centroids("wemoe", 32)
    for i, result in enumerate(bench.classify(batch)):  # a preprocessed batch is classified the same way
        assert result.routed_by == "wemoe" and result.layers == tuple(sorted(moe_layers(tower)))
        assert torch.allclose(result.routing, expected[i], atol=1e-6)
        averaged = result.routing.mean(dim=0).argmax()
        assert result.guess.heaviest == bench.task_names[int(averaged)]  # argmax of the layer-averaged routing
        nearest = centroids.distances(expected[i : i + 1])[0].argmin()
        assert result.guess.task == bench.task_names[int(nearest)] == result.guess.ranked[0]
        assert result.task == result.guess.task and not result.task_chosen  # the guess chose the head
        assert set(result.models["wemoe"].tasks) == {result.task}


def test_without_a_guess_every_tasks_classes_together(images):
    zoo = tiny_zoo(n_experts=2, seed=6)
    bench = Workbench(zoo, [tiny_task(n, n_images=6, seed=i) for i, n in enumerate(zoo.task_names)])
    (result,) = bench.classify(images[:1], k=4)
    assert result.task is None and result.guess is None and result.routing is None  # no WEMoE merge: no routing
    head, labels, tasks = joint_head(bench.heads(), bench.tasks)
    with torch.no_grad():
        probabilities = logits(zoo.visual.eval(), encode_images(images[:1], zoo.preprocess), head).softmax(-1)[0]
    top = int(probabilities.argmax())
    assert (result.models[PRETRAINED].labels[0], result.models[PRETRAINED].tasks[0]) == (labels[top], tasks[top])
    bench.merge("wemoe")  # untrained routers: every expert the same weight, so no guess
    (result,) = bench.classify(images[:1])
    assert result.guess.task is None and "same weight" in result.guess.why_not and result.task is None
    with pytest.raises(TaskError, match="Unknown task"):
        bench.classify(images[:1], task="nope")


def test_a_cache_classifies_the_same_images_once(images):
    zoo = tiny_zoo(n_experts=2, seed=7)
    tasks = [tiny_task(n, n_images=6, seed=i) for i, n in enumerate(zoo.task_names)]
    cache = ResultCache()
    loaded = Workbench(zoo, tasks).loaded
    first, second = (Workbench.sharing(loaded, cache, "tiny") for _ in range(2))
    first.merge("task_arithmetic")
    second.merge("task_arithmetic")
    assert first.classify(images[:2], task="task0") is second.classify(images[:2], task="task0")
    assert first.classify(images[:2], task="task1") is not first.classify(images[:2], task="task0")


def test_tied_classes_rank_in_head_order():
    probabilities = torch.tensor([[0.1, 0.3, 0.2, 0.3, 0.1]])
    values, indices = stable_top_k(probabilities, 3)
    assert indices.tolist() == [[1, 3, 2]] and torch.equal(values, torch.tensor([[0.3, 0.3, 0.2]]))
