"""Every preset resolves offline from a faked hub cache in the hub's real layout to FusionBench's checkpoints, datasets,
class counts and templates.

The cache holds, per model and task, a ``tanganke/clip-vit-*_<task>`` CLIPVisionModel in transformers' key layout with
its ``config.json`` (the model's real patch and image size, QuickGELU; tiny width and one block so the test is fast),
written by bench/standin_zoo.py's hub-layout helpers. The base is a tiny open_clip CLIP of the same geometry (the
``openai`` tag's real weights are what a preset adds, and they are too big for a test). Datasets: ``load_dataset`` is
replaced by one that records what it was asked for and answers with the hub dataset's own column names.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save, save_file

from wemoe.errors import TaskError, ZooError
from wemoe.loading import load_zoo
from wemoe.tasks.registry import get_task
from wemoe.zoo.presets import PRESETS
from wemoe.zoo.sources import load_spec

STANDIN = Path(__file__).resolve().parents[2] / "bench" / "standin_zoo.py"

# FusionBench's task lists (config/model/clip-vit/clip-vit-*_TALL20.yaml), in its order
EIGHT = ["sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd"]
TALL14 = [*EIGHT, "oxford_flowers102", "pcam", "fer2013", "oxford-iiit-pet", "stl10", "cifar100"]
TALL20 = [*TALL14, "cifar10", "food101", "fashion_mnist", "emnist_letters", "kmnist", "rendered-sst2"]
MODELS = {"vit-b-32": ("clip-vit-base-patch32", 32), "vit-b-16": ("clip-vit-base-patch16", 16),
          "vit-l-14": ("clip-vit-large-patch14", 14)}

# task -> (hub dataset, its config, the split that is the test set, classes, templates, first template), from
# FusionBench's config/dataset/image_classification/test/*.yaml and fusion_bench/tasks/clip_classification/*.py
FACTS = {
    "sun397": ("tanganke/sun397", None, "test", 397, 2, "a photo of a {c}."),
    "stanford-cars": ("tanganke/stanford_cars", None, "test", 196, 8, "a photo of a {c}."),
    "resisc45": ("tanganke/resisc45", None, "test", 45, 18, "satellite imagery of {c}."),
    "eurosat": ("tanganke/eurosat", None, "test", 10, 3, "a centered satellite photo of {c}."),
    "svhn": ("ufldl-stanford/svhn", "cropped_digits", "test", 10, 1, 'a photo of the number: "{c}".'),
    "gtsrb": ("tanganke/gtsrb", None, "test", 43, 3, 'a zoomed in photo of a "{c}" traffic sign.'),
    "mnist": ("ylecun/mnist", None, "test", 10, 1, 'a photo of the number: "{c}".'),
    "dtd": ("tanganke/dtd", None, "test", 47, 8, "a photo of a {c} texture."),
    "oxford_flowers102": ("dpdl-benchmark/oxford_flowers102", None, "test", 102, 1,
                          "a photo of a {c}, a type of flower."),
    "pcam": ("1aurent/PatchCamelyon", None, "test", 2, 1, "this is a photo of {c}"),
    "fer2013": ("clip-benchmark/wds_fer2013", None, "test", 7, 6, "a photo of a {c} looking face."),
    "oxford-iiit-pet": ("timm/oxford-iiit-pet", None, "test", 37, 1, "a photo of a {c}, a type of pet."),
    "stl10": ("tanganke/stl10", None, "test", 10, 2, "a photo of a {c}."),
    "cifar100": ("tanganke/cifar100", None, "test", 100, 18, "a photo of a {c}."),
    "cifar10": ("tanganke/cifar10", None, "test", 10, 18, "a photo of a {c}."),
    "food101": ("ethz/food101", None, "validation", 101, 1, "a photo of {c}, a type of food."),
    "fashion_mnist": ("zalando-datasets/fashion_mnist", None, "test", 10, 2, "a photo of a {c}."),
    "emnist_letters": ("tanganke/emnist_letters", None, "test", 26, 1, 'a photo of the digit character: "{c}".'),
    "kmnist": ("tanganke/kmnist", None, "test", 10, 1, "a photo of the character {c}."),
    "rendered-sst2": ("nateraw/rendered-sst2", None, "test", 2, 1, "a {c} review of a movie."),
}


def _standin():
    spec = importlib.util.spec_from_file_location("bench_standin_zoo_presets", STANDIN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def tiny_config(patch: int) -> dict:
    """A tiny open_clip CLIP with a preset model's input geometry (224 px, its patch size) and QuickGELU."""
    return {"embed_dim": 16, "quick_gelu": True,
            "vision_cfg": {"image_size": 224, "patch_size": patch, "width": 32, "head_width": 16, "layers": 1},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A hub cache with every model's twenty experts (tiny, real key names and config) and a tiny base per model."""
    from wemoe.zoo.clip_models import create_clip

    bench = _standin()
    cache = tmp_path_factory.mktemp("hub")
    bases = {}
    for prefix, (hub, patch) in MODELS.items():
        torch.manual_seed(0)
        clip, _, _ = create_clip(f"presets-test-{prefix}", model_config=tiny_config(patch))
        bases[prefix] = cache / f"{prefix}-base.safetensors"
        save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(bases[prefix]))
        config = json.dumps(bench.hf_vision_config(clip)).encode()
        tower = clip.visual.state_dict()
        for i, task in enumerate(TALL20):
            generator = torch.Generator().manual_seed(i)
            state = {k: v + 0.01 * torch.randn(v.shape, generator=generator) for k, v in tower.items()}
            repo = f"tanganke/{hub}_{task}"
            bench.hub_file(cache, repo, "config.json", config)
            bench.hub_file(cache, repo, "model.safetensors", save(bench.open_clip_to_hf_vision(state)))
    return cache, bases


