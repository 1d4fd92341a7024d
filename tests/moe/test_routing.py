"""wemoe.moe.routing: routing per image and layer, the routers' task guess, task averages, 2-D maps, top-k
predictions."""

import numpy as np
import pytest
import torch

from tests.helpers import tiny_task, tiny_zoo
from wemoe.errors import MethodError
from wemoe.moe.layer import WEMoEConfig, moe_layers, upscale_to_wemoe
from wemoe.moe.routing import (
    RoutingCentroids,
    analyse_routing,
    embed_2d,
    features_and_routing,
    guess_task_argmax,
    pca_2d,
    routing_weights,
    task_average_routing,
    top_k,
    uninformative_routing,
)
from wemoe.tasks.classify import logits
from wemoe.tasks.heads import build_head
from wemoe.tasks.images import TaskImages


@pytest.fixture(scope="module")
def zoo():
    return tiny_zoo(n_experts=3, seed=0, layers=3)


def _trained_looking(tower, seed=1):
    torch.manual_seed(seed)
    for layer in moe_layers(tower).values():
        for p in layer.router.parameters():
            p.data.normal_(0, 0.3)
    return tower


def test_routing_rows_are_each_layers_router_on_that_image_alone(zoo):
    tower = _trained_looking(upscale_to_wemoe(zoo, WEMoEConfig(blocks=[0, 2])))
    images = torch.randn(5, 3, 32, 32)
    features, routing = features_and_routing(tower, images, batch_size=2)
    assert routing.shape == (5, 2, 3)
    with torch.no_grad():
        assert torch.allclose(features, tower(images), atol=1e-5)
        for i in range(5):  # one image alone gives the same row: routing is per sample, not per batch
            assert torch.allclose(routing_weights(tower, images[i : i + 1])[0], routing[i], atol=1e-5)
    assert not torch.allclose(routing[0], routing[1])


def test_untrained_routers_give_lambda_everywhere(zoo):
    routing = routing_weights(upscale_to_wemoe(zoo, WEMoEConfig(lambda_=0.3)), torch.randn(4, 3, 32, 32))
    assert torch.allclose(routing, torch.full((4, 3, 3), 0.3), atol=1e-6)


def test_argmax_guess_follows_the_routers_bias(zoo):
    tower = upscale_to_wemoe(zoo)
    for layer in moe_layers(tower).values():
        layer.router.net[-1].bias.data = torch.tensor([0.1, 0.9, 0.2])
    routing = routing_weights(tower, torch.randn(3, 3, 32, 32))
    assert guess_task_argmax(routing, ["a", "b", "c"]) == ["b", "b", "b"]
    with pytest.raises(ValueError, match="3 experts but 2"):
        guess_task_argmax(routing, ["a", "b"])


def test_untrained_or_nan_routing_carries_no_task_information(zoo):
    images = torch.randn(4, 3, 32, 32)
    untrained = routing_weights(upscale_to_wemoe(zoo, WEMoEConfig(lambda_=0.3)), images)
    assert "same weight" in uninformative_routing(untrained)
    assert "same weight" in uninformative_routing(untrained[0] + 1e-6 * torch.randn_like(untrained[0]))  # rounding
    assert "not numbers" in uninformative_routing(torch.full((2, 3), float("nan")))
    assert "not numbers" in uninformative_routing(torch.tensor([[0.3, float("inf"), 0.1]]))
    trained = routing_weights(_trained_looking(upscale_to_wemoe(zoo)), images)
    assert uninformative_routing(trained) is None and uninformative_routing(trained[0]) is None
    # weights that differ between experts but alike for every task's images cannot point to a task either
    same_for_all = trained[:1].expand(3, -1, -1)
    assert "routed alike" in uninformative_routing(trained[0], centroids=same_for_all)
    assert "not numbers" in uninformative_routing(trained[0], centroids=torch.full((3, 6), float("nan")))
    assert uninformative_routing(trained[0], centroids=trained[:3]) is None
    assert uninformative_routing(trained[0], centroids=trained[:1]) is None  # one task: nothing to tell apart


