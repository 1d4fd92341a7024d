"""Which images test-time adaptation sees: the scored test images themselves, or a disjoint held-out split.

Adapting on the very images that are scored (what the WEMoE paper and FusionBench do) is transductive and flatters
the result. ``heldout`` adapts on unlabeled images that are never scored instead:

- a pocket task (generated offline, with a ``train`` split of 2400 images) adapts on a seeded sample of its train
  split, as many images as it has scored test images; the scored test images stay as they are;
- every other task (the paper's standard tasks, custom ones) has its test images split in two by a seeded
  permutation: the first half adapts, the second half is scored (its accuracy is measured on half the images).
  Their train splits are not used: they are what the experts were fine-tuned on, and reading them would need the hub.
"""

from __future__ import annotations

import torch

from wemoe.tasks.images import TaskImages, load_task_images
from wemoe.tasks.registry import Task

ADAPT_SPLITS = ("test", "heldout")
TEST, HELDOUT = ADAPT_SPLITS


def adapts_on_train(task: Task) -> bool:
    """Whether ``task``'s held-out adaptation images come from its train split (a pocket task, generated offline)."""
    return task.source.startswith("wemoe.pocket")


def halves(images: TaskImages, seed: int = 0) -> tuple[TaskImages, TaskImages]:
    """``images`` split in two by a permutation drawn from a local generator: ``(adaptation half, scored half)``;
    the scored half gets the extra image of an odd count."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    cut = len(images) // 2
    first, second = order[:cut].sort().values, order[cut:].sort().values
    return (TaskImages(images.task, images.images[first], images.labels[first]),
            TaskImages(images.task, images.images[second], images.labels[second]))


def heldout_images(task: Task, preprocess, test: TaskImages, seed: int = 0) -> tuple[TaskImages, TaskImages]:
    """``(adaptation images, scored images)`` of ``task`` under the ``heldout`` split, ``test`` being its test
    images."""
    if adapts_on_train(task):
        return load_task_images(task, preprocess, "train", samples=len(test), seed=seed), test
    return halves(test, seed)
