"""What every model says about some images: each model's top-k classes, the WEMoE routing and the routers' task guess.

:meth:`wemoe.workbench.workbench.Workbench.classify` gathers a workbench's models (pretrained, every merge, every
expert) and calls :func:`classify_batch`; the result is one :class:`ImageClassification` per image, plain data for any
caller to format (the app turns it into a table, a sentence and a heatmap).

- The head: the task given, else the routers' guess, else every task's classes together (:func:`joint_head`).
- The guess (:func:`guess_task`): the task whose mean routing pattern over known test images (its
  :class:`~wemoe.moe.routing.RoutingCentroids` centroid) is nearest to the image's; none when the routing says nothing
  (:func:`~wemoe.moe.routing.uninformative_routing`: untrained routers, NaN weights, every task routed alike).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from wemoe.evaluation.evaluate import needs_task, tower_for
from wemoe.evaluation.side_by_side import run_side_by_side
from wemoe.moe.layer import moe_layers
from wemoe.moe.routing import RoutingCentroids, features_and_routing, guess_task_argmax, uninformative_routing
from wemoe.tasks.classify import logits_from_features, stable_top_k
from wemoe.tasks.registry import Task


@dataclass(frozen=True)
class Ranked:
    """One model's ``k`` most probable classes for one image, most probable first."""

    labels: tuple[str, ...]  # class names
    tasks: tuple[str, ...]  # the task of each class (all the head's task, except under the joint head)
    probabilities: tuple[float, ...]  # softmax over the head's classes


@dataclass(frozen=True)
class TaskGuess:
    """What a WEMoE model's routers say about one image's task."""

    task: str | None  # the task of the nearest routing centroid; None when the routing says nothing
    why_not: str | None  # why there is no guess (a short phrase), None when there is one
    ranked: tuple[str, ...]  # every task, nearest centroid first (empty without a guess)
    heaviest: str  # the task whose expert has the largest layer-averaged routing weight


@dataclass(frozen=True)
class ImageClassification:
    """Every model's top-k for one image under one head, and (with a WEMoE merge) its routing and the guess."""

    task: str | None  # the task whose head was used; None: every task's classes together
    task_chosen: bool  # whether that task was the caller's (else the routers' guess, or no task)
    models: dict[str, Ranked]  # pretrained, then every merge, by name
    experts: dict[str, Ranked]  # each task's expert, by task
    routed_by: str | None = None  # the WEMoE merge whose routing and guess these are
    layers: tuple[int, ...] = ()  # its upscaled blocks, one per routing row
    routing: torch.Tensor | None = None  # [layers, experts]: the image's routing weights
    guess: TaskGuess | None = None


def joint_head(heads: Mapping[str, torch.Tensor], tasks: Sequence[Task]) -> tuple[torch.Tensor, list[str], list[str]]:
    """One head over every task's classes (the tasks' heads stacked): ``(head, class names, task of each class)``."""
    head = torch.cat([heads[t.name] for t in tasks])
    return head, [c for t in tasks for c in t.classnames], [t.name for t in tasks for _ in t.classnames]


def rank(
    features: torch.Tensor, head: torch.Tensor, labels: Sequence[str], tasks: Sequence[str], k: int
) -> list[Ranked]:
    """Per image (rows of ``features``), the ``k`` most probable of ``labels`` under ``head``."""
    if head.shape[0] != len(labels):
        raise ValueError(f"The head has {head.shape[0]} classes but {len(labels)} class names were given.")
    probabilities = logits_from_features(features.float(), head.float()).softmax(dim=-1)
    values, indices = stable_top_k(probabilities, min(k, len(labels)))
    return [Ranked(tuple(labels[i] for i in ix), tuple(tasks[i] for i in ix), tuple(vs))
            for vs, ix in zip(values.tolist(), indices.tolist(), strict=True)]


def guess_task(routing: torch.Tensor, centroids: RoutingCentroids) -> TaskGuess:
    """The routers' guess for one image's routing ``[layers, experts]`` against each task's centroid."""
    heaviest = guess_task_argmax(routing[None], centroids.task_names)[0]
    why_not = uninformative_routing(routing, centroids.centroids)
    if why_not is not None:
        return TaskGuess(None, why_not, (), heaviest)
    order = centroids.distances(routing[None])[0].argsort().tolist()
    ranked = tuple(centroids.task_names[i] for i in order)
    return TaskGuess(ranked[0], None, ranked, heaviest)


