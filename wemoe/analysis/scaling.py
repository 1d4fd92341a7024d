"""Accuracy against the number of tasks: how each merge method degrades as more experts are merged (issue #33).

For every count of tasks, a few seeded random subsets of the zoo's tasks are merged with each method (a workbench on
that subset: :meth:`~wemoe.workbench.workbench.Workbench.with_tasks`), adaptive merges adapted, and every merge scored
on the subset's tasks. A subset's score for a method is its *normalized accuracy*: the merge's accuracy on each task
divided by that task's expert's accuracy, averaged over the subset's tasks (``wemoe.analysis.cross_accuracy``). The
summary gives each method's mean, spread (population standard deviation), minimum and maximum over a count's subsets.

Subsets come from a local generator per count (``random.Random`` seeded with the seed and the count), so a count's
subsets do not depend on which other counts were asked for, and a run is the same for the same seed.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from wemoe.adaptation.adapt import resolve_settings
from wemoe.analysis.cross_accuracy import normalized_accuracy
from wemoe.errors import WemoeError
from wemoe.evaluation.evaluate import AVERAGE, needs_task
from wemoe.methods import get_method
from wemoe.workbench.workbench import EXPERTS, Workbench

SUMMARY_COLUMNS = ("mean", "std", "min", "max", "subsets")
"""The columns of :meth:`ScalingResult.summary`: over a count's subsets, of the average normalized accuracy (%)."""


def check_counts(counts: Sequence[int], available: int | None = None) -> list[int]:
    """``counts`` sorted, or a WemoeError naming the bad one: below 2, more than the ``available`` tasks (None: not
    checked, e.g. before the zoo is loaded), repeated."""
    if not counts:
        raise WemoeError("Give at least one number of tasks (e.g. 2,4,8).")
    for count in counts:
        if isinstance(count, bool) or not isinstance(count, int):
            raise WemoeError(f"A number of tasks must be a whole number, got {count!r}.")
        if count < 2:
            raise WemoeError(f"A number of tasks must be at least 2 (a merge needs two experts), got {count}.")
        if available is not None and count > available:
            raise WemoeError(f"The zoo has {available} tasks: cannot merge subsets of {count}. "
                             f"Choose counts from 2 to {available}.")
    repeated = sorted({c for c in counts if list(counts).count(c) > 1})
    if repeated:
        raise WemoeError(f"Each number of tasks once: {', '.join(map(str, repeated))} given more than once.")
    return sorted(counts)


def check_methods(methods: Sequence[str]) -> list[str]:
    """``methods`` as registered merge methods, or a WemoeError (an unknown name lists the known ones; no repeats)."""
    if not methods:
        raise WemoeError("Give at least one merge method (e.g. task_arithmetic,ties,wemoe).")
    for name in methods:
        get_method(name)  # MethodError listing the registered methods
    repeated = sorted({m for m in methods if list(methods).count(m) > 1})
    if repeated:
        raise WemoeError(f"Each method once: {', '.join(repeated)} given more than once.")
    return list(methods)


def check_subsets(subsets: int) -> int:
    """``subsets`` (per count), or a WemoeError when it is not a whole number of at least 1."""
    if isinstance(subsets, bool) or not isinstance(subsets, int) or subsets < 1:
        raise WemoeError(f"Draw at least one subset per number of tasks (a whole number), got {subsets!r}.")
    return subsets


def task_subsets(tasks: Sequence[str], count: int, subsets: int, seed: int = 0) -> list[tuple[str, ...]]:
    """``subsets`` different subsets of ``count`` of ``tasks`` (each in ``tasks``' order), drawn by a generator seeded
    with ``seed`` and ``count`` only; every possible subset (in ``itertools.combinations`` order) when there are no
    more than ``subsets`` of them (e.g. the one subset of all tasks)."""
    check_subsets(subsets)
    if not 1 <= count <= len(tasks):
        raise WemoeError(f"Cannot draw {count} of {len(tasks)} tasks.")
    if math.comb(len(tasks), count) <= subsets:
        return list(itertools.combinations(tasks, count))
    generator = random.Random(f"wemoe.scaling:{seed}:{count}")  # a str seed: the same on every platform and run
    drawn: list[tuple[str, ...]] = []
    while len(drawn) < subsets:
        chosen = set(generator.sample(range(len(tasks)), count))
        subset = tuple(t for i, t in enumerate(tasks) if i in chosen)
        if subset not in drawn:
            drawn.append(subset)
    return drawn


@dataclass
class SubsetRun:
    """One subset merged with every method: per method the average normalized accuracy (%) and the average accuracy
    (%), over the subset's tasks; ``seconds``: merging, adapting and scoring each method."""

    count: int
    tasks: tuple[str, ...]
    normalized: dict[str, float]
    accuracy: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)
    task_given: tuple[str, ...] = ()  # merges scored with each task's own model (EMR-Merging), not task-agnostic

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the subset's count and tasks, and per method its normalized and plain average (4 decimals)."""
        return {"count": self.count, "tasks": list(self.tasks),
                "normalized": {m: round(v, 4) for m, v in self.normalized.items()},
                "accuracy": {m: round(v, 4) for m, v in self.accuracy.items()},
                "seconds": {m: round(v, 2) for m, v in self.seconds.items()}}


