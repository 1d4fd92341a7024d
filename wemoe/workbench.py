"""A Workbench: a zoo with its tasks' images and heads, and the merges made from it.

It is what one CLI run or one app session holds, so both drive the same code: ``merge`` a registered method,
``adapt`` an adaptive merge step by step, ``evaluate`` any set of models into an accuracy table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from wemoe.adapt import DEFAULT_LOSS, DEFAULT_LR, DEFAULT_PER_TASK, DEFAULT_STEPS, AdaptStep, adapt
from wemoe.task_images import TaskImages, load_task_images
from wemoe.errors import MethodError, TaskError
from wemoe.evaluate import Model, evaluate, iter_scores
from wemoe.heads import HeadCache
from wemoe.methods import get_method
from wemoe.adaptive import routes, trainable_parameters
from wemoe.moe import oracle_towers, release_workspaces
from wemoe.tasks import Task, get_task
from wemoe.zoo import Zoo

PRETRAINED = "pretrained"
EXPERTS = "experts"
ORACLE = "wemoe_oracle"


@dataclass
class MergeResult:
    """A merged model and how it was made."""

    method: str
    params: dict[str, Any]
    model: nn.Module
    merge_seconds: float = 0.0
    adapt_steps: int = 0
    adapt_seconds: float = 0.0
    history: list[AdaptStep] = field(default_factory=list)

    @property
    def adaptive(self) -> bool:
        """Whether the model has parameters left to adapt (see ``wemoe.adaptive``)."""
        return bool(trainable_parameters(self.model))

    @property
    def routes(self) -> bool:
        """Whether the model routes each image (a WEMoE model; see ``wemoe.adaptive``)."""
        return routes(self.model)


class Workbench:
    """The zoo, its tasks (one per expert, same order), their test images and heads, and the merges made."""

    def __init__(
        self,
        zoo: Zoo,
        tasks: Sequence[Task] | None = None,
        samples: int | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        self.zoo = zoo
        self.tasks = list(tasks) if tasks is not None else [get_task(name) for name in zoo.task_names]
        if [t.name for t in self.tasks] != zoo.task_names:
            raise TaskError(f"Tasks {[t.name for t in self.tasks]} do not match the zoo's experts {zoo.task_names}.")
        self.samples = samples
        self.seed = seed
        self.head_cache = HeadCache(zoo.clip, zoo.tokenizer, cache_dir)
        self._heads: dict[str, torch.Tensor] = {}
        self._data: dict[str, TaskImages] = {}
        self.merges: dict[str, MergeResult] = {}

    @property
    def task_names(self) -> list[str]:
        """Task names, in the experts' order."""
        return [t.name for t in self.tasks]

    def heads(self) -> dict[str, torch.Tensor]:
        """Zero-shot heads of every task (cached)."""
        for task in self.tasks:
            if task.name not in self._heads:
                self._heads[task.name] = self.head_cache.get(task)
        return self._heads

    def data(self, progress: Callable[[float, str], None] | None = None) -> dict[str, TaskImages]:
        """Every task's test images as tensors (loaded once)."""
        for i, task in enumerate(self.tasks):
            if task.name not in self._data:
                if progress is not None:
                    progress(i / len(self.tasks), f"loading {task.name} test images")
                self._data[task.name] = load_task_images(task, self.zoo.preprocess, "test", self.samples, self.seed)
        return self._data

    def merge(self, method: str, params: Mapping[str, Any] | None = None, name: str | None = None) -> MergeResult:
        """Merge with a registered method (parameters checked first) and keep the result under ``name`` (default: method)."""
        merger = get_method(method)
        resolved = merger.resolve(params)
        start = time.perf_counter()
        model = merger.merge(self.zoo, **resolved)
        result = MergeResult(method, resolved, model, merge_seconds=time.perf_counter() - start)
        self.merges[name or method] = result
        return result

    def adapt(
        self,
        name: str = "wemoe",
        steps: int = DEFAULT_STEPS,
        lr: float = DEFAULT_LR,
        per_task: int = DEFAULT_PER_TASK,
        seed: int = 0,
        device: str | None = None,
        loss: str = DEFAULT_LOSS,
    ) -> Iterator[AdaptStep]:
        """Adapt the merge ``name`` step by step (a generator); stopping early keeps the last finished step."""
        if name not in self.merges:
            raise MethodError(f"There is no {name!r} merge to adapt yet: merge with wemoe or adamerging first.")
        result = self.merges[name]
        if not result.adaptive:
            raise MethodError(f"The {name!r} merge has nothing to adapt: only wemoe and adamerging merges adapt.")
        data, heads = self.data(), self.heads()
        previous = 0.0
        try:
            for record in adapt(result.model, data, heads, steps, lr, per_task, seed, device, loss):
                result.history.append(record)
                result.adapt_steps += 1
                result.adapt_seconds += record.elapsed - previous
                previous = record.elapsed
                yield record
        finally:
            release_workspaces(result.model)  # adaptation batches are large: do not keep their scratch memory

    def models(self, names: Sequence[str]) -> dict[str, Model]:
        """Models by name: ``pretrained``, ``experts`` (each on its own task), ``wemoe_oracle``, or a merge's name."""
        chosen: dict[str, Model] = {}
        for name in names:
            if name == PRETRAINED:
                chosen[name] = self.zoo.visual
            elif name == EXPERTS:
                chosen[name] = {t: self.zoo.expert_visual(t) for t in self.task_names}
            elif name == ORACLE:
                wemoe = next((r.model for r in self.merges.values() if routes(r.model)), None)
                if wemoe is None:
                    raise MethodError("wemoe_oracle needs a wemoe merge first: it routes each task to its own expert.")
                chosen[name] = oracle_towers(wemoe, self.task_names)
            elif name in self.merges:
                chosen[name] = self.merges[name].model
            else:
                known = [PRETRAINED, EXPERTS, *self.merges]
                raise MethodError(f"Nothing called {name!r} to evaluate. Known: {', '.join(known)}.")
        return chosen

    def evaluate(self, names: Sequence[str], progress: Callable[[float, str], None] | None = None) -> pd.DataFrame:
        """Accuracy table (percent) of the named models on every task."""
        models = self.models(names)
        try:
            return evaluate(models, self.data(), self.heads(), progress=progress)
        finally:
            _release(models)

    def iter_scores(self, names: Sequence[str]):
        """The evaluation as a stream of cells (for tables that fill as they go)."""
        models = self.models(names)
        try:
            yield from iter_scores(models, self.data(), self.heads())
        finally:
            _release(models)


def _release(models: Mapping[str, Model]) -> None:
    """Free the WEMoE scratch memory of evaluated models (evaluation batches are large; uploads are single images)."""
    for model in models.values():
        for tower in model.values() if isinstance(model, Mapping) else [model]:
            release_workspaces(tower)
