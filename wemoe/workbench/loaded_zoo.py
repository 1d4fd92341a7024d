"""A LoadedZoo: a zoo with its tasks' test images, zero-shot heads and expert towers, loaded once and shared read-only.

It is what every user of one zoo reads and nobody changes: an app process loads each zoo once and hands the same
LoadedZoo to every session's :class:`~wemoe.workbench.workbench.Workbench`, which owns only what its user changes
(merges, routers, results). Everything here is built lazily, once, under one lock; the expert towers hold the zoo's own
expert tensors (no copy of the weights).
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable, Sequence

import torch
from torch import nn

from wemoe.errors import TaskError
from wemoe.tasks.heads import HeadCache
from wemoe.tasks.images import TaskImages, load_task_images
from wemoe.tasks.registry import Task, get_task
from wemoe.tasks.splits import ADAPT_SPLITS, HELDOUT, TEST, adapts_on_train, heldout_images
from wemoe.workbench.classify_batching import ClassifyBatcher
from wemoe.workbench.fingerprint import loaded_fingerprint
from wemoe.workbench.result_store import ResultStore
from wemoe.zoo.zoo import Zoo, chosen_tasks

STORE_FROM_ENV = object()  # LoadedZoo's default store: the one $MERGE_EXPLORER_CACHE_DIR names, if any


class LoadedZoo:
    """The zoo, its tasks (one per expert, same order), their test images and heads, and the experts' towers."""

    def __init__(
        self,
        zoo: Zoo,
        tasks: Sequence[Task] | None = None,
        samples: int | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
        adapt_split: str = TEST,
        classify_turn: contextlib.AbstractContextManager | None = None,
        store: ResultStore | None | object = STORE_FROM_ENV,
    ) -> None:
        """``samples``: test images per task (None: all), drawn with ``seed``; ``cache_dir``: where heads are cached;
        ``adapt_split``: ``heldout`` keeps adaptation images out of the scored ones (``wemoe.tasks.splits``;
        :meth:`data` is then what is scored, :meth:`adaptation_data` what adapts), ``test`` adapts on the scored images;
        ``classify_turn``: the turn classifications of new images take (default: a lock of this zoo's own);
        ``store``: where the heads outlive the process besides ``cache_dir`` (default: the persistent results of
        ``$MERGE_EXPLORER_CACHE_DIR`` when set, :meth:`ResultStore.from_env`; None: nowhere else)."""
        self.zoo = zoo
        self.tasks = list(tasks) if tasks is not None else [get_task(name) for name in zoo.task_names]
        if [t.name for t in self.tasks] != zoo.task_names:
            raise TaskError(f"Tasks {[t.name for t in self.tasks]} do not match the zoo's experts {zoo.task_names}.")
        self.samples = samples
        self.seed = seed
        if adapt_split not in ADAPT_SPLITS:
            raise TaskError(f"Unknown adaptation split {adapt_split!r}: use one of {', '.join(ADAPT_SPLITS)}.")
        self.adapt_split = adapt_split
        self._adapt_data: dict[str, TaskImages] = {}
        if store is STORE_FROM_ENV:
            store = ResultStore.from_env()
        self.head_cache = HeadCache(zoo.clip, zoo.tokenizer, cache_dir, store)
        self._heads: dict[str, torch.Tensor] = {}
        self._data: dict[str, TaskImages] = {}
        self._experts: dict[str, nn.Module] = {}
        self._lock = threading.RLock()
        # Classifications of new images run one at a time: on a few cores a dozen of them at once (a class clicking
        # the gallery) each took 30-70x their time alone, all finishing late; in turn each takes its time alone.
        # Any context manager will do (an app sharing several zoos gives them one turn: app.shared.ClassifyTurn).
        self.classify_turn = classify_turn if classify_turn is not None else threading.Lock()
        # requests waiting for the turn with the same models are computed as one batch (shared by subsets: their
        # requests' keys name their tasks)
        self.classify_batcher = ClassifyBatcher(self.classify_turn)
        self.whole = self  # the LoadedZoo of every expert (a subset's is the zoo it was chosen from)
        self._fingerprint: str | None = None

    @property
    def task_names(self) -> list[str]:
        """Task names, in the experts' order."""
        return [t.name for t in self.tasks]

    def subset(self, tasks: Sequence[str]) -> LoadedZoo:
        """This zoo with only the experts of ``tasks`` (at least two; ``wemoe.zoo.zoo.chosen_tasks``), sharing what is
        loaded: the images, heads and expert towers of those tasks are the same objects, loaded once for both."""
        names = chosen_tasks(self.zoo, tasks)
        view = copy.copy(self)  # shares the loaded dicts, the head cache, the lock and the classification turn
        view.whole = self.whole
        view.zoo = self.zoo.subset(names)
        view.tasks = [t for t in self.tasks if t.name in names]
        return view

    def fingerprint(self) -> str:
        """A content hash of the whole zoo's weights, heads and scored images and how they were drawn
        (:func:`wemoe.workbench.fingerprint.loaded_fingerprint`), computed once; results kept on disk are keyed by
        it."""
        whole = self.whole
        with whole._lock:
            if whole._fingerprint is None:
                whole._fingerprint = loaded_fingerprint(whole)
            return whole._fingerprint

    def heads(self) -> dict[str, torch.Tensor]:
        """Zero-shot heads of every task (built once)."""
        with self._lock:
            for task in self.tasks:
                if task.name not in self._heads:
                    self._heads[task.name] = self.head_cache.get(task)
            return {t.name: self._heads[t.name] for t in self.tasks}

    def data(self, progress: Callable[[float, str], None] | None = None) -> dict[str, TaskImages]:
        """Every task's test images as tensors (loaded once)."""
        with self._lock:
            for i, task in enumerate(self.tasks):
                if task.name not in self._data:
                    if progress is not None:
                        progress(i / len(self.tasks), f"loading {task.name} test images")
                    test = load_task_images(task, self.zoo.preprocess, "test", self.samples, self.seed)
                    if self.adapt_split == HELDOUT:
                        self._adapt_data[task.name], test = heldout_images(task, self.zoo.preprocess, test, self.seed)
                    self._data[task.name] = test
            return {t.name: self._data[t.name] for t in self.tasks}

    def without_heldout(self) -> list[str]:
        """The tasks that have no held-out adaptation images in this zoo: none when it was loaded with
        ``adapt_split='heldout'``, else those whose held-out images would be half of their scored test images."""
        return [] if self.adapt_split == HELDOUT else [t.name for t in self.tasks if not adapts_on_train(t)]

    def adaptation_data(self, split: str | None = None) -> dict[str, TaskImages]:
        """The images adaptation draws from under ``split`` (default: this zoo's ``adapt_split``): ``test``, the
        scored images (:meth:`data`); ``heldout``, images never scored (``wemoe.tasks.splits``)."""
        split = split or self.adapt_split
        if split == TEST:
            return self.data()
        if split != HELDOUT:
            raise TaskError(f"Unknown adaptation split {split!r}: use one of {', '.join(ADAPT_SPLITS)}.")
        scored = self.data()
        if self.adapt_split == HELDOUT:
            return {t.name: self._adapt_data[t.name] for t in self.tasks}
        halved = self.without_heldout()
        if halved:
            raise TaskError(f"Task(s) {', '.join(halved)} have no held-out images in this zoo: load it with "
                            "adapt_split='heldout' so their test sets are split in two (half adapts, half is scored).")
        with self._lock:
            for task in self.tasks:
                if task.name not in self._adapt_data:
                    self._adapt_data[task.name] = heldout_images(task, self.zoo.preprocess, scored[task.name],
                                                                 self.seed)[0]
            return {t.name: self._adapt_data[t.name] for t in self.tasks}

    def expert_tower(self, task: str) -> nn.Module:
        """The image tower of ``task``'s expert (built once; its weights are the zoo's expert tensors, not a copy)."""
        with self._lock:
            if task not in self._experts:
                expert = self.zoo.experts.get(task)
                if expert is None:
                    return self.zoo.expert_visual(task)  # raises the ZooError naming the known experts
                # copy the modules, not the base's weights (a whole tower allocated and dropped per expert), then
                # put the expert's own tensors in (assign: the base's tensors stay untouched)
                visual = self.zoo.visual
                shared = {id(t): t for t in [*visual.parameters(), *visual.buffers()]}
                tower = copy.deepcopy(visual, memo=shared)
                tower.load_state_dict(expert, assign=True)
                self._experts[task] = tower.eval().requires_grad_(False)
            return self._experts[task]

    def expert_towers(self) -> dict[str, nn.Module]:
        """Every expert's image tower, by task."""
        return {task: self.expert_tower(task) for task in self.task_names}
