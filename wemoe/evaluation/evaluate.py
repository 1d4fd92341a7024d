"""Accuracy tables: any set of models on any set of tasks, as a pandas DataFrame (percent)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from wemoe.tasks.classify import predict
from wemoe.tasks.images import TaskImages

# A model is one image tower for every task, or one tower per task (the experts, each on its own task).
Model = nn.Module | Mapping[str, nn.Module]
AVERAGE = "average"


@dataclass
class Score:
    """One cell of the table."""

    model: str
    task: str
    accuracy: float  # percent
    samples: int
    cached: bool = False  # measured before with the same inputs (wemoe.workbench.result_cache), not now


def needs_task(model: Model) -> bool:
    """Whether ``model`` is task-conditioned (e.g. EMR-Merging): it is given the task, ``model.for_task(task)``."""
    return callable(getattr(model, "for_task", None))


def tower_for(model: Model, task: str) -> nn.Module:
    """The tower a model uses on ``task``: its own in a per-task mapping, ``for_task`` for a task-conditioned model."""
    if isinstance(model, Mapping):
        return model[task]
    return model.for_task(task) if needs_task(model) else model


def iter_scores(
    models: Mapping[str, Model],
    data: Mapping[str, TaskImages],
    heads: Mapping[str, torch.Tensor],
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> Iterator[Score]:
    """Yield each (model, task) accuracy as soon as it is measured, model by model."""
    for name, model in models.items():
        for task, images in data.items():
            tower = tower_for(model, task).to(device).eval()
            predictions = predict(tower, images.images, heads[task].to(device), batch_size)
            tower.to("cpu")
            accuracy = 100.0 * float((predictions == images.labels).float().mean()) if len(images) else float("nan")
            yield Score(name, task, accuracy, len(images))


def table_from_scores(scores: list[Score], tasks: list[str]) -> pd.DataFrame:
    """Rows per model, columns per task plus ``average``; ``attrs['samples_per_task']`` holds the image counts."""
    frame = pd.DataFrame([{"model": s.model, "task": s.task, "accuracy": s.accuracy} for s in scores])
    if frame.empty:
        table = pd.DataFrame(columns=[*tasks, AVERAGE])
    else:
        table = frame.pivot(index="model", columns="task", values="accuracy")
        table = table.reindex(index=list(dict.fromkeys(frame["model"])),
                              columns=[t for t in tasks if t in table.columns])
        table[AVERAGE] = table.mean(axis=1)
    table.index.name = "model"
    table.attrs["samples_per_task"] = {s.task: s.samples for s in scores}
    return table


def evaluate(
    models: Mapping[str, Model],
    data: Mapping[str, TaskImages],
    heads: Mapping[str, torch.Tensor],
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: Callable[[float, str], None] | None = None,
) -> pd.DataFrame:
    """Accuracy (percent) of every model on every task; ``progress(fraction, message)`` after each cell."""
    total = max(1, len(models) * len(data))
    scores = []
    for score in iter_scores(models, data, heads, batch_size, device):
        scores.append(score)
        if progress is not None:
            progress(len(scores) / total, f"{score.model} on {score.task}: {score.accuracy:.1f}%")
    return table_from_scores(scores, list(data))