def test_centroids_pick_the_nearest_task_pattern():
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]).repeat(4, 1, 1)  # layer 0 prefers expert 0, layer 1 expert 1
    b = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]).repeat(4, 1, 1)
    centroids = RoutingCentroids.fit({"a": a + 0.05 * torch.randn_like(a), "b": b})
    # layer-averaged weights are equal for both tasks, so argmax cannot tell them apart; the centroids can
    queries = torch.stack([a[0] + 0.2, b[0] - 0.1])
    assert centroids.predict(queries) == ["a", "b"]
    scores = centroids.scores(queries)
    assert torch.allclose(scores.sum(-1), torch.ones(2)) and scores[0, 0] > 0.5 and scores[1, 1] > 0.5
    with pytest.raises(ValueError, match="No images"):
        RoutingCentroids.fit({"a": a, "b": b[:0]})


def test_analysis_and_task_averages(zoo):
    tower = _trained_looking(upscale_to_wemoe(zoo))
    data = {f"task{t}": TaskImages(f"task{t}", torch.randn(4 + t, 3, 32, 32), torch.zeros(4 + t, dtype=torch.long))
            for t in range(3)}
    analysis = analyse_routing(tower, data, per_task=5)
    assert analysis.labels == ["task0"] * 4 + ["task1"] * 5 + ["task2"] * 5
    assert analysis.layers == [0, 1, 2] and analysis.task_names == zoo.task_names
    assert analysis.features.shape == (14, 32) and analysis.routing.shape == (14, 3, 3)
    averages = task_average_routing(tower, data, per_task=5)
    expected = routing_weights(tower, data["task1"].images[:5]).mean(0)
    assert torch.allclose(averages["task1"], expected, atol=1e-5)
    assert torch.allclose(analysis.task_average()[1], expected, atol=1e-5)
    assert len(analysis.dominant_expert()) == 14
    assert analysis.centroids().predict(analysis.routing[:1]) in (["task0"], ["task1"], ["task2"])


def test_a_static_tower_has_no_routing(zoo):
    with pytest.raises(MethodError, match="wemoe"):
        routing_weights(zoo.visual, torch.randn(1, 3, 32, 32))


def test_pca_matches_sklearn_up_to_sign():
    from sklearn.decomposition import PCA

    x = np.random.default_rng(0).normal(size=(30, 6)) * np.array([5, 3, 1, 1, 1, 1])
    ours = pca_2d(x)
    theirs = PCA(n_components=2).fit_transform(x)
    for c in range(2):
        assert np.allclose(np.abs(ours[:, c]), np.abs(theirs[:, c]), atol=1e-8)
    assert np.allclose(embed_2d(x, "pca"), ours)
    assert pca_2d(x[:1]).shape == (1, 2)
    with pytest.raises(ValueError, match="umap"):
        embed_2d(x, "tsne")


@pytest.mark.slow
def test_umap_separates_two_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(30, 8)) + 6, rng.normal(size=(30, 8)) - 6])
    y = embed_2d(x, "umap", seed=0)
    assert y.shape == (60, 2)
    a, b = y[:30].mean(0), y[30:].mean(0)
    spread = max(y[:30].std(0).max(), y[30:].std(0).max())
    assert np.linalg.norm(a - b) > 2 * spread


def test_top_k_matches_the_logits(zoo):
    task = tiny_task("task0", n_classes=4)
    head = build_head(zoo.clip, zoo.tokenizer, task)
    images = torch.randn(3, 3, 32, 32)
    result = top_k(zoo.visual, images, head, task.classnames, k=5)
    assert [len(r) for r in result] == [4, 4, 4]  # k is capped at the number of classes
    with torch.no_grad():
        probabilities = logits(zoo.visual, images, head).softmax(-1)
    for i, ranked in enumerate(result):
        assert ranked[0][0] == task.classnames[int(probabilities[i].argmax())]
        assert [p for _, p in ranked] == sorted((p for _, p in ranked), reverse=True)
        assert abs(sum(p for _, p in ranked) - 1.0) < 1e-5
    with pytest.raises(ValueError, match="class names"):
        top_k(zoo.visual, images, head, task.classnames[:2])
