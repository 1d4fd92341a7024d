"""The pocket benchmark: tasks, the build script end to end (scaled down), the loader's checks, the shipped zoo."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import wemoe  # noqa: F401  (before open_clip)
from wemoe.errors import ZooError
from wemoe.pocket import DEFAULT_PATH, load_pocket_zoo, verify
from wemoe.pocket import generators
from wemoe.pocket.build import build
from wemoe.pocket.tasks import POCKET_TASKS, SPLIT_SIZES, TASK_NAMES, arrays, digit_indices, get_spec, split_seed
from wemoe.pocket.train import ExpertSettings, PretrainSettings, create_pocket_clip, to_tensor
from wemoe.tasks import get_task


def test_tasks_are_registered_with_distinct_class_names():
    assert len(TASK_NAMES) >= 6
    seen = {}
    for name in TASK_NAMES:
        task = get_task(name)
        assert all("{c}" in template for template in task.templates)
        for classname in task.classnames:
            assert classname not in seen, f"{name} and {seen.get(classname)} share the class name {classname!r}"
            seen[classname] = name


def test_generation_is_deterministic_and_balanced():
    for name in TASK_NAMES:
        images, labels = arrays(name, "train")
        spec = get_spec(name)
        rng = np.random.default_rng(split_seed(name, "train"))
        again = generators.digits(rng, len(labels), "train") if spec.generator is generators.digits else spec.generator(rng, len(labels))
        np.testing.assert_array_equal(images, again[0])
        np.testing.assert_array_equal(labels, again[1])
        assert images.shape == (SPLIT_SIZES["train"], 32, 32, 3) and images.dtype == np.uint8
        counts = np.bincount(labels, minlength=len(spec.classnames))
        assert counts.min() > 0.5 * counts.mean()


def test_digit_splits_use_disjoint_real_digits():
    assert not set(digit_indices("train")) & set(digit_indices("test"))


def test_tasks_look_different_on_average():
    means = np.stack([arrays(name, "test")[0].reshape(-1, 3).mean(0) for name in TASK_NAMES])
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1) + np.eye(len(means)) * 1e9
    assert distances.min() > 10  # mean colours at least 10 grey levels apart for every pair


def test_dataset_columns_and_fast_tensor_path_match_the_model_transform():
    task = POCKET_TASKS["pocket_shapes"]
    data = task.dataset("test", samples=5)
    assert set(data.column_names) == {"image", "label"}
    assert data.features["label"].names == list(task.classnames)
    _, preprocess, _ = create_pocket_clip()
    images, _ = arrays("pocket_shapes", "test")
    expected = torch.stack([preprocess(task.load_split("test")[i]["image"]) for i in range(3)])
    torch.testing.assert_close(to_tensor(images[:3]), expected, atol=1e-5, rtol=0)


def test_scaled_down_build_end_to_end(tmp_path):
    out = tmp_path / "pocket"
    kwargs = dict(
        pretrain_settings=PretrainSettings(steps=3, batch=16),
        expert_settings=ExpertSettings(steps=2, batch=8),
        train_size=24,
        test_size=12,
        adapt_steps=2,
        examples=tmp_path / "examples",
        log=lambda message: None,
    )
    manifest = build(out, **kwargs)
    assert set(manifest["accuracies"]) >= {"pretrained", "experts", "task_arithmetic", "wemoe_oracle", "wemoe"}
    assert manifest["accuracies"]["wemoe"]["adapt_steps"] == 2
    assert len(list((tmp_path / "examples" / "pocket_flags").glob("*.png"))) == 6
    zoo = load_pocket_zoo(out)
    assert zoo.task_names == list(TASK_NAMES)
    stored = json.loads((out / "manifest.json").read_text())
    assert stored["files"] == manifest["files"]

    with pytest.raises(ZooError, match="--force"):
        build(out, **kwargs)
    assert not list(tmp_path.glob(".pocket-*")), "a refused build must leave no temporary folder"

    expert_file = out / manifest["experts"]["pocket_digits"]
    expert_file.write_bytes(expert_file.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ZooError, match="does not match its manifest"):
        load_pocket_zoo(out)
    expert_file.unlink()
    with pytest.raises(ZooError, match="is missing"):
        load_pocket_zoo(out)


def test_loading_from_a_folder_without_manifest_says_how_to_rebuild(tmp_path):
    with pytest.raises(ZooError, match="python -m wemoe.pocket.build"):
        load_pocket_zoo(tmp_path)


def test_shipped_zoo_matches_its_manifest():
    manifest = verify(DEFAULT_PATH)
    total = sum(entry["bytes"] for entry in manifest["files"].values())
    assert total <= 25 * 2**20
    assert manifest["tasks"] == list(TASK_NAMES)
