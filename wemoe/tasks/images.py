"""Task images as model-ready tensors: a task's split, sampled with a seed, through the zoo's preprocessing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from wemoe.tasks.registry import Task


@dataclass
class TaskImages:
    """Preprocessed images ``[N, 3, H, W]`` and their labels ``[N]`` for one task split."""

    task: str
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image (grayscale, RGBA, 16-bit, palette) as 8-bit RGB; transparency is composited on white."""
    if image.mode in {"RGBA", "LA"} or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    if image.mode in {"I", "I;16", "I;16B", "I;16L", "F"}:
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        image = Image.fromarray(((array - low) / max(high - low, 1e-12) * 255).round().astype(np.uint8))
    return image.convert("RGB")


def encode_images(images: list[Image.Image], preprocess: Callable) -> torch.Tensor:
    """Stack preprocessed PIL images into one batch tensor."""
    return torch.stack([preprocess(to_rgb(image)) for image in images])


def load_task_images(
    task: Task, preprocess: Callable, split: str = "test", samples: int | None = None, seed: int = 0
) -> TaskImages:
    """A task split as tensors (optionally ``samples`` images chosen with ``seed``)."""
    data = task.dataset(split, samples=samples, seed=seed)
    return TaskImages(task.name, encode_images(list(data["image"]), preprocess),
                      torch.tensor(data["label"], dtype=torch.long))
