"""A Workbench: a loaded zoo (shared, read-only) and the merges one user makes from it.

It is what one CLI run or one app session holds, so both drive the same code: ``merge`` a registered method,
``adapt`` an adaptive merge step by step, ``evaluate`` any set of models into an accuracy table, analyse the routing.

Many workbenches may share one :class:`~wemoe.workbench.loaded_zoo.LoadedZoo` (an app loads each zoo once for all its
sessions) and one :class:`~wemoe.workbench.result_cache.ResultCache`: merges, adaptation runs, table rows and routing
analyses are pure functions of their inputs, so with a cache each is computed once per process and later workbenches get
it from there (``from_cache`` says so). What a workbench gets from the cache it never changes: a static merge is shared
as it is (no one trains it); an adaptive merge is a copy whose frozen tensors are shared and whose trainable ones are
its own (copy-on-write for routers), so adapting it further changes nobody else's.

How an adaptation run is computed once and shared (claimed, waited for, restored) is :mod:`wemoe.workbench.cached_runs`;
this module is the facade.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from PIL import Image
from torch import nn

from wemoe.adaptation.adapt import (
    DEFAULT_LOSS,
    DEFAULT_LR,
    DEFAULT_PER_TASK,
    DEFAULT_STEPS,
    AdaptStep,
    ChunkRunner,
    resolve_settings,
)
from wemoe.adaptation.adaptive import routes, trainable_parameters
from wemoe.errors import MethodError, TaskError
from wemoe.evaluation.evaluate import Model, Score, iter_scores, table_from_scores
from wemoe.evaluation.predictions import EXPERT_PREFIX, ImageClassification, classify_batch, features
from wemoe.evaluation.sample_eval import accuracy_by_task, sample_data, with_average
from wemoe.methods import get_method
from wemoe.moe.layer import release_workspaces
from wemoe.moe.routing import RoutingAnalysis, RoutingCentroids, analyse_routing
from wemoe.moe.routing_hooks import oracle_towers
from wemoe.stopping import Stopped, check_stop, stopping
from wemoe.tasks.images import TaskImages, encode_images
from wemoe.tasks.registry import Task
from wemoe.tasks.splits import TEST
from wemoe.workbench.cached_runs import Waiting, adapt_once, recorded_run, run_key, watch_run
from wemoe.workbench.loaded_zoo import LoadedZoo
from wemoe.workbench.result_cache import ResultCache
from wemoe.workbench.result_codecs import TowerCodec
from wemoe.zoo.memory_plan import check_merge_fits, shape_of_zoo
from wemoe.zoo.zoo import Zoo

PRETRAINED = "pretrained"
EXPERTS = "experts"
ORACLE = "wemoe_oracle"


@dataclass
class MergeResult:
    """A merged model and how it was made.

    ``key`` names its inputs (zoo, method, parameters, then every adaptation run) when it came from a workbench with a
    cache, else None; ``from_cache`` says whether its latest state came from the cache instead of being computed.
    """

    method: str
    params: dict[str, Any]
    model: nn.Module
    merge_seconds: float = 0.0
    adapt_steps: int = 0
    adapt_seconds: float = 0.0
    history: list[AdaptStep] = field(default_factory=list)
    key: Hashable | None = None
    from_cache: bool = False

    @property
    def adaptive(self) -> bool:
        """Whether the model has parameters left to adapt (see ``wemoe.adaptation.adaptive``)."""
        return bool(trainable_parameters(self.model))

    @property
    def routes(self) -> bool:
        """Whether the model routes each image (a WEMoE model; see ``wemoe.adaptation.adaptive``)."""
        return routes(self.model)


def own_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose trainable parameters are its own and whose frozen tensors are shared (not copied)."""
    frozen = [p for p in model.parameters() if not p.requires_grad] + list(model.buffers())
    return copy.deepcopy(model, memo={id(t): t for t in frozen})


