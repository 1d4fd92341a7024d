"""How long each analysis view of the app (issue #20) takes to render on the pocket zoo: the figure, end to end.

A session like a student's: the pocket zoo loaded, task arithmetic, TIES and WEMoE merged, WEMoE adapted
``--steps`` steps. Then every view of "7. Analysis" is drawn through the app's own view functions
(``app.analysis_tab``: the library's numbers and the plotly figure), first call and again (``cold``: its lazy imports
and first-touch costs; ``warm``: what a second student pays); the robustness view once per corruption. The targets
of #20: each view under 3 s, the robustness table for every merge under one corruption under 20 s, a move of a
per-task lambda slider (re-scoring a sample of every task, ``per_task_lambdas``) under 2 s. The CPU model
comes from ``lscpu``; the last line printed is one JSON object.

    python bench/analysis_views.py                 # pocket zoo, 100 adaptation steps, 2 threads
    python bench/analysis_views.py --steps 2 --corruptions contrast   # what the test runs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import wemoe  # noqa: E402,F401  (before open_clip: the torchvision compatibility step)  # isort: skip
import torch  # noqa: E402

from dense_baseline import cpu_model  # noqa: E402

TARGET_S, ROBUSTNESS_TARGET_S, SLIDERS_TARGET_S = 3.0, 20.0, 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    from wemoe.tasks.corruptions import CORRUPTIONS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", default=None, help="pocket zoo folder (default: the shipped assets/pocket)")
    p.add_argument("--steps", type=int, default=100, help="WEMoE adaptation steps before the views")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--corruptions", default=",".join(CORRUPTIONS), help="comma list of corruptions to time")
    return p.parse_args(argv)


def _timed(view, *args) -> float:
    start = time.perf_counter()
    view(*args)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    """Time every view; print a table and, last, one JSON object."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from app import analysis_tab as tab
    from app.session import Session
    from wemoe.pocket import load_pocket_zoo
    from wemoe.workbench.workbench import Workbench

    session = Session()
    session.bench = Workbench(load_pocket_zoo(args.zoo) if args.zoo else load_pocket_zoo())
    for method in ("task_arithmetic", "ties", "wemoe"):
        session.bench.merge(method)
    for _ in session.bench.adapt("wemoe", steps=args.steps):
        pass
    session.bench.data()  # the test images, loaded once for every view (as the app has them after loading)
    image = session.bench.tasks[1].dataset("test")["image"][0]
    views = {
        "routing_patches": (tab.routing_patches_view, session, image, -1),
        "interference": (tab.interference_view, session, 20.0),
        "cross_accuracy": (tab.cross_accuracy_view, session),
        "lambda_sweep": (tab.lambda_sweep_view, session),
        "cost": (tab.cost_view, session),
        "per_task_lambdas": (
            tab.per_task_lambdas_view,
            session,
            *[0.3 + 0.05 * i for i in range(len(session.bench.task_names))],
        ),
    }
    seconds = {name: {"cold": _timed(*call), "warm": _timed(*call)} for name, call in views.items()}
    corruptions = [c for c in args.corruptions.split(",") if c]
    robustness = {c: _timed(tab.robustness_view, session, c, 3) for c in corruptions}
    result = {
        "cpu": cpu_model(),
        "threads": args.threads,
        "zoo": "pocket",
        "per_task": tab.PER_TASK,
        "adapt_steps": args.steps,
        "models": ["pretrained", *session.bench.merges],
        "seconds": seconds,
        "robustness_seconds": robustness,
        "target_s": TARGET_S,
        "robustness_target_s": ROBUSTNESS_TARGET_S,
        "sliders_target_s": SLIDERS_TARGET_S,
        "all_within_target": all(v["cold"] < TARGET_S for v in seconds.values())
        and all(v < ROBUSTNESS_TARGET_S for v in robustness.values())
        and seconds["per_task_lambdas"]["warm"] < SLIDERS_TARGET_S,
        "slowest_view_s": max(max(v.values()) for v in seconds.values()),
        "slowest_robustness_s": max(robustness.values(), default=0.0),
    }
    print(f"{result['cpu']}, {args.threads} threads, pocket zoo, {tab.PER_TASK} test images per task per view")
    for name, times in seconds.items():
        print(f"  {name:16s} cold {times['cold']:6.2f} s   warm {times['warm']:6.2f} s")
    for name, value in robustness.items():
        print(f"  robustness {name:18s} {value:6.2f} s  (pretrained and {len(session.bench.merges)} merges)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
