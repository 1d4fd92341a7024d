"""Task arithmetic's lambda sweep (wemoe.analysis.sweep), shared by the CLI's table and the pocket build."""

from __future__ import annotations

import pytest

import wemoe  # noqa: F401  (before open_clip)
from tests.helpers import tiny_task, tiny_zoo
from wemoe.analysis.sweep import LAMBDA_GRID, best_task_arithmetic, lambda_grid, lambda_sweep
from wemoe.workbench.workbench import Workbench


def test_the_sweep_keeps_the_best_lambda_and_drops_the_others():
    zoo = tiny_zoo(n_experts=2, noise=0.2)
    bench = Workbench(zoo, [tiny_task(name, n_classes=3, n_images=9, seed=i) for i, name in enumerate(zoo.task_names)])
    result = best_task_arithmetic(bench, lambdas=(0.1, 0.5, 1.0))
    sweep = {float(k): v for k, v in result["lambda_sweep"].items()}
    assert list(sweep) == [0.1, 0.5, 1.0]
    assert sweep[result["lambda"]] == max(sweep.values())
    assert list(bench.merges) == ["task_arithmetic"]  # the sweep's own merges are gone
    assert bench.merges["task_arithmetic"].params["lambda"] == result["lambda"]
    kept = float(bench.evaluate(["task_arithmetic"]).loc["task_arithmetic", "average"])
    assert round(kept, 2) == sweep[result["lambda"]]


def test_lambda_grids_from_0_to_1():
    assert lambda_grid(0.1) == LAMBDA_GRID
    assert lambda_grid(0.2) == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    with pytest.raises(ValueError, match="divides 1"):
        lambda_grid(0.3)


def test_lambda_0_is_scored_once_for_every_method(monkeypatch):
    """At lambda 0 task arithmetic and TIES are both the pretrained tower: a sized lesson's sweep of 6 lambdas sends
    the images through 11 towers, not 12."""
    from wemoe.analysis import sweep

    zoo = tiny_zoo(n_experts=2, noise=0.2)
    bench = Workbench(zoo, [tiny_task(name, n_classes=3, n_images=9, seed=i) for i, name in enumerate(zoo.task_names)])
    scored = []
    original = sweep.accuracy_by_task
    monkeypatch.setattr(sweep, "accuracy_by_task", lambda *a, **k: scored.append(1) or original(*a, **k))
    swept = lambda_sweep(bench, lambdas=lambda_grid(0.2), per_task=8)
    assert len(scored) == 11
    assert swept.tables["ties"].loc[0.0].to_dict() == swept.tables["task_arithmetic"].loc[0.0].to_dict()
