"""Task arithmetic's lambda sweep (wemoe.analysis.sweep), shared by the CLI's table and the pocket build."""

from __future__ import annotations

import wemoe  # noqa: F401  (before open_clip)
from tests.helpers import tiny_task, tiny_zoo
from wemoe.analysis.sweep import best_task_arithmetic
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
