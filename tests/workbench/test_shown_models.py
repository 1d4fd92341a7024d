"""Classifying only the models the page shows: the same numbers as the full classification, the rest on demand,
the unchanging towers' features cached per image, and a batch equal to its images classified alone."""

import hashlib

import pytest
import torch

from tests.helpers import merge_routed, tiny_images, tiny_tasks, tiny_zoo
from wemoe.evaluation.predictions import classify_batch, features
from wemoe.tasks.images import encode_images
from wemoe.workbench.loaded_zoo import LoadedZoo
from wemoe.workbench.result_cache import ResultCache
from wemoe.workbench.workbench import PRETRAINED, Workbench


def _loaded() -> LoadedZoo:
    zoo = tiny_zoo(n_experts=3, seed=4, layers=2)
    return Workbench(zoo, tiny_tasks(zoo)).loaded


def _bench(routed: bool = True, cache: ResultCache | None = None, loaded: LoadedZoo | None = None) -> Workbench:
    bench = Workbench.sharing(loaded or _loaded(), cache, "tiny")
    if routed:
        return merge_routed(bench)
    bench.merge("task_arithmetic", {"lambda": 0.4})
    return bench


@pytest.fixture(scope="module")
def images():
    return tiny_images(6, seed=11)


@pytest.mark.parametrize(("routed", "task"), [(True, None), (True, "task1"), (False, None), (False, "task2")])
def test_the_shown_models_say_what_the_full_classification_says(images, routed, task):
    bench = _bench(routed)
    for image in images:
        (shown,) = bench.classify([image], task, models="shown")
        (full,) = bench.classify([image], task)
        merged = "wemoe" if routed else "task_arithmetic"
        expected_models = [merged] if shown.task is not None else [merged, PRETRAINED]
        assert list(shown.models) == expected_models
        assert list(shown.experts) == ([] if shown.task is None else [shown.task])
        assert (shown.task, shown.guess, shown.layers) == (full.task, full.guess, full.layers)
        assert all(shown.models[n] == full.models[n] for n in shown.models)  # labels and probabilities, exactly
        assert all(shown.experts[t] == full.experts[t] for t in shown.experts)
        if routed:
            assert torch.equal(shown.routing, full.routing)
    if routed and task is None:  # the routers' guesses cover more than one task: the expert follows the guess
        assert len({bench.classify([image], None, models="shown")[0].task for image in images}) > 1


def test_asked_models_and_experts_only(images):
    bench = _bench(routed=False)
    (some,) = bench.classify(images[:1], "task0", models=[PRETRAINED], experts=["task2"])
    (full,) = bench.classify(images[:1], "task0")
    assert list(some.models) == [PRETRAINED] and list(some.experts) == ["task2"]
    assert some.models[PRETRAINED] == full.models[PRETRAINED] and some.experts["task2"] == full.experts["task2"]
    with pytest.raises(Exception, match="Unknown models"):
        bench.classify(images[:1], "task0", models=["nope"])


def test_the_unchanging_towers_run_once_per_image_for_every_session(images):
    cache = ResultCache()
    loaded = _loaded()
    first, second = _bench(cache=cache, loaded=loaded), _bench(cache=cache, loaded=loaded)  # two sessions
    calls: list[str] = []
    hooks = [tower.register_forward_hook(lambda *_, t=t: calls.append(t))
             for t, tower in first.loaded.expert_towers().items()]
    try:
        (a,) = first.classify(images[:1], "task1", models=[PRETRAINED])
        (b,) = second.classify(images[:1], "task1", models=[PRETRAINED], experts=["task1", "task2"])
    finally:
        for hook in hooks:
            hook.remove()
    assert sorted(calls) == ["task0", "task1", "task2"]  # the second session ran none again (they run side by side)
    assert b.experts == {t: a.experts[t] for t in ("task1", "task2")}
    batch = encode_images(images[:1], first.zoo.preprocess)
    for name, tower in [(PRETRAINED, first.zoo.visual), ("expert task1", first.loaded.expert_tower("task1"))]:
        digest = hashlib.sha256(batch[0].numpy().tobytes()).hexdigest()  # kept per image
        cached, hit = first.cached(("tower features", digest, tuple(batch.shape[1:]), name), lambda: None)
        assert hit and torch.equal(cached, features(tower, batch)[0])


def test_a_batch_equals_its_images_classified_alone(images):
    bench = _bench()
    batch = encode_images(images, bench.zoo.preprocess)
    models = {PRETRAINED: bench.zoo.visual, **{n: r.model for n, r in bench.merges.items()}}
    experts = bench.loaded.expert_towers()
    centroids = bench.routing_centroids("wemoe", 32)
    args = (models, experts, bench.heads(), bench.tasks, None, "wemoe", centroids)
    for used_only in (False, True):
        together = classify_batch(batch, *args, used_expert_only=used_only)
        alone = [classify_batch(batch[i : i + 1], *args, used_expert_only=used_only)[0] for i in range(len(batch))]
        for one, other in zip(together, alone, strict=True):
            assert (one.task, one.guess.task) == (other.task, other.guess.task)
            assert torch.allclose(one.routing, other.routing, atol=1e-5)
            pairs = [*zip(one.models.items(), other.models.items(), strict=True),
                     *zip(one.experts.items(), other.experts.items(), strict=True)]
            for (name, ranked), (other_name, other_ranked) in pairs:
                assert name == other_name and ranked.labels == other_ranked.labels
                assert ranked.probabilities == pytest.approx(other_ranked.probabilities, abs=1e-5)
