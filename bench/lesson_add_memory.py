"""Memory and seconds of the lesson's step 2 (``/lesson_add``) on a zoo, loaded the way the app loads it (with
``--also``, steps 1, 3 and 4 too).

One process, as the app's server: the zoo through ``app.handlers.load_zoo`` (a session of its own, the app's shared
result cache in memory only, so nothing is read from an earlier run), then what step 2 computes, phase by phase:

- ``task_scores``: task arithmetic at the page's lambda on the lesson's sample (``app.lesson.task_scores``);
- ``sweep``: task arithmetic and TIES at every lambda from 0 to 1 (``app.analysis_tab.lambda_sweep_view``); inside
  it each method's merged direction (``wemoe.analysis.sweep.merged_direction``) and each lambda's evaluation are
  reported on their own;
- with ``--also meet,interfere,forget``: step 1 (every expert on every task), step 3 (the task vectors' cosines and
  sign conflicts after TIES' trim at the page's 20%) and step 4 (the base model minus half of one task's vector).

Each line gives the phase's seconds, its peak RSS (``VmHWM`` of ``/proc/self/status``, reset before the phase through
``/proc/self/clear_refs``) and the RSS after it. The last line is one JSON object.

    HF_HOME=~/.cache/merge-explorer/standin/full/hf HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \\
        python bench/lesson_add_memory.py --zoo vit-b-32-standin
    python bench/lesson_add_memory.py --zoo vit-b-32-standin-tiny     # seconds (the tests')
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT, ROOT / "bench"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

MB = 1e6


def proc_mb(key: str) -> float:
    """``key`` (``VmRSS``, ``VmHWM``) of this process's ``/proc/self/status`` in MB."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) * 1024 / MB


def reset_peak() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its RSS now; False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Recorder:
    """Phases measured one after another: seconds, peak RSS since the phase began and RSS after it."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.peak_mb = 0.0  # the process's peak over every phase

    @contextlib.contextmanager
    def phase(self, name: str, reset: bool = True) -> Iterator[None]:
        """Measure the ``with`` body as phase ``name`` (``reset``: its own peak, else the enclosing one's so far)."""
        self.peak_mb = max(self.peak_mb, proc_mb("VmHWM"))
        if reset:
            reset_peak()
        before, start, inner = proc_mb("VmRSS"), time.perf_counter(), len(self.rows)
        yield
        peak = max([proc_mb("VmHWM")] + [row["peak_mb"] for row in self.rows[inner:]])  # inner phases reset it
        row = {"phase": name, "seconds": round(time.perf_counter() - start, 2), "before_mb": round(before),
               "peak_mb": round(peak), "after_mb": round(proc_mb("VmRSS"))}
        self.peak_mb = max(self.peak_mb, row["peak_mb"])
        self.rows.append(row)
        print(f"{name:<28} {row['seconds']:>8.1f} s  peak {row['peak_mb']:>6} MB  before {row['before_mb']:>6} MB  "
              f"after {row['after_mb']:>6} MB", flush=True)


def watch_sweep(recorder: Recorder) -> None:
    """Report each merged direction and each lambda's evaluation of :func:`wemoe.analysis.sweep.lambda_sweep` as a
    phase of its own (the sweep's module functions wrapped)."""
    from wemoe.analysis import sweep

    direction, evaluate, whole = sweep.merged_direction, sweep.accuracy_by_task, sweep.lambda_sweep
    # the lambda's index in the sweep's grid; -1: not in a sweep (one lambda, step 2's own)
    count: dict[str, Any] = {"n": -1, "methods": 0, "grid": sweep.LAMBDA_GRID}

    def lambda_sweep(bench, *args, **kwargs):
        count["grid"] = tuple(kwargs.get("lambdas", args[1] if len(args) > 1 else sweep.LAMBDA_GRID))
        count["methods"] = 0
        try:
            return whole(bench, *args, **kwargs)
        finally:
            count["n"] = -1

    def merged_direction(bench, method, params=None):
        count["methods"] += 1  # lambda 0 is scored once, by the first method
        count["n"] = 1 if count["methods"] > 1 and count["grid"][0] == 0 else 0
        with recorder.phase(f"  direction {method}"):
            return direction(bench, method, params)

    def accuracy_by_task(tower, data, heads):
        swept = 0 <= count["n"] < len(count["grid"])
        label = f"  score lambda {count['grid'][count['n']]:g}" if swept else "  score (one model)"
        count["n"] += 1 if swept else 0
        with recorder.phase(label):  # RSS before: with this lambda's tower built
            return evaluate(tower, data, heads)

    sweep.lambda_sweep, sweep.merged_direction = lambda_sweep, merged_direction
    sweep.accuracy_by_task = accuracy_by_task


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Load the zoo as the app does, run step 2's computations phase by phase, print figures and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zoo", default="vit-b-32-standin",
                        help="vit-b-32-standin, vit-b-32-standin-tiny (bench/standin_zoo.py), pocket or a preset")
    parser.add_argument("--standin-dir", type=Path, default=None,
                        help="the stand-in's folder (default: $MERGE_EXPLORER_STANDIN_DIR/<size> or ~/.cache)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--lam", type=float, default=0.3, help="the page's lambda (step 2's slider)")
    parser.add_argument("--also", default="", help="more lesson steps, comma separated: meet, interfere, forget")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from standin_zoo import ZOO_SIZES, ensure_standin

    zoo = args.zoo
    if zoo in ZOO_SIZES:
        standin = ensure_standin(ZOO_SIZES[zoo], args.standin_dir, progress=print)
        if any(os.environ.get(k) != v for k, v in standin.env().items()):
            # the hub libraries read their cache and offline settings once, at import: start again with them set
            os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], {**os.environ, **standin.env()})
        zoo = standin.zoo
    from app import lesson, lesson_size
    from app.analysis_tab import lambda_sweep_view
    from app.session import AppConfig, Session, zoo_choices
    from app.shared import Shared
    from compute_rate import cpu_model

    zoos, default_zoo = zoo_choices(zoo)
    config = AppConfig(zoos=zoos, default_zoo=default_zoo, shared=Shared(cache_dir=None, memory_budget_mb=1e9))
    session = Session()
    recorder = Recorder()
    watch_sweep(recorder)
    also = [step.strip() for step in args.also.split(",") if step.strip()]
    unknown = sorted(set(also) - {"meet", "interfere", "forget"})
    if unknown:
        parser.error(f"--also: unknown steps {', '.join(unknown)} (meet, interfere, forget)")
    with recorder.phase("load (app.handlers.load_zoo)"):
        bench = lesson.bench_of(session, config)
    if "meet" in also:
        with recorder.phase("step 1 (lesson.meet)"):
            lesson.meet(session, config)
    with recorder.phase("task_scores (one lambda)"):
        scores = lesson.task_scores(session, dict.fromkeys(bench.task_names, args.lam))
    with recorder.phase("sweep (lambda_sweep_view)"):
        lambda_sweep_view(session, lesson_size.settings(config).sweep_step)  # the lesson's grid on this machine
    if "interfere" in also:
        with recorder.phase("step 3 (lesson.interfere)"):
            lesson.interfere(session, config)
    if "forget" in also:
        with recorder.phase("step 4 (lesson.forget)"):
            lesson.forget(session, config)
    summary = {"zoo": args.zoo, "cpu": cpu_model(), "threads": args.threads, "torch": torch.__version__,
               "peak_mb": round(recorder.peak_mb), "average": round(scores["average"], 2), "phases": recorder.rows}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
