"""A LoadedZoo: a zoo with its tasks' test images, zero-shot heads and expert towers, loaded once and shared read-only.

It is what every user of one zoo reads and nobody changes: an app process loads each zoo once and hands the same
LoadedZoo to every session's :class:`~wemoe.workbench.Workbench`, which owns only what its user changes (merges,
routers, results). Everything here is built lazily, once, under one lock; the expert towers hold the zoo's own expert
tensors (no copy of the weights).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence

import torch
from torch import nn

from wemoe.errors import TaskError
from wemoe.heads import HeadCache
from wemoe.task_images import TaskImages, load_task_images
from wemoe.tasks import Task, get_task
from wemoe.zoo import Zoo


class LoadedZoo:
    """The zoo, its tasks (one per expert, same order), their test images and heads, and the experts' towers."""

    def __init__(
        self,
        zoo: Zoo,
        tasks: Sequence[Task] | None = None,
        samples: int | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        """``samples``: test images per task (None: all), drawn with ``seed``; ``cache_dir``: where heads are cached."""
        self.zoo = zoo
        self.tasks = list(tasks) if tasks is not None else [get_task(name) for name in zoo.task_names]
        if [t.name for t in self.tasks] != zoo.task_names:
            raise TaskError(f"Tasks {[t.name for t in self.tasks]} do not match the zoo's experts {zoo.task_names}.")
        self.samples = samples
        self.seed = seed
        self.head_cache = HeadCache(zoo.clip, zoo.tokenizer, cache_dir)
        self._heads: dict[str, torch.Tensor] = {}
        self._data: dict[str, TaskImages] = {}
        self._experts: dict[str, nn.Module] = {}
        self._lock = threading.RLock()

    @property
    def task_names(self) -> list[str]:
        """Task names, in the experts' order."""
        return [t.name for t in self.tasks]

    def heads(self) -> dict[str, torch.Tensor]:
        """Zero-shot heads of every task (built once)."""
        with self._lock:
            for task in self.tasks:
                if task.name not in self._heads:
                    self._heads[task.name] = self.head_cache.get(task)
            return dict(self._heads)

    def data(self, progress: Callable[[float, str], None] | None = None) -> dict[str, TaskImages]:
        """Every task's test images as tensors (loaded once)."""
        with self._lock:
            for i, task in enumerate(self.tasks):
                if task.name not in self._data:
                    if progress is not None:
                        progress(i / len(self.tasks), f"loading {task.name} test images")
                    self._data[task.name] = load_task_images(
                        task, self.zoo.preprocess, "test", self.samples, self.seed
                    )
            return dict(self._data)

    def expert_tower(self, task: str) -> nn.Module:
        """The image tower of ``task``'s expert (built once; its weights are the zoo's expert tensors, not a copy)."""
        with self._lock:
            if task not in self._experts:
                tower = copy.deepcopy(self.zoo.visual)
                expert = self.zoo.experts.get(task)
                if expert is None:
                    return self.zoo.expert_visual(task)  # raises the ZooError naming the known experts
                tower.load_state_dict(expert, assign=True)
                self._experts[task] = tower.eval().requires_grad_(False)
            return self._experts[task]

    def expert_towers(self) -> dict[str, nn.Module]:
        """Every expert's image tower, by task."""
        return {task: self.expert_tower(task) for task in self.task_names}
