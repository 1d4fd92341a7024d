"""The pocket benchmark: tasks, the build script end to end (scaled down), the loader's checks, the shipped zoo."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

import wemoe  # noqa: F401  (before open_clip)
from wemoe.errors import ZooError
from wemoe.pocket import DEFAULT_PATH, generators, load_pocket_zoo, verify
from wemoe.pocket.build import BuildSettings, build, finetune_experts, write_examples
from wemoe.pocket.generators import digit_indices
from wemoe.pocket.tasks import POCKET_TASKS, SPLIT_SIZES, TASK_NAMES, arrays, get_spec, split_seed
from wemoe.pocket.train import ExpertSettings, PretrainSettings, create_pocket_clip, finetune_expert, restyle, to_tensor
from wemoe.tasks.registry import get_task


def test_tasks_are_registered_with_distinct_class_names():
    assert len(TASK_NAMES) >= 6
    seen = {}
    for name in TASK_NAMES:
        task = get_task(name)
        assert all("{c}" in template for template in task.templates)
        for classname in task.classnames:
            assert classname.lower() not in seen, (f"{name} and {seen.get(classname.lower())} share the class name "
                                                   f"{classname!r}")
            seen[classname.lower()] = name


def test_generation_is_deterministic_and_balanced():
    for name in TASK_NAMES:
        images, labels = arrays(name, "train")
        spec = get_spec(name)
        rng = np.random.default_rng(split_seed(name, "train"))
        again = (generators.digits(rng, len(labels), "train") if spec.generator is generators.digits
                 else spec.generator(rng, len(labels)))
        np.testing.assert_array_equal(images, again[0])
        np.testing.assert_array_equal(labels, again[1])
        assert images.shape == (SPLIT_SIZES["train"], 32, 32, 3) and images.dtype == np.uint8
        counts = np.bincount(labels, minlength=len(spec.classnames))
        assert counts.min() > 0.5 * counts.mean()


def test_digit_splits_use_disjoint_real_digits():
    assert not set(digit_indices("train")) & set(digit_indices("test"))


def test_tasks_look_different_from_each_other():
    # The routers must tell tasks apart: a linear probe on 4x4-pooled colours names an image's task.
    from sklearn.linear_model import LogisticRegression

    def features(split, n):
        x = np.concatenate([arrays(name, split)[0][:n] for name in TASK_NAMES]).astype(np.float32) / 255
        return (x.reshape(len(x), 4, 8, 4, 8, 3).mean((2, 4)).reshape(len(x), -1),
                np.repeat(np.arange(len(TASK_NAMES)), n))

    probe = LogisticRegression(max_iter=500).fit(*features("train", 200))
    x, y = features("test", 200)
    assert probe.score(x, y) > 0.95


def test_dataset_columns_and_fast_tensor_path_match_the_model_transform():
    task = POCKET_TASKS["pocket_shapes"]
    data = task.dataset("test", samples=5)
    assert set(data.column_names) == {"image", "label"}
    assert data.features["label"].names == list(task.classnames)
    _, preprocess, _ = create_pocket_clip()
    images, _ = arrays("pocket_shapes", "test")
    expected = torch.stack([preprocess(task.load_split("test")[i]["image"]) for i in range(3)])
    torch.testing.assert_close(to_tensor(images[:3]), expected, atol=1e-5, rtol=0)


def test_restyle_is_seeded_and_keeps_the_requested_share_of_originals():
    images, _ = arrays("pocket_flags", "test")
    np.testing.assert_array_equal(restyle(images[:50], 3), restyle(images[:50], 3))
    assert not np.array_equal(restyle(images[:50], 3), restyle(images[:50], 4))
    np.testing.assert_array_equal(restyle(images[:20], 3, original_fraction=1.0), images[:20])
    assert sum(np.array_equal(a, b) for a, b in zip(restyle(images[:20], 3), images[:20], strict=True)) == 0


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("pocket") / "zoo"
    settings = BuildSettings(pretrain=PretrainSettings(steps=2, batch=16), expert=ExpertSettings(steps=2, batch=8),
                             train_size=32, wemoe_steps=1, measure_samples=8)
    (root.parent / "examples" / "another_zoos_task").mkdir(parents=True)  # the zoos share one gallery
    manifest = build(root, settings, examples=root.parent / "examples")
    return root, manifest


def test_scaled_down_build_end_to_end(small_zoo):
    root, manifest = small_zoo
    assert json.loads((root / "manifest.json").read_text()) == manifest
    assert verify(root) == manifest
    for key in ("pretrained", "experts", "task_arithmetic", "wemoe_oracle", "wemoe"):
        assert set(manifest["measured"][key]["per_task"]) == set(TASK_NAMES)
    assert manifest["measured"]["wemoe"]["adapt_steps"] == 1
    assert manifest["settings"]["expert_non_mlp"] == "frozen"
    assert manifest["build"]["seconds"]["total"] > 0
    assert sorted(p.name for p in (root.parent / "examples").iterdir()) == sorted([*TASK_NAMES, "another_zoos_task"])
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")], "no temporary folder is left behind"
    zoo = load_pocket_zoo(root)
    assert zoo.task_names == list(TASK_NAMES)
    base = zoo.base_state
    for state in zoo.experts.values():  # frozen non-MLP parameters: every task vector lives in the MLPs
        assert all(torch.equal(state[k], base[k]) for k in base if ".mlp." not in k)
        assert any(not torch.equal(state[k], base[k]) for k in base if ".mlp." in k)


def test_build_refuses_an_existing_folder_without_force(small_zoo):
    root, manifest = small_zoo
    with pytest.raises(ZooError, match="--force"):
        build(root, BuildSettings())
    assert verify(root) == manifest
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]


def test_a_changed_or_missing_file_is_refused_with_a_clear_message(small_zoo, tmp_path):
    root, _ = small_zoo
    copy = tmp_path / "zoo"
    shutil.copytree(root, copy)
    path = copy / "experts" / "pocket_digits.safetensors"
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ZooError, match="experts/pocket_digits.safetensors.*does not match its manifest"):
        load_pocket_zoo(copy)
    path.unlink()
    with pytest.raises(ZooError, match="is missing"):
        load_pocket_zoo(copy)


def test_loading_from_a_folder_without_manifest_says_how_to_rebuild(tmp_path):
    with pytest.raises(ZooError, match="python -m wemoe.pocket.build"):
        load_pocket_zoo(tmp_path)


def test_examples_are_one_png_per_class(tmp_path):
    written = write_examples(tmp_path, per_task=3)
    assert len(written) == 3 * len(TASK_NAMES)
    assert all(p.suffix == ".png" and p.stat().st_size < 4096 for p in written)


def test_shipped_zoo_matches_its_manifest():
    manifest = verify(DEFAULT_PATH)
    assert manifest["tasks"] == list(TASK_NAMES)
    assert sum(entry["bytes"] for entry in manifest["files"].values()) <= 25 * 2**20
    on_disk = {p.relative_to(DEFAULT_PATH).as_posix() for p in DEFAULT_PATH.rglob("*") if p.is_file()}
    assert on_disk == set(manifest["files"]) | {"manifest.json"}


def test_loading_says_nothing_about_random_weights(caplog):
    """open_clip warns 'initialized randomly' when the model is created; the base weights are loaded right after."""
    import logging

    with caplog.at_level(logging.WARNING):
        zoo = load_pocket_zoo()
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()], caplog.text
    assert zoo.task_names == list(TASK_NAMES)
    with caplog.at_level(logging.WARNING):  # only that message, only during loading: others still get through
        logging.warning("No pretrained weights loaded for model 'x'. Model initialized randomly.")  # noqa: LOG015
    assert "initialized randomly" in caplog.text


def test_experts_are_the_same_whether_fine_tuned_in_one_process_or_in_parallel_workers():
    state = create_pocket_clip(seed=0)[0].state_dict()
    settings = BuildSettings(expert=ExpertSettings(steps=3, batch=8), train_size=32)
    one = finetune_experts(state, replace(settings, workers=1))
    two = finetune_experts(state, replace(settings, workers=2))
    assert set(one) == set(two) == set(TASK_NAMES)
    for task in TASK_NAMES:
        changed = any(not torch.equal(one[task][k], state[f"visual.{k}"]) for k in one[task])
        assert changed, "fine-tuning changed nothing"
        for key, value in one[task].items():
            assert torch.equal(value, two[task][key]), f"{task} {key} differs between 1 and 2 workers"


def test_pocket_clip_and_expert_seeds_stay_local_and_reproduce_the_same_weights():
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    clip, _, tokenizer = create_pocket_clip(seed=3)
    again = create_pocket_clip(seed=3)[0].state_dict()
    expert = finetune_expert(clip, tokenizer, "pocket_shapes", ExpertSettings(steps=2, batch=4), train_size=16)
    assert torch.equal(torch.random.get_rng_state(), before), "building changed the process-wide random stream"
    assert all(torch.equal(v, again[k]) for k, v in clip.state_dict().items())
    other = create_pocket_clip(seed=4)[0].state_dict()
    assert any(not torch.equal(v, other[k]) for k, v in again.items()), "the seed decides nothing"
    assert any(not torch.equal(v, clip.visual.state_dict()[k]) for k, v in expert.items())
