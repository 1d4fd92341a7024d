"""Reusable test fixtures: a tiny random open_clip zoo and a tiny labelled task, both built in well under a second.

    from tests.helpers import tiny_zoo, tiny_task
    zoo = tiny_zoo(n_experts=3, seed=0)      # base CLIP (32 px images, 2-layer towers) + 3 perturbed experts
    task = tiny_task("task0", n_classes=3)   # random 32 px RGB images, labels 0..2, test split only

The zoo's experts are the base image tower plus small seeded Gaussian noise, so they differ from the base and from
each other; task names are ``task0, task1, ...`` unless given. Everything is deterministic in ``seed``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import wemoe  # torchvision shim before open_clip; also wemoe.errors below
from wemoe.tasks.registry import Task
from wemoe.zoo.clip_models import create_clip
from wemoe.zoo.zoo import Zoo

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

TINY_MODEL = "wemoe-tiny-test"
TINY_CONFIG = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "head_width": 32, "layers": 2},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
"""A tiny open_clip architecture: 32 px images in 4x4 patches, 2-layer towers (2 heads each)."""


def tiny_clip(seed: int = 0, layers: int = 2):
    """A tiny random open_clip CLIP (eval mode), its eval transform and tokenizer, deterministic in ``seed``.

    ``layers`` sets the image tower's depth (default 2; registered as its own open_clip architecture).
    """
    torch.manual_seed(seed)
    if layers == TINY_CONFIG["vision_cfg"]["layers"]:
        return create_clip(TINY_MODEL, model_config=TINY_CONFIG)
    config = {**TINY_CONFIG, "vision_cfg": {**TINY_CONFIG["vision_cfg"], "layers": layers}}
    return create_clip(f"{TINY_MODEL}-{layers}", model_config=config)


def tiny_zoo(
    n_experts: int = 3, seed: int = 0, noise: float = 0.02, tasks: Sequence[str] | None = None, layers: int = 2
) -> Zoo:
    """A Zoo of a tiny random base and ``n_experts`` experts = base image tower + ``noise`` x N(0, 1) per weight."""
    clip, preprocess, tokenizer = tiny_clip(seed, layers)
    names = list(tasks) if tasks is not None else [f"task{i}" for i in range(n_experts)]
    base = clip.visual.state_dict()
    experts = {}
    for i, name in enumerate(names):
        generator = torch.Generator().manual_seed(seed * 1000 + i + 1)
        experts[name] = {k: v + noise * torch.randn(v.shape, generator=generator) for k, v in base.items()}
    return Zoo(
        name="tiny",
        clip=clip,
        experts=experts,
        preprocess=preprocess,
        tokenizer=tokenizer,
        description="tiny random zoo for tests",
    )


def tiny_images(n: int, seed: int = 0, size: int = 32) -> list[Image.Image]:
    """``n`` random RGB images, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def tiny_task(name: str = "task0", n_classes: int = 3, n_images: int = 12, seed: int = 0) -> Task:
    """A task with class names ``class0..``, one template, and ``n_images`` random images (test split only)."""
    classnames = tuple(f"class{i}" for i in range(n_classes))
    data = datasets.Dataset.from_dict(
        {"image": tiny_images(n_images, seed), "label": [i % n_classes for i in range(n_images)]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(classnames))}),
    )

    def load_split(split: str) -> datasets.Dataset:
        if split != "test":
            raise wemoe.errors.TaskError(f"tiny task {name!r} has only a test split")
        return data

    return Task(
        name=name,
        classnames=classnames,
        templates=("a photo of a {c}.", "a picture of {c}."),
        load_split=load_split,
        description="tiny random task for tests",
        source="memory",
    )


def tiny_tasks(zoo: Zoo, n_images: int = 8) -> list[Task]:
    """One tiny task per expert of ``zoo``: task ``i`` has ``3 + i`` classes (heads differ in size), seed ``i``."""
    return [tiny_task(name, n_classes=3 + i, n_images=n_images, seed=i) for i, name in enumerate(zoo.task_names)]


def merge_routed(bench: Any, seed: int = 5) -> Any:
    """Merge task arithmetic (lambda 0.4) and WEMoE into ``bench`` (a Workbench), WEMoE's routers redrawn from
    N(0, 0.3^2) with ``seed`` so that they tell images apart (at step 0 every image gets the same routing)."""
    from wemoe.moe.layer import moe_layers

    bench.merge("task_arithmetic", {"lambda": 0.4})
    bench.merge("wemoe")
    torch.manual_seed(seed)
    for layer in moe_layers(bench.merges["wemoe"].model).values():
        for p in layer.router.parameters():
            p.data.normal_(0, 0.3)
    return bench


def per_sample_reference(layer: Any, x: torch.Tensor) -> torch.Tensor:
    """The test oracle of the WEMoE MLP (a ``wemoe.moe.layer.WeightEnsemblingMLP``): for each sample, build its merged
    MLP weights explicitly and call the MLP on its tokens."""
    outputs = []
    for b in range(x.shape[0]):
        r = layer.router(x[b : b + 1])[0]
        fc_w = layer.c_fc_weight + torch.einsum("t,toi->oi", r, layer.c_fc_weight_tvs)
        fc_b = layer.c_fc_bias + r @ layer.c_fc_bias_tvs
        pr_w = layer.c_proj_weight + torch.einsum("t,toi->oi", r, layer.c_proj_weight_tvs)
        pr_b = layer.c_proj_bias + r @ layer.c_proj_bias_tvs
        outputs.append(F.linear(layer.activation(F.linear(x[b], fc_w, fc_b)), pr_w, pr_b))
    return torch.stack(outputs)


def load_script(name: str) -> ModuleType:
    """Import ``bench/<name>.py`` as a module (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module
