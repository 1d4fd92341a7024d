"""#20 in the app's own panels: "Try images" corrupts an upload as the robustness view corrupts the test images, and
"Merge and adapt" offers the held-out adaptation split (images never scored) next to the paper's test split."""

from __future__ import annotations

import dataclasses

import gradio as gr
import numpy as np
import pytest

from app import handlers, inputs
from app.session import Session
from tests.app_support import tiny_config, write_examples
from tests.helpers import tiny_task, tiny_zoo
from wemoe.tasks.corruptions import CORRUPTIONS, corrupt_as_seen, corrupt_tensor, normalization
from wemoe.tasks.images import encode_images


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    def with_train_split(progress):  # pocket-like tasks: a train split of unlabeled images besides the test split
        zoo = tiny_zoo(n_experts=2, seed=4, layers=3)
        tasks = []
        for i, name in enumerate(zoo.task_names):
            test, train = tiny_task(name, n_images=8, seed=i), tiny_task(name, n_images=20, seed=40 + i)
            tasks.append(
                dataclasses.replace(
                    test,
                    source="wemoe.pocket (a stand-in with a train split)",
                    load_split=lambda split, t=test, r=train: (r if split == "train" else t).load_split("test"),
                )
            )
        return zoo, tasks

    config = tiny_config(write_examples(tmp_path_factory.mktemp("examples")))
    config.zoos["trainable"] = ("Tiny zoo with train splits", with_train_split)
    return config


@pytest.fixture
def merged(config):
    session = Session()
    handlers.load_zoo(session, config, "tiny")
    handlers.merge(session, ["wemoe"], {}, per_task=2)
    yield session
    session.close()


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_an_upload_is_corrupted_exactly_as_the_robustness_test_images(merged, config, name):
    image = inputs.read_example("task1/example0.png", config).resize((45, 37))  # not the model's size
    preprocess = merged.bench.zoo.preprocess
    seen = corrupt_as_seen(image, preprocess, name, 4, seed=0)
    expected = corrupt_tensor(encode_images([image], preprocess), name, 4, 0, *normalization(preprocess))
    assert np.array_equal(preprocess(seen).numpy(), expected[0].numpy())
    assert seen.size == tuple(expected.shape[-2:][::-1])


def test_try_images_classifies_the_corrupted_image_and_keeps_the_original(merged, config):
    image = inputs.read_example("task1/example0.png", config)
    shown, table, _, heatmap = handlers.predict(merged, image, "task1", config, "gaussian_noise", 5)
    assert merged.image is image  # another corruption or head reclassifies the original
    seen = corrupt_as_seen(image, merged.bench.zoo.preprocess, "gaussian_noise", 5)
    direct = handlers.predict(merged, seen, "task1", config)  # the corrupted image uploaded as it is
    assert table.equals(direct[1]) and np.array_equal(heatmap.data[0].z, direct[3].data[0].z)
    assert np.array_equal(np.asarray(shown), np.asarray(direct[0]))  # the preview is the image as classified
    clean = handlers.predict(merged, image, "task1", config, inputs.NO_CORRUPTION, 5)
    assert not np.array_equal(np.asarray(clean[0]), np.asarray(shown))
    assert clean[1].equals(handlers.predict(merged, image, "task1", config)[1])


@pytest.mark.parametrize(
    "corruption, severity, message",
    [
        ("fog", 3, "Corruption: choose none or one of motion_blur"),
        ("contrast", 0, "Severity: enter a whole number from 1 to 5"),
        ("contrast", 2.5, "Severity"),
        (["contrast"], 3, "Corruption"),
    ],
)
def test_a_bad_corruption_is_refused_keeping_the_last_predictions(merged, config, corruption, severity, message):
    image = inputs.read_example("task0/example0.png", config)
    handlers.predict(merged, image, "task0", config)
    before = merged.predictions.copy()
    with pytest.raises(gr.Error, match=message):
        handlers.predict(
            merged, inputs.read_example("task1/example1.png", config), "task0", config, corruption, severity
        )
    assert merged.predictions.equals(before) and merged.image is image


def test_heldout_adaptation_adapts_on_images_never_scored(config):
    session = Session()
    handlers.load_zoo(session, config, "trainable")
    handlers.merge(session, ["wemoe"], {}, per_task=2)
    loaded, seen = session.bench.loaded, []
    real = loaded.adaptation_data
    loaded.adaptation_data = lambda split=None: seen.append(split) or real(split)
    *_, (done, _) = handlers.adapt(session, "wemoe", 2, 1e-2, 2, split="heldout")
    assert seen == ["heldout"] and "on held-out images" in done and session.bench.merges["wemoe"].adapt_steps == 2
    scored, adapted = loaded.data(), real("heldout")
    for task in session.bench.task_names:
        assert not {i.numpy().tobytes() for i in scored[task].images} & {
            i.numpy().tobytes() for i in adapted[task].images
        }
    *_, (again, _) = handlers.adapt(session, "wemoe", 2, 1e-2, 2)  # the default: the scored test images
    assert seen[-1] == "test" and "held-out" not in again
    session.close()


def test_heldout_adaptation_is_refused_where_tasks_have_no_heldout_images(merged):
    with pytest.raises(gr.Error, match="task0, task1, task2 have no held-out images here"):
        next(handlers.adapt(merged, "wemoe", 2, 1e-3, 2, split="heldout"))
    with pytest.raises(gr.Error, match="Unknown adaptation images 'train'"):
        next(handlers.adapt(merged, "wemoe", 2, 1e-3, 2, split="train"))
    assert merged.bench.merges["wemoe"].adapt_steps == 0 and merged.job is None


def test_the_page_has_the_controls_and_their_endpoints(config):
    from app.layout import build_demo

    demo = build_demo(config)
    endpoints = {d["api_name"]: d for d in demo.config["dependencies"]}
    assert {"reclassify", "reclassify_corruption", "reclassify_severity"} <= set(endpoints)
    labels = {c["props"].get("label") for c in demo.config["components"]}
    assert {"Corruption", "Severity", "Adaptation images"} <= labels
    assert len(endpoints["adapt"]["inputs"]) == 8 and len(endpoints["classify_upload"]["inputs"]) == 5
