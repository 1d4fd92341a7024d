"""Task arithmetic's lambda, picked by a sweep: what ``python -m wemoe table`` and the pocket build report."""

from __future__ import annotations

from typing import Any

from wemoe.workbench import Workbench

LAMBDA_SWEEP = tuple(round(0.1 * i, 1) for i in range(1, 11))
"""The lambdas tried: 0.1, 0.2, ..., 1.0."""


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