def _frozen(values: Mapping[str, Any]) -> tuple:
    return tuple(sorted(values.items()))


class Workbench:
    """A loaded zoo and the merges made from it; optionally sharing results through a cache."""

    def __init__(
        self,
        zoo: Zoo,
        tasks: Sequence[Task] | None = None,
        samples: int | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
        adapt_split: str = "test",
    ) -> None:
        """A workbench on its own LoadedZoo (no result cache); see :meth:`sharing` for one shared with others.
        ``adapt_split``: ``heldout`` keeps the images adaptation sees out of the scored ones
        (``wemoe.tasks.splits``)."""
        self.loaded = LoadedZoo(zoo, tasks, samples, seed, cache_dir, adapt_split)
        self.cache: ResultCache | None = None
        self.cache_key: Hashable | None = None
        self.zoo_key: Hashable | None = None  # the loaded zoo's key in the cache, before any choice of experts
        self.merges: dict[str, MergeResult] = {}
        self._centroids: dict[str, tuple[Hashable, RoutingCentroids]] = {}

    @classmethod
    def sharing(cls, loaded: LoadedZoo, cache: ResultCache | None = None, key: Hashable | None = None,
                tasks: Sequence[str] | None = None) -> Workbench:
        """A workbench on an already loaded zoo; with a ``cache`` and the zoo's ``key`` its results are shared.

        ``tasks``: only these experts (at least two; :meth:`LoadedZoo.subset`), whose results are kept under their
        own key. The results are shared only with workbenches on the same scored and adaptation images: a zoo loaded
        with ``adapt_split='heldout'`` scores (and adapts on) other images than one loaded with ``test``, so its
        results are kept under ``(key, 'heldout')``. With a cache that keeps results on disk (``cache.store``) the key
        also holds the zoo's content hash (:meth:`LoadedZoo.fingerprint`): changed weights or images never meet the
        results of the old ones."""
        bench = cls.__new__(cls)
        bench.zoo_key = key
        if cache is not None and key is not None and getattr(cache, "store", None) is not None:
            key = (key, "zoo", loaded.whole.fingerprint())
        if tasks is not None and list(tasks) != loaded.task_names:
            loaded = loaded.subset(tasks)
            key = None if key is None else (key, "tasks", tuple(loaded.task_names))
        bench.loaded, bench.merges, bench._centroids = loaded, {}, {}
        if loaded.adapt_split != TEST and key is not None:
            key = (key, loaded.adapt_split)
        bench.cache, bench.cache_key = (cache, key) if cache is not None and key is not None else (None, None)
        return bench

    def with_tasks(self, tasks: Sequence[str] | None) -> Workbench:
        """A new workbench (no merges) on the experts of ``tasks`` only (None: all of the zoo's), sharing this one's
        loaded images, heads and result cache; its results are cached under the subset's own key."""
        full = self.loaded.whole
        return Workbench.sharing(full, self.cache, self.zoo_key, full.task_names if tasks is None else tasks)

    @property
    def zoo(self) -> Zoo:
        """The zoo (shared, read-only)."""
        return self.loaded.zoo

    @property
    def tasks(self) -> list[Task]:
        """The tasks, one per expert, in the experts' order."""
        return self.loaded.tasks

    @property
    def samples(self) -> int | None:
        """Test images per task (None: all)."""
        return self.loaded.samples

    @property
    def seed(self) -> int:
        """The seed that drew the test images."""
        return self.loaded.seed

    @property
    def task_names(self) -> list[str]:
        """Task names, in the experts' order."""
        return self.loaded.task_names

    def heads(self) -> dict[str, torch.Tensor]:
        """Zero-shot heads of every task (shared)."""
        return self.loaded.heads()

    def data(self, progress: Callable[[float, str], None] | None = None) -> dict[str, TaskImages]:
        """Every task's test images as tensors (shared)."""
        return self.loaded.data(progress)

    def _cached(self, key: Hashable | None, compute: Callable[[], Any], codec: Any = None) -> tuple[Any, bool]:
        if self.cache is None or key is None:
            return compute(), False
        return self.cache.get_or_compute((self.cache_key, *key), compute, codec=codec)

    def merge(self, method: str, params: Mapping[str, Any] | None = None, name: str | None = None) -> MergeResult:
        """Merge with a registered method (parameters checked first) and keep the result under ``name`` (default:
        method).

        The workbench's merges change only once the merge succeeded.
        """
        result = self.build(method, params)
        self.merges[name or method] = result
        return result

    def build(self, method: str, params: Mapping[str, Any] | None = None,
              stop: Callable[[], bool] | None = None) -> MergeResult:
        """A merge with a registered method (from the cache when made before), not yet kept in :attr:`merges`.

        ``stop``: checked between the steps of methods with loops (``wemoe.stopping``); once true the merge raises
        ``wemoe.stopping.Stopped`` and nothing is made or cached.
        """
        merger = get_method(method)
        resolved = merger.resolve(params)
        key = ("merge", method, _frozen(resolved))
        start = time.perf_counter()
        with stopping(stop):
            check_stop()
            model, hit = self._cached(key, lambda: self._merge_within_memory(merger, resolved), TowerCodec(self.zoo))
        if self.cache is not None and trainable_parameters(model):
            model = own_copy(model)  # the cache's model stays as it was made: these routers are this workbench's own
        return MergeResult(method, resolved, model, merge_seconds=time.perf_counter() - start,
                           key=key if self.cache is not None else None, from_cache=hit)

    def _merge_within_memory(self, merger: Any, resolved: dict[str, Any]) -> nn.Module:
        """``merger.merge`` on this zoo, refused first (MergeTooLarge) when its estimated peak would not fit in memory
        (``wemoe.zoo.memory_plan``)."""
        check_merge_fits(shape_of_zoo(self.zoo), merger.name, resolved, len(self.loaded.whole.task_names))
        return merger.merge(self.zoo, **resolved)

    def build_many(self, methods: Mapping[str, Mapping[str, Any] | None], stop: Callable[[], bool] | None = None,
                   made: dict[str, MergeResult] | None = None,
                   on_method: Callable[[int, str], None] | None = None) -> dict[str, MergeResult]:
        """Merges with several methods in order (``method -> parameters``), none kept in :attr:`merges`: what "Merge"
        does before it swaps them in (:meth:`keep`).

        ``stop`` is checked before each method and inside methods with loops; once true the merges made so far are
        returned (the stopped one is not among them). ``made``: the dict to fill (the caller sees what was made even if
        this raises); ``on_method(index, method)`` is called before each one (progress).
        """
        made = {} if made is None else made
        for index, (method, params) in enumerate(methods.items()):
            if stop is not None and stop():
                break
            if on_method is not None:
                on_method(index, method)
            try:
                made[method] = self.build(method, params, stop=stop)
            except Stopped:
                break
        return made

    def keep(self, made: Mapping[str, MergeResult]) -> None:
        """Put merges made by :meth:`build` or :meth:`build_many` into :attr:`merges` (replacing those of the same
        name) in one step."""
        self.merges.update(made)

    def adapt(
        self,
        name: str = "wemoe",
        steps: int = DEFAULT_STEPS,
        lr: float = DEFAULT_LR,
        per_task: int = DEFAULT_PER_TASK,
        seed: int = 0,
        device: str | None = None,
        loss: str = DEFAULT_LOSS,
        fabric: Any | None = None,
        runner: ChunkRunner | None = None,
        chunk_steps: int = 0,
        stop: Callable[[], bool] | None = None,
        split: str | None = None,
        report_waiting: bool = False,
    ) -> Iterator[AdaptStep | Waiting]:
        """Adapt the merge ``name`` step by step (a generator); stopping early keeps the last finished step.

        ``split``: the images adapted on, ``test`` (the scored ones) or ``heldout`` (never scored; default: the
        loaded zoo's ``adapt_split``; see :meth:`wemoe.workbench.loaded_zoo.LoadedZoo.adaptation_data`).

        ``runner``: run the adaptation in chunks of ``chunk_steps`` steps with
        :func:`wemoe.adaptation.adapt.adapt_in_chunks`, each chunk by ``runner`` (e.g. a ZeroGPU call that returns its
        checkpoint); bitwise the same run, and a chunk that fails leaves the model at the last finished chunk.

        ``fabric``: a launched Lightning Fabric (``wemoe.adaptation.distributed.start_fabric``) to adapt on all its
        ranks, each taking its share of every step's images (call it on every rank; ``device`` is then the rank's own).

        With a cache, a run with the same inputs as one finished before is not recomputed: its trainable state is
        loaded and its records are yielded at once (``from_cache``). A run stopped early or diverged is not cached.
        While the same run is being computed for another workbench this one waits for it; ``stop`` (checked while
        waiting) lets the caller give up, leaving the model as it was; ``report_waiting``: meanwhile yield a
        :class:`~wemoe.workbench.cached_runs.Waiting` (the run's progress) every half second, so that a caller holding
        a lock per item can let go of it between them (:mod:`wemoe.workbench.cached_runs`).
        """
        if name not in self.merges:
            raise MethodError(f"There is no {name!r} merge to adapt yet: merge with wemoe or adamerging first.")
        result = self.merges[name]
        if not result.adaptive:
            raise MethodError(f"The {name!r} merge has nothing to adapt: only wemoe and adamerging merges adapt.")
        settings = resolve_settings({"steps": steps, "lr": lr, "per_task": per_task, "loss": loss, "seed": seed,
                                     "split": split or self.loaded.adapt_split})
        # with Fabric every rank must take every step: never from the cache
        key = None if fabric is not None or self.cache is None else run_key(result.key, settings)

        def start() -> Iterator[AdaptStep]:
            data = self.loaded.adaptation_data(settings["split"])
            return recorded_run(result, data, self.heads(), settings, device, fabric, runner, chunk_steps)

        yield from adapt_once(result, start, settings["steps"], self.cache, self.cache_key, key, stop, report_waiting)

    def waiting_for_run(
        self,
        name: str = "wemoe",
        steps: int = DEFAULT_STEPS,
        lr: float = DEFAULT_LR,
        per_task: int = DEFAULT_PER_TASK,
        seed: int = 0,
        loss: str = DEFAULT_LOSS,
        every: float = 0.5,
        split: str | None = None,
    ) -> Iterator[str]:
        """While another workbench computes the very run that :meth:`adapt` would start with these settings, yield
        its progress (e.g. ``"step 12/100, loss 0.513"``) every ``every`` seconds; ends at once when none is running.

        It only watches (claims nothing), so a caller can wait here without holding its own locks and then call
        :meth:`adapt`, which gets the finished run from the cache; stopping the iteration early is always safe.
        """
        if name not in self.merges or self.cache is None or not self.merges[name].adaptive:
            return
        settings = resolve_settings({"steps": steps, "lr": lr, "per_task": per_task, "loss": loss, "seed": seed,
                                     "split": split or self.loaded.adapt_split})
        key = run_key(self.merges[name].key, settings)
        if key is not None:
            yield from watch_run(self.cache, (self.cache_key, *key), every)

    def routed_merge(self) -> str | None:
        """The name of the first merge that routes each image (a WEMoE merge), or None."""
        return next((name for name, result in self.merges.items() if result.routes), None)

    def _routed_merge(self) -> MergeResult:
        name = self.routed_merge()
        if name is None:
            raise MethodError("wemoe_oracle needs a wemoe merge first: it routes each task to its own expert.")
        return self.merges[name]

    def _model_key(self, name: str) -> Hashable | None:
        if name in (PRETRAINED, EXPERTS):
            return (name,)
        if name == ORACLE:
            merge_key = self._routed_merge().key
            return None if merge_key is None else (ORACLE, merge_key)
        return None if name not in self.merges or self.merges[name].key is None else (self.merges[name].key,)

    def models(self, names: Sequence[str]) -> dict[str, Model]:
        """Models by name: ``pretrained``, ``experts`` (each on its own task), ``wemoe_oracle``, or a merge's name."""
        chosen: dict[str, Model] = {}
        for name in names:
            if name == PRETRAINED:
                chosen[name] = self.zoo.visual
            elif name == EXPERTS:
                chosen[name] = self.loaded.expert_towers()
            elif name == ORACLE:
                chosen[name] = oracle_towers(self._routed_merge().model, self.task_names)
            elif name in self.merges:
                chosen[name] = self.merges[name].model
            else:
                known = [PRETRAINED, EXPERTS, *self.merges]
                raise MethodError(f"Nothing called {name!r} to evaluate. Known: {', '.join(known)}.")
        return chosen

    def evaluate(self, names: Sequence[str], progress: Callable[[float, str], None] | None = None) -> pd.DataFrame:
        """Accuracy table (percent) of the named models on every task."""
        scores = []
        total = len(names) * len(self.task_names)
        for score in self.iter_scores(names):
            scores.append(score)
            if progress is not None:
                progress(len(scores) / total, f"{score.model} on {score.task}: {score.accuracy:.1f}%")
        return table_from_scores(scores, self.task_names)

    def sample_scores(self, names: Sequence[str], per_task: int | None, seed: int = 0) -> dict[str, dict[str, float]]:
        """Accuracy (percent) per task, and ``average``, of models ``names`` on ``per_task`` test images of every task.

        Where that sample is every loaded image (no task has more than ``per_task``; a lesson sized for a CPU loads
        its own count), these are the evaluation's cells (:meth:`evaluate`): the lesson's steps, the cost view and
        the accuracy table then score each model once. Otherwise each model's state is scored once on the sample
        (shared through the cache)."""
        data = self.data()
        if per_task is None or all(len(images) <= per_task for images in data.values()):
            table = self.evaluate(list(names))
            return {name: {column: float(value) for column, value in table.loc[name].items()} for name in names}
        sample, heads = sample_data(data, per_task, seed), self.heads()
        models = self.models(names)
        try:
            scores = {}
            for name, model in models.items():
                model_key = self._model_key(name)
                key = None if model_key is None else ("derived", "sample_accuracy", *model_key, per_task, seed)
                scores[name] = self._cached(key, lambda model=model: with_average(
                    accuracy_by_task(model, sample, heads)))[0]
            return scores
        finally:
            _release(models)

    def iter_scores(self, names: Sequence[str]) -> Iterator[Score]:
        """The evaluation as a stream of cells, model by model (rows computed before come from the cache at once)."""
        models = self.models(names)
        try:
            for name, model in models.items():
                yield from self._row(name, model)
        finally:
            _release(models)

    def _row(self, name: str, model: Model) -> Iterator[Score]:
        model_key = self._model_key(name)
        if self.cache is None or model_key is None:
            yield from iter_scores({name: model}, self.data(), self.heads())
            return
        key = (self.cache_key, "scores", *model_key)
        while True:
            action, found = self.cache.claim(key)
            if action == "hit":
                for score in found:
                    yield Score(name, score.task, score.accuracy, score.samples, cached=True)
                return
            if action == "compute":
                break
            found.done.wait(0.5)
        row: list[Score] = []
        try:
            for score in iter_scores({name: model}, self.data(), self.heads()):
                row.append(score)
                yield score
        except BaseException:
            self.cache.abandon(key, found)
            raise
        if len(row) == len(self.task_names):
            self.cache.finish(key, found, tuple(row))
        else:  # the consumer stopped early (GeneratorExit is raised at the yield above, handled there)
            self.cache.abandon(key, found)

    def routing_analysis(self, name: str, per_task: int | None = None) -> tuple[RoutingAnalysis, bool]:
        """Features and routing of ``per_task`` test images of every task through merge ``name``; ``(analysis,
        from_cache)``."""
        if name not in self.merges:
            raise MethodError(f"There is no {name!r} merge: merge with wemoe first.")
        result = self.merges[name]
        key = None if result.key is None else ("routing", result.key, per_task)
        try:
            return self._cached(key, lambda: analyse_routing(result.model, self.data(), per_task=per_task))
        finally:
            release_workspaces(result.model)

    def routing_centroids(self, name: str, per_task: int | None = 32) -> RoutingCentroids:
        """Each task's mean routing through merge ``name`` over ``per_task`` test images (kept while the merge is
        as it is: same object, same steps, same cache key)."""
        result = self.merges[name]
        state = (id(result), id(result.model), result.adapt_steps, result.key, per_task)
        kept = self._centroids.get(name)
        if kept is None or kept[0] != state:
            analysis, _ = self.routing_analysis(name, per_task)
            kept = self._centroids[name] = (state, analysis.centroids())
        return kept[1]

    def classify(
        self,
        images: Sequence[Image.Image] | torch.Tensor,
        task: str | None = None,
        k: int = 5,
        centroid_per_task: int | None = 32,
        models: str | Sequence[str] | None = None,
        experts: str | Sequence[str] | None = None,
    ) -> list[ImageClassification]:
        """Per image: the top-``k`` classes of the pretrained model, every merge and every expert, and with a WEMoE
        merge its routing and the routers' task guess (see :mod:`wemoe.evaluation.predictions`).

        ``images``: PIL images, or a batch already preprocessed for the zoo. The head is ``task``'s; with ``task``
        None the routers' guess (nearest mean routing of ``centroid_per_task`` test images per task), else every
        task's classes together. With a cache, the same images under the same merges are classified once, and the
        features of the pretrained model and the experts are kept per image batch (shared by every session).

        Which models (None: all of them, as before): ``models`` ``"shown"`` is what the page's compact table shows
        (:meth:`shown_model`, and pretrained for an image without a task), or a list of names (``"pretrained"``,
        merges); ``experts`` ``"used"`` is each image's expert of the task used (the default with ``"shown"``), or
        a list of tasks.
        """
        if task is not None and task not in self.task_names:
            raise TaskError(f"Unknown task {task!r}. Tasks: {', '.join(self.task_names)}.")
        chosen, without_task, expert_tasks = self._chosen_models(models, experts)
        batch = images if isinstance(images, torch.Tensor) else encode_images(list(images), self.zoo.preprocess)
        digest = hashlib.sha256(batch.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        merge_keys = tuple((name, self.merge_key(name)) for name in self.merges)
        key = None
        if all(merge_key is not None for _, merge_key in merge_keys):
            key = ("classify", digest, tuple(batch.shape), task, k, centroid_per_task, merge_keys)
            if models is not None or experts is not None:  # the full classification keeps its key of before
                key = (*key, "only", tuple(chosen), tuple(without_task), expert_tasks)
        routed = self.routed_merge()  # always runs when there is one: its routers choose the head
        chosen = chosen if routed is None or routed in chosen else [routed, *chosen]

        def compute() -> list[ImageClassification]:
            centroids = None if routed is None else self.routing_centroids(routed, centroid_per_task)
            towers = {n: self._tower_of(n) for n in chosen}
            fallback = {n: self._tower_of(n) for n in without_task}
            all_experts = self.loaded.expert_towers()
            used = expert_tasks == "used"
            wanted = all_experts if used else {t: all_experts[t] for t in expert_tasks}
            def classify_images(images: torch.Tensor) -> list[ImageClassification]:
                return classify_batch(images, towers, wanted, self.heads(), self.tasks, task, routed, centroids, k,
                                      used_expert_only=used, without_task=fallback,
                                      tower_features=self._tower_features)

            # one classification at a time on a shared zoo, together with other sessions' waiting for the same
            # models (wemoe.workbench.classify_batching); merges not from the cache are this session's own
            same_models = None if key is None else (
                "classify", tuple(self.task_names), task, k, centroid_per_task, merge_keys, tuple(chosen),
                tuple(without_task), expert_tasks)
            try:
                return self.loaded.classify_batcher.run(same_models, batch, classify_images)
            finally:
                _release({**towers, **fallback})

        return self.cached(key, compute)[0]

    def shown_model(self) -> str:
        """The merged model the page's compact table shows: the WEMoE merge, else the latest merge, else pretrained."""
        return self.routed_merge() or (list(self.merges)[-1] if self.merges else PRETRAINED)

    def _chosen_models(self, models: str | Sequence[str] | None, experts: str | Sequence[str] | None
                       ) -> tuple[list[str], list[str], str | tuple[str, ...]]:
        """(models for every image, models for images without a task, ``"used"`` or the experts' tasks)."""
        every = [PRETRAINED, *self.merges]
        if models == "shown":
            chosen = [self.shown_model()]
            without_task = [] if PRETRAINED in chosen else [PRETRAINED]
            experts = "used" if experts is None else experts
        else:
            chosen, without_task = every if models is None else list(models), []
        unknown = [n for n in chosen if n not in every]
        if unknown or isinstance(models, str) and models != "shown":
            raise MethodError(f"Unknown models {unknown or models!r}. Models: shown, {', '.join(every)}.")
        if experts == "used":
            return chosen, without_task, "used"
        tasks = tuple(self.task_names if experts is None else experts)
        if isinstance(experts, str) or any(t not in self.task_names for t in tasks):
            raise TaskError(f"Unknown experts {experts!r}. Experts: used, {', '.join(self.task_names)}.")
        return chosen, without_task, tasks

    def _tower_of(self, name: str) -> Model:
        return self.zoo.visual if name == PRETRAINED else self.merges[name].model

    def _tower_features(self, name: str, tower: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Features of ``tower`` (called ``name``); those of the unchanging towers (pretrained, the experts) are
        shared through the cache per image batch, whoever asks."""
        if name in self.merges or not (name == PRETRAINED or name.startswith(EXPERT_PREFIX)) or self.cache is None:
            return features(tower, images)
        # kept per image, so an image classified in another session's batch (classify_batching) is found again
        keys = [("tower features", hashlib.sha256(row.detach().cpu().contiguous().numpy().tobytes()).hexdigest(),
                 tuple(row.shape), name) for row in images]
        rows: list[torch.Tensor | None] = [self.cache.get((self.cache_key, "derived", *key)) for key in keys]
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            computed = features(tower, images[missing])
            for i, row in zip(missing, computed, strict=True):
                rows[i] = self.cached(keys[i], lambda row=row: row.clone())[0]
        return torch.stack(rows)

    def cached(self, key: Hashable | None, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """``compute()``'s result, shared through the cache under ``key`` (a tuple of its inputs; None: not shared)."""
        return self._cached(None if key is None else ("derived", *key), compute)

    def merge_key(self, name: str) -> Hashable | None:
        """The inputs that made merge ``name`` as it is now (None when it is not reproducible from the cache)."""
        return self.merges[name].key if name in self.merges and self.cache is not None else None


def _release(models: Mapping[str, Model]) -> None:
    """Free the WEMoE scratch memory of evaluated models (evaluation batches are large; uploads are single images)."""
    for model in models.values():
        for tower in model.values() if isinstance(model, Mapping) else [model]:
            release_workspaces(tower)
