"""Fast accuracy for the analysis views: a seeded sample of every task, through a tower in one batched pass.

The accuracy table (``wemoe.evaluation.evaluate``) runs each task separately; views that evaluate many variants of a
model (a lambda sweep, corruptions) instead send all tasks' images through the tower together and split the features by
task, each scored with its own zero-shot head. Same numbers as ``wemoe.evaluation.evaluate`` on the same images.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from wemoe.evaluation.evaluate import AVERAGE, Model, needs_task, tower_for
from wemoe.moe.layer import release_workspaces
from wemoe.tasks.classify import logits_from_features
from wemoe.tasks.images import TaskImages


def sample_data(data: Mapping[str, TaskImages], per_task: int | None, seed: int = 0) -> dict[str, TaskImages]:
    """At most ``per_task`` images of every task, drawn without replacement with a local generator (None: all)."""
    if per_task is None:
        return dict(data)
    out = {}
    for i, (task, images) in enumerate(data.items()):
        if len(images) <= per_task:
            out[task] = images
            continue
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed * 1009 + i))[:per_task]
        out[task] = TaskImages(task, images.images[pick], images.labels[pick])
    return out


def sample_size(data: Mapping[str, TaskImages], per_task: int | None) -> int:
    """Images of the smallest task in :func:`sample_data`'s sample of ``per_task`` (None: all): what a view says it
    scored per task."""
    counts = [len(images) for images in data.values()]
    return min(counts if per_task is None else [per_task, *counts])


@torch.no_grad()
def features_by_task(tower: nn.Module, data: Mapping[str, TaskImages],
                     batch_size: int = 1024) -> dict[str, torch.Tensor]:
    """Every task's image features through ``tower``, all tasks' images batched together.

    A WEMoE tower's per-sample scratch memory (hundreds of MB for a batch of this size) is released afterwards: a
    class of sessions each keeping theirs would hold gigabytes for nothing.
    """
    tower.eval()
    images = torch.cat([d.images for d in data.values()])
    try:
        features = torch.cat([tower(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    finally:
        release_workspaces(tower)
    return dict(zip(data, features.split([len(d) for d in data.values()]), strict=True))


def accuracy_from_features(features: torch.Tensor, labels: torch.Tensor, head: torch.Tensor) -> float:
    """Percent of ``labels`` predicted from ``features`` under ``head`` (NaN for no images)."""
    if len(labels) == 0:
        return float("nan")
    predictions = logits_from_features(features.float(), head.float()).argmax(dim=-1)
    return 100.0 * float((predictions == labels).float().mean())


@torch.no_grad()
def accuracy_by_task(
    model: Model, data: Mapping[str, TaskImages], heads: Mapping[str, torch.Tensor]
) -> dict[str, float]:
    """Accuracy (percent) of ``model`` on every task of ``data``: one pass for one tower, else one per task."""
    if isinstance(model, Mapping) or needs_task(model):
        return {
            t: accuracy_from_features(features_by_task(tower_for(model, t), {t: d})[t], d.labels, heads[t])
            for t, d in data.items()
        }
    features = features_by_task(model, data)
    return {t: accuracy_from_features(features[t], d.labels, heads[t]) for t, d in data.items()}


def with_average(row: Mapping[str, float]) -> dict[str, float]:
    """``row`` with its mean added as ``average`` (the accuracy table's column,
    ``wemoe.evaluation.evaluate.AVERAGE``)."""
    values = list(row.values())
    return {**row, AVERAGE: sum(values) / len(values) if values else float("nan")}
