"""Lambda sweeps of task arithmetic and TIES, and merges with one lambda per task.

- :func:`best_task_arithmetic`: task arithmetic's lambda picked by a sweep (what ``python -m wemoe table`` and the
  pocket build report); the best merge is kept in the workbench.
- :func:`lambda_sweep`: per-task accuracy of task arithmetic and TIES for every lambda of a grid (0..1,
  :func:`lambda_grid`). The merged direction of each method (``sum_t tau_t``, TIES' trimmed, sign-elected sum) is
  computed once; each lambda only applies it (``theta_0 + lambda * direction``) and sends a sample of every task's
  images through the tower in one batch (``wemoe.evaluation.sample_eval``); lambda 0 (the pretrained tower for every
  method) is scored once.
- :func:`per_task_lambdas`: ``theta_0 + sum_t lambda_t tau_t`` with one lambda per task, scored on a sample of each
  task (the classroom's sliders).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from wemoe.errors import MethodError
from wemoe.evaluation.evaluate import AVERAGE
from wemoe.evaluation.sample_eval import accuracy_by_task, sample_data, with_average
from wemoe.methods import get_method
from wemoe.methods.ties import ties_merge
from wemoe.task_vector import TaskVector, lazy_task_vectors, summed
from wemoe.workbench.result_codecs import register_result_type
from wemoe.workbench.workbench import Workbench

LAMBDA_SWEEP = tuple(round(0.1 * i, 1) for i in range(1, 11))
"""The lambdas tried by :func:`best_task_arithmetic`: 0.1, 0.2, ..., 1.0."""

LAMBDA_GRID = tuple(round(0.1 * i, 1) for i in range(0, 11))
"""The lambdas of :func:`lambda_sweep`: 0.0, 0.1, ..., 1.0."""

SWEPT = ("task_arithmetic", "ties")


def lambda_grid(step: float = 0.1) -> tuple[float, ...]:
    """The lambdas from 0 to 1 spaced ``step`` (``step`` must divide 1): 0.1 gives :data:`LAMBDA_GRID`."""
    count = round(1.0 / step)
    if count < 1 or abs(count * step - 1.0) > 1e-9:
        raise ValueError(f"A lambda grid from 0 to 1 needs a step that divides 1 (0.1, 0.2, 0.25, 0.5), got {step}.")
    return tuple(round(i / count, 4) for i in range(count + 1))


def best_task_arithmetic(bench: Workbench, lambdas: tuple[float, ...] = LAMBDA_SWEEP) -> dict[str, Any]:
    """Sweep task arithmetic's lambda; keep the best merge in the workbench and return its params with the sweep.

    Each lambda is merged and evaluated (average accuracy over the workbench's tasks), then dropped; the best one
    is merged again under the name ``task_arithmetic``. Returns ``{"lambda": best, "lambda_sweep": {lambda: avg}}``.
    """
    sweep = {}
    for lam in lambdas:
        bench.merge("task_arithmetic", {"lambda": lam}, name=f"ta@{lam}")
        sweep[lam] = float(bench.evaluate([f"ta@{lam}"]).loc[f"ta@{lam}", "average"])
        del bench.merges[f"ta@{lam}"]
    best = max(sweep, key=sweep.get)
    bench.merge("task_arithmetic", {"lambda": best})
    return {"lambda": best, "lambda_sweep": {str(k): round(v, 2) for k, v in sweep.items()}}


def merged_direction(bench: Workbench, method: str, params: Mapping[str, Any] | None = None) -> TaskVector:
    """The direction ``method`` adds to the pretrained weights before scaling by lambda (its other parameters
    resolved from ``params``): the sum of the task vectors, or TIES' trimmed, sign-elected merge."""
    resolved = get_method(method).resolve(params)
    # read one tensor at a time: the direction is one tower, never every task vector at once
    vectors = list(lazy_task_vectors(bench.zoo.base_state, bench.zoo.experts).values())
    if method == "task_arithmetic":
        return summed(vectors)
    if method == "ties":
        return ties_merge(vectors, resolved["top_k"], resolved["merge"], resolved["rule"])
    raise MethodError(f"The lambda sweep covers {', '.join(SWEPT)}, not {method!r}.")


@register_result_type  # kept on disk with the app's results (wemoe.workbench.result_codecs)
@dataclass
class LambdaSweep:
    """Per-task accuracy of each swept method at each lambda, and the lambda each method has chosen."""

    lambdas: list[float]
    tables: dict[str, pd.DataFrame]  # method -> rows lambda, columns tasks + average
    chosen: dict[str, float] = field(default_factory=dict)
    per_task: int | None = None

    def best(self, method: str) -> float:
        """The lambda with the highest average accuracy for ``method``."""
        return float(self.tables[method][AVERAGE].idxmax())

    def to_dict(self) -> dict:
        """Plain lists and dicts (JSON-ready)."""
        return {
            "lambdas": self.lambdas,
            "per_task": self.per_task,
            "chosen": self.chosen,
            "best": {m: self.best(m) for m in self.tables},
            "accuracy": {
                m: {str(lam): {k: round(float(v), 4) for k, v in row.items()} for lam, row in t.iterrows()}
                for m, t in self.tables.items()
            },
        }


def lambda_sweep(
    bench: Workbench,
    methods: Sequence[str] = SWEPT,
    lambdas: Sequence[float] = LAMBDA_GRID,
    per_task: int | None = 64,
    seed: int = 0,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> LambdaSweep:
    """Accuracy (percent) per task of each method in ``methods`` at every lambda, on ``per_task`` images of every
    task (None: all). ``chosen`` holds the lambda of each method's merge in the workbench (else its default)."""
    params = params or {}
    data, heads = sample_data(bench.data(), per_task, seed), bench.heads()
    base = bench.zoo.base_state
    tables, chosen = {}, {}
    at_zero: dict[str, float] | None = None  # every method at lambda 0 is the pretrained tower: scored once
    for method in methods:
        direction = merged_direction(bench, method, params.get(method))
        rows = {}
        for lam in lambdas:  # each lambda's tower is dropped as soon as it is scored (one held at a time)
            if float(lam) == 0.0 and at_zero is not None:
                rows[0.0] = dict(at_zero)
                continue
            rows[float(lam)] = with_average(accuracy_by_task(
                bench.zoo.visual_with(direction.apply_to(base, float(lam))), data, heads))
            if float(lam) == 0.0:
                at_zero = rows[0.0]
        del direction
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index.name = "lambda"
        tables[method] = table
        made = bench.merges.get(method)
        chosen[method] = float(made.params["lambda"]) if made is not None else float(
            get_method(method).resolve(params.get(method))["lambda"])
    return LambdaSweep([float(x) for x in lambdas], tables, chosen, per_task)


def per_task_lambdas(
    bench: Workbench, lambdas: Mapping[str, float], per_task: int | None = 64, seed: int = 0
) -> dict[str, float]:
    """Accuracy (percent) per task, and ``average``, of ``theta_0 + sum_t lambda_t tau_t`` on ``per_task`` images
    of every task; tasks missing from ``lambdas`` get 0 (their expert left out)."""
    unknown = sorted(set(lambdas) - set(bench.task_names))
    if unknown:
        raise MethodError(f"No expert for {unknown}: the zoo's tasks are {', '.join(bench.task_names)}.")
    vectors = lazy_task_vectors(bench.zoo.base_state, bench.zoo.experts)  # one tensor at a time
    direction = summed(list(vectors.values()), [float(lambdas.get(t, 0.0)) for t in vectors])
    tower = bench.zoo.visual_with(direction.apply_to(bench.zoo.base_state, 1.0))
    return with_average(accuracy_by_task(tower, sample_data(bench.data(), per_task, seed), bench.heads()))