@torch.no_grad()
def features(tower: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Image features ``[N, D]`` of ``tower`` (in eval mode), in batches, as float32 on the CPU."""
    tower.eval()
    return torch.cat([tower(images[i : i + batch_size]).float().cpu() for i in range(0, len(images), batch_size)])


EXPERT_PREFIX = "expert "  # an expert's tower name given to a TowerFeatures: EXPERT_PREFIX + task
TowerFeatures = Callable[[str, nn.Module, torch.Tensor], torch.Tensor]


def fresh_features(name: str, tower: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``tower``'s features of ``images`` computed now (``name`` unused: the signature of a :data:`TowerFeatures`)."""
    return features(tower, images)


def classify_batch(
    images: torch.Tensor,
    models: Mapping[str, nn.Module],
    experts: Mapping[str, nn.Module],
    heads: Mapping[str, torch.Tensor],
    tasks: Sequence[Task],
    task: str | None = None,
    routed_by: str | None = None,
    centroids: RoutingCentroids | None = None,
    k: int = 5,
    used_expert_only: bool = False,
    without_task: Mapping[str, nn.Module] | None = None,
    tower_features: TowerFeatures = fresh_features,
) -> list[ImageClassification]:
    """Every model's top-``k`` for each of ``images`` (a preprocessed batch), and the routing of ``models[routed_by]``.

    The head is ``task``'s; with ``task`` None, each image's guess (needs ``routed_by`` and its ``centroids``), else
    every task's classes together. One pass through the routed model gives both its features and the routing.

    What is computed (the page's compact table needs less than everything): every one of ``models`` and ``experts``
    for every image; with ``used_expert_only`` only the expert of each image's task used (known after the routers'
    guess), and ``without_task``'s models only for the images classified under every task's classes. Features of
    each tower come from ``tower_features(name, tower, images)`` (names: the model's, ``expert <task>``), which may
    serve them from a cache; the routed model and task-conditioned models always run.
    """
    names = [t.name for t in tasks]
    routing, layers = None, ()
    model_features: dict[str, torch.Tensor] = {}
    if routed_by is not None:
        model_features[routed_by], routing = features_and_routing(models[routed_by], images)
        layers = tuple(sorted(moe_layers(models[routed_by])))
    guesses = [guess_task(routing[i], centroids) if routing is not None and centroids is not None else None
               for i in range(len(images))]
    used_tasks = [task if task is not None else (g.task if g is not None else None) for g in guesses]
    # every tower below reads the same images and none needs another's output: they run side by side
    passes = [_Pass("model", n, n, m, range(len(images))) for n, m in models.items()
              if n not in model_features and not (needs_task(m) and all(u is not None for u in used_tasks))]
    passes += _rows_passes("without task", without_task or {}, [u is None for u in used_tasks])
    for t in names:
        if t in experts:
            rows = [not used_expert_only or u == t for u in used_tasks]
            passes += _rows_passes("expert", {t: experts[t]}, rows, EXPERT_PREFIX)
    computed = run_side_by_side([p.job(images, tower_features) for p in passes], _device_of(passes))
    by_row = {kind: {p.key: dict(zip(p.rows, f, strict=True)) for p, f in zip(passes, computed, strict=True)
                     if p.kind == kind} for kind in ("without task", "expert")}
    model_features.update({p.key: f for p, f in zip(passes, computed, strict=True) if p.kind == "model"})
    fallback, expert_features = by_row["without task"], by_row["expert"]
    joint = joint_head(heads, tasks)
    results = []
    for i, (guess, used) in enumerate(zip(guesses, used_tasks, strict=True)):
        if used is None:
            head, labels, label_tasks = joint
        else:
            labels = list(tasks[names.index(used)].classnames)
            head, label_tasks = heads[used], [used] * len(labels)

        def top(f: torch.Tensor) -> Ranked:
            return rank(f[None], head, labels, label_tasks, k)[0]  # noqa: B023  (called in this iteration only)

        # a task-conditioned model (EMR) runs as the head's task's model: the one given, or the routers' guess
        given = {n: rank(features(tower_for(m, used), images[i : i + 1]), head, labels, label_tasks, k)[0]
                 for n, m in models.items() if used is not None and needs_task(m)}
        ranked = {n: top(f[i]) for n, f in model_features.items() if n not in given}
        ranked.update(given)  # also when it never ran over the whole batch (every image had its task)
        ranked.update({n: top(rows[i]) for n, rows in fallback.items() if i in rows})
        results.append(ImageClassification(
            task=used, task_chosen=task is not None,
            models={n: ranked[n] for n in [*models, *(without_task or {})] if n in ranked},
            experts={t: top(rows[i]) for t, rows in expert_features.items() if i in rows},
            routed_by=routed_by, layers=layers,
            routing=routing[i] if routing is not None else None, guess=guess,
        ))
    return results


@dataclass(frozen=True)
class _Pass:
    """One tower's forward over some rows of the images: a ``kind`` of model (``"model"``, ``"without task"``,
    ``"expert"``), its ``key`` among them, its ``name`` for ``tower_features``."""

    kind: str
    key: str
    name: str
    tower: nn.Module
    rows: Sequence[int]

    def job(self, images: torch.Tensor, tower_features: TowerFeatures) -> Callable[[], torch.Tensor]:
        """This pass as a call (its rows' features, in ``rows``' order)."""
        subset = images if len(self.rows) == len(images) else images[list(self.rows)]
        return lambda: tower_features(self.name, self.tower, subset)


def _device_of(passes: Sequence[_Pass]) -> str:
    """``"cpu"`` when every pass's weights are on the CPU, else where the first that is not lives."""
    for p in passes:
        modules = p.tower.values() if isinstance(p.tower, Mapping) else [p.tower]
        for module in modules:
            device = next((w.device for w in module.parameters()), torch.device("cpu"))
            if device.type != "cpu":
                return str(device)
    return "cpu"


def _rows_passes(kind: str, towers: Mapping[str, nn.Module], wanted: Sequence[bool], prefix: str = "") -> list[_Pass]:
    """Per tower, a pass over the ``wanted`` rows (none when no row is wanted)."""
    rows = [i for i, w in enumerate(wanted) if w]
    return [_Pass(kind, n, prefix + n, m, rows) for n, m in towers.items()] if rows else []