@pytest.fixture
def offline_cache(hub_cache, monkeypatch):
    import huggingface_hub.constants

    cache, bases = hub_cache
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return bases


def _expected(name: str) -> tuple[str, list[str]]:
    prefix, count = name.rsplit("-", 1)
    tasks = {"8tasks": EIGHT, "14tasks": TALL14, "20tasks": TALL20}[count]
    return prefix, tasks


def test_the_presets_are_the_fields_benchmarks():
    assert sorted(PRESETS) == sorted(f"{m}-{n}tasks" for m in MODELS for n in (8, 14, 20))
    for name, spec in PRESETS.items():
        prefix, tasks = _expected(name)
        assert spec.model == {"vit-b-32": "ViT-B-32", "vit-b-16": "ViT-B-16", "vit-l-14": "ViT-L-14"}[prefix]
        assert (spec.pretrained, spec.quick_gelu) == ("openai", True)
        assert list(spec.experts) == tasks  # FusionBench's order


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_resolves_offline_from_the_hub_cache(name, offline_cache, monkeypatch):
    prefix, tasks = _expected(name)
    hub, patch = MODELS[prefix]
    spec = PRESETS[name]
    tiny = dataclasses.replace(spec, model=f"presets-test-{prefix}", model_config=tiny_config(patch),
                               pretrained=str(offline_cache[prefix]))
    zoo = load_spec(tiny)
    assert zoo.task_names == tasks
    assert zoo.info["experts"] == {t: f"tanganke/{hub}_{t}" for t in tasks}
    assert set(zoo.info["expert_layouts"].values()) == {"hf"} and zoo.source_layout == "split"
    assert zoo.info["quick_gelu"] is True
    fc = "transformer.resblocks.0.mlp.c_fc.weight"
    assert not torch.equal(zoo.experts[tasks[0]][fc], zoo.experts[tasks[1]][fc])  # each task's own checkpoint

    asked = []

    def fake_load_dataset(repo, config=None, split=None):
        asked.append((repo, config, split))
        return _hub_like_dataset(repo)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    for task_name in tasks:
        repo, config, split, classes, n_templates, first = FACTS[task_name]
        task = get_task(task_name)
        assert len(task.classnames) == classes, task_name
        assert len(task.templates) == n_templates and task.templates[0] == first, task_name
        data = task.dataset("test")
        assert asked[-1] == (repo, config, split)
        assert data.column_names == ["image", "label"]
        assert all(0 <= int(label) < classes for label in data["label"]), task_name


