"""Tiny random CLIP models and zoos for fast tests (a few thousand parameters, built in milliseconds)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

import wemoe  # noqa: F401  (before open_clip)
import datasets
import open_clip

from wemoe.tasks import Task
from wemoe.zoo import Zoo

TINY_VISION = {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32}
TINY_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}


def tiny_clip(seed: int = 0, layers: int = 2) -> open_clip.CLIP:
    """A random open_clip CLIP: 32x32 images, 2-block image tower of width 64, embedding dim 32."""
    torch.manual_seed(seed)
    return open_clip.CLIP(embed_dim=32, vision_cfg={**TINY_VISION, "layers": layers}, text_cfg=TINY_TEXT).eval()


def tiny_zoo(n_experts: int = 3, seed: int = 0, scale: float = 0.05, layers: int = 2) -> Zoo:
    """A Zoo whose experts are the base image tower plus seeded random perturbations of relative size ``scale``."""
    clip = tiny_clip(seed, layers)
    generator = torch.Generator().manual_seed(seed + 1)
    experts = {}
    for t in range(n_experts):
        state = {}
        for key, value in clip.visual.state_dict().items():
            noise = torch.randn(value.shape, generator=generator) * scale * (value.std() if value.numel() > 1 else 1.0)
            state[key] = value + noise if torch.is_floating_point(value) else value.clone()
        experts[f"task{t}"] = state
    preprocess = open_clip.image_transform(32, is_train=False)
    return Zoo("tiny", clip, experts, preprocess, open_clip.get_tokenizer("ViT-B-32"), description="tiny random zoo")


def tiny_task(name: str, classes: int = 3, samples: int = 12, seed: int = 0) -> Task:
    """A task of random coloured 32x32 images with ``classes`` labels (test and train splits)."""
    def load_split(split: str) -> datasets.Dataset:
        rng = np.random.default_rng(seed + (split == "train"))
        images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(samples)]
        labels = [int(i % classes) for i in range(samples)]
        return datasets.Dataset.from_dict({"image": images, "label": labels}, features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=classes)}))

    return Task(name, tuple(f"class {c}" for c in range(classes)), ("a photo of {c}.", "an image of {c}."), load_split)