@dataclass
class ScalingResult:
    """Every subset's run and how they were made (methods, their resolved parameters, adaptation settings, seed)."""

    tasks: list[str]
    methods: list[str]
    counts: list[int]
    subsets: int
    seed: int
    params: dict[str, dict[str, Any]]
    adaptation: dict[str, Any] | None
    runs: list[SubsetRun]
    experts: dict[str, float] = field(default_factory=dict)  # each expert's accuracy (%) on its own task
    task_given: list[str] = field(default_factory=list)

    def summary(self) -> pd.DataFrame:
        """Rows ``(method, count)``, columns :data:`SUMMARY_COLUMNS`: the mean, population standard deviation, minimum
        and maximum of the average normalized accuracy (%) over the count's subsets, and how many subsets."""
        rows = {}
        for method in self.methods:
            for count in self.counts:
                values = [run.normalized[method] for run in self.runs if run.count == count]
                rows[(method, count)] = {"mean": statistics.fmean(values), "std": statistics.pstdev(values),
                                         "min": min(values), "max": max(values), "subsets": len(values)}
        table = pd.DataFrame.from_dict(rows, orient="index", columns=list(SUMMARY_COLUMNS))
        table.index = pd.MultiIndex.from_tuples(table.index, names=["method", "count"])
        return table

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the settings, ``summary`` (method -> count -> mean, std, min, max, subsets) and every run."""
        summary: dict[str, dict[str, dict[str, float]]] = {}
        for (method, count), row in self.summary().iterrows():
            summary.setdefault(method, {})[str(count)] = {
                key: (int(row[key]) if key == "subsets" else round(float(row[key]), 4)) for key in SUMMARY_COLUMNS}
        return {"view": "scaling", "measure": "normalized accuracy (%): merged / expert per task, averaged over the "
                "subset's tasks", "tasks": list(self.tasks), "methods": list(self.methods),
                "counts": list(self.counts), "subsets_per_count": self.subsets, "seed": self.seed,
                "params": self.params, "adaptation": self.adaptation, "task_given": list(self.task_given),
                "experts": {t: round(v, 4) for t, v in self.experts.items()},
                "summary": summary, "runs": [run.to_dict() for run in self.runs]}


def score_subset(bench: Workbench, tasks: Sequence[str], methods: Sequence[str],
                 params: Mapping[str, Mapping[str, Any]], adaptation: Mapping[str, Any] | None,
                 experts: Mapping[str, float]) -> SubsetRun:
    """Merge the experts of ``tasks`` with every method (adapting the adaptive ones with ``adaptation``, when given and
    its steps > 0), score each on those tasks and normalize by the ``experts``' accuracy per task."""
    sub = bench.with_tasks(tasks)
    seconds: dict[str, float] = {}
    given = []
    rows = {}
    for method in methods:
        start = time.perf_counter()
        made = sub.merge(method, params.get(method))
        if made.adaptive and adaptation is not None and adaptation["steps"] > 0:
            for _ in sub.adapt(method, **adaptation):
                pass
        if needs_task(made.model):
            given.append(method)
        rows[method] = sub.evaluate([method]).loc[method]
        seconds[method] = time.perf_counter() - start
        del sub.merges[method]  # one merge alive at a time
    table = pd.DataFrame(rows).T
    normalized = normalized_accuracy(table, experts)
    return SubsetRun(len(tasks), tuple(tasks), {m: float(normalized.loc[m, AVERAGE]) for m in methods},
                     {m: float(table.loc[m, AVERAGE]) for m in methods}, seconds, tuple(given))


def accuracy_by_task_count(
    bench: Workbench,
    methods: Sequence[str],
    counts: Sequence[int],
    subsets: int = 3,
    seed: int = 0,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    adaptation: Mapping[str, Any] | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> ScalingResult:
    """Each method's normalized accuracy on ``subsets`` seeded random subsets of every count of ``bench``'s tasks.

    ``params``: method -> parameters (default: each method's declared defaults); ``adaptation``: the settings of
    :meth:`Workbench.adapt` for adaptive methods (``wemoe.adaptation.adapt.SETTINGS``: steps, lr, per_task, loss,
    seed, split; None: the declared defaults). Everything is checked before any work. The test images are the
    bench's (its ``samples`` and seed).
    """
    counts = check_counts(list(counts), len(bench.task_names))
    methods = check_methods(list(methods))
    check_subsets(subsets)
    params = {m: dict(p) for m, p in (params or {}).items()}
    resolved = {m: get_method(m).resolve(params.get(m)) for m in methods}
    settings = resolve_settings(adaptation) if any(get_method(m).adaptive for m in methods) else None
    plan = [(count, subset) for count in counts for subset in task_subsets(bench.task_names, count, subsets, seed)]
    experts = bench.evaluate([EXPERTS]).loc[EXPERTS]
    runs = []
    for done, (count, subset) in enumerate(plan):
        if progress is not None:
            progress(done / len(plan), f"{count} tasks: {', '.join(subset)}")
        runs.append(score_subset(bench, subset, methods, resolved, settings, experts))
    given = [m for m in methods if any(m in run.task_given for run in runs)]
    return ScalingResult(list(bench.task_names), methods, counts, subsets, seed, resolved, settings, runs,
                         {t: float(experts[t]) for t in bench.task_names}, given)