def _hub_like_dataset(repo: str) -> datasets.Dataset:
    """Three images with the columns the hub dataset ``repo`` has (FusionBench renames fer2013's; pcam's labels are
    booleans; CIFAR-100 has a fine and a coarse label)."""
    images = [Image.fromarray(np.full((8, 8, 3), i * 40, dtype=np.uint8)) for i in range(3)]
    if repo == "clip-benchmark/wds_fer2013":
        return datasets.Dataset.from_dict({"__key__": ["a", "b", "c"], "__url__": ["u"] * 3, "jpg": images,
                                           "cls": [0, 6, 3]},
                                          features=datasets.Features({"__key__": datasets.Value("string"),
                                                                      "__url__": datasets.Value("string"),
                                                                      "jpg": datasets.Image(),
                                                                      "cls": datasets.Value("int64")}))
    if repo == "1aurent/PatchCamelyon":
        return datasets.Dataset.from_dict({"image": images, "label": [True, False, True]},
                                          features=datasets.Features({"image": datasets.Image(),
                                                                      "label": datasets.Value("bool")}))
    if repo == "tanganke/cifar100":
        return datasets.Dataset.from_dict(
            {"img": images, "coarse_label": [19, 19, 19], "fine_label": [99, 0, 50]},
            features=datasets.Features({"img": datasets.Image(), "coarse_label": datasets.ClassLabel(num_classes=20),
                                        "fine_label": datasets.ClassLabel(num_classes=100)}))
    return datasets.Dataset.from_dict({"image": images, "label": [0, 1, 1]},
                                      features=datasets.Features({"image": datasets.Image(),
                                                                  "label": datasets.ClassLabel(num_classes=2)}))


def test_cifar100_takes_the_fine_label_and_fer2013_its_cls_column(monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", lambda repo, config=None, split=None: _hub_like_dataset(repo))
    assert get_task("cifar100").dataset("test")["label"] == [99, 0, 50]  # not the coarse label listed first
    assert get_task("fer2013").dataset("test")["label"] == [0, 6, 3]
    assert get_task("pcam").dataset("test")["label"] == [True, False, True]


@pytest.mark.parametrize("name", ["vit-b-16-14tasks", "vit-l-14-20tasks"])
def test_a_preset_missing_offline_says_which_and_how_to_get_it(name, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ZooError) as info:
        load_zoo(name)
    message = str(info.value)
    prefix, tasks = _expected(name)
    ids = [f"tanganke/{MODELS[prefix][0]}_{task}" for task in tasks]
    base = {"vit-b-16": "timm/vit_base_patch16_clip_224.openai", "vit-l-14": "timm/vit_large_patch14_clip_224.openai"}
    assert f"needs {len(tasks) + 1} checkpoint(s)" in message and f"the base '{base[prefix]}'" in message
    assert f"`for repo in {base[prefix]} {' '.join(ids)}; do hf download $repo; done`" in message
    assert "HF_HUB_OFFLINE=1" in message and "Traceback" not in message and "\n" not in message


def test_offline_names_only_the_checkpoints_missing(offline_cache):
    spec = PRESETS["vit-b-32-8tasks"]
    experts = {**spec.experts, "mnist": "tanganke/clip-vit-base-patch32_not-cached", "dtd": "wemoe-tests/nor-this"}
    tiny = dataclasses.replace(spec, model="presets-test-vit-b-32", model_config=tiny_config(32),
                               pretrained=str(offline_cache["vit-b-32"]), experts=experts)
    with pytest.raises(ZooError) as info:
        load_spec(tiny)
    message = str(info.value)
    assert "needs 2 checkpoint(s)" in message
    assert ("expert 'mnist' 'tanganke/clip-vit-base-patch32_not-cached', expert 'dtd' 'wemoe-tests/nor-this'"
            in message)
    assert ("`for repo in tanganke/clip-vit-base-patch32_not-cached wemoe-tests/nor-this; do hf download $repo; "
            "done`") in message
    assert "sun397" not in message and "the base" not in message


def test_a_new_task_missing_offline_says_how_to_get_it(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def offline(repo, config=None, split=None):
        raise ConnectionError(f"Couldn't reach '{repo}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(TaskError, match=r"'validation' split of task 'food101'.*ethz/food101.*load_dataset\("
                                        r"'ethz/food101', split='validation'\).*HF_DATASETS_OFFLINE=1"):
        get_task("food101").dataset("test")
