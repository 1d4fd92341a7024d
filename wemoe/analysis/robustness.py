"""Robustness: accuracy of every model on corrupted test images, and how far the WEMoE routing moves under them.

- :func:`corrupted_data`: a sample of every task's test images through one corruption (``wemoe.tasks.corruptions``).
- :func:`robustness_table`: accuracy (percent) of the named models per task, clean and under each corruption.
- :func:`routing_shift`: per task, the distance between each image's clean and corrupted routing (Euclidean, over
  layers x experts), and whether the routers' task guess (nearest mean clean routing of a task,
  :class:`wemoe.moe.routing.RoutingCentroids`) is the same before and after, and right.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from wemoe.errors import MethodError
from wemoe.evaluation.sample_eval import accuracy_by_task, sample_data, with_average
from wemoe.moe.layer import release_workspaces
from wemoe.moe.routing import RoutingCentroids, routing_weights
from wemoe.tasks.corruptions import CORRUPTIONS, check, corrupt_tensor, normalization
from wemoe.tasks.images import TaskImages
from wemoe.workbench.workbench import Workbench

CLEAN = "clean"


def corrupted_data(
    data: Mapping[str, TaskImages], preprocess, corruption: str, severity: int = 3, seed: int = 0
) -> dict[str, TaskImages]:
    """Every task's images under ``corruption`` at ``severity`` (labels unchanged); task ``i`` seeds
    ``seed * 101 + i``."""
    check(corruption, severity)
    mean, std = normalization(preprocess)
    return {
        t: TaskImages(t, corrupt_tensor(d.images, corruption, severity, seed * 101 + i, mean, std), d.labels)
        for i, (t, d) in enumerate(data.items())
    }


def robustness_table(
    bench: Workbench,
    names: Sequence[str],
    corruptions: Sequence[str] = tuple(CORRUPTIONS),
    severity: int = 3,
    per_task: int | None = 64,
    seed: int = 0,
    clean: bool = True,
) -> pd.DataFrame:
    """Accuracy (percent) of each named model (rows ``(corruption, model)``) per task and on average, on
    ``per_task`` test images of every task, clean (``clean``) and under each corruption."""
    for name in corruptions:
        check(name, severity)
    data, heads = sample_data(bench.data(), per_task, seed), bench.heads()
    models = bench.models(list(names))
    rows = {}
    try:
        for corruption in ([CLEAN] if clean else []) + list(corruptions):
            images = (data if corruption == CLEAN
                      else corrupted_data(data, bench.zoo.preprocess, corruption, severity, seed))
            for name, model in models.items():
                rows[(corruption, name)] = with_average(accuracy_by_task(model, images, heads))
    finally:
        for model in models.values():
            for tower in model.values() if isinstance(model, Mapping) else [model]:
                release_workspaces(tower)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["corruption", "model"])
    table.attrs["severity"], table.attrs["per_task"] = severity, per_task
    return table


def routing_shift(
    bench: Workbench,
    name: str,
    corruption: str,
    severity: int = 3,
    per_task: int | None = 64,
    seed: int = 0,
) -> pd.DataFrame:
    """Per task (and ``average``): the mean distance between clean and corrupted routing of merge ``name``, the share
    of images whose task guess survives the corruption, and the share guessed right, clean and corrupted."""
    if name not in bench.merges or not bench.merges[name].routes:
        raise MethodError(f"There is no WEMoE merge called {name!r}: merge with wemoe first to see routing move.")
    tower = bench.merges[name].model
    data = sample_data(bench.data(), per_task, seed)
    corrupted = corrupted_data(data, bench.zoo.preprocess, corruption, severity, seed)
    try:
        clean_routing = {t: routing_weights(tower, d.images) for t, d in data.items()}
        corrupted_routing = {t: routing_weights(tower, d.images) for t, d in corrupted.items()}
    finally:
        release_workspaces(tower)
    centroids = RoutingCentroids.fit(clean_routing)
    rows = {}
    for task in data:
        before, after = clean_routing[task], corrupted_routing[task]
        guess_before, guess_after = centroids.predict(before), centroids.predict(after)
        rows[task] = {
            "distance": float((after - before).flatten(1).norm(dim=1).mean()),
            "guess_survives": 100.0 * sum(a == b for a, b in zip(guess_before, guess_after, strict=True)) / len(before),
            "guess_right_clean": 100.0 * sum(g == task for g in guess_before) / len(before),
            "guess_right_corrupted": 100.0 * sum(g == task for g in guess_after) / len(before),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.loc["average"] = table.mean(axis=0)
    table.index.name = "task"
    table.attrs.update(corruption=corruption, severity=severity, per_task=per_task)
    return table


def table_to_dict(table: pd.DataFrame) -> dict:
    """A (possibly two-level indexed) table as nested plain dicts, values rounded to 4 places (JSON-ready)."""
    out: dict = {}
    for index, row in table.iterrows():
        keys = index if isinstance(index, tuple) else (index,)
        target = out
        for key in keys[:-1]:
            target = target.setdefault(str(key), {})
        target[str(keys[-1])] = {str(k): round(float(v), 4) for k, v in row.items()}
    return out


