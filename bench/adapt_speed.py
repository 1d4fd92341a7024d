"""WEMoE test-time adaptation speed on the pocket zoo: seconds per step, for all the steps, and images per second.

Merges the pocket zoo with ``wemoe`` (every block upscaled) and runs ``wemoe.adaptation.adapt.adapt`` (entropy
minimisation, ``--per-task`` images of every task per step) exactly as the app and the CLI do; the test images are
loaded and the heads built before the clock starts. Target: 300 steps <= 60 s on 2 CPU threads.

    python bench/adapt_speed.py                 # 300 steps, 2 threads
    python bench/adapt_speed.py --steps 20      # a quick look
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import wemoe  # noqa: E402,F401  (before open_clip)  # isort: skip
import torch  # noqa: E402

from wemoe.tasks.registry import Task  # noqa: E402
from wemoe.workbench.workbench import Workbench  # noqa: E402
from wemoe.zoo.zoo import Zoo  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--per-task", type=int, default=16, help="images of each task in every step's batch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--samples", type=int, default=None, help="test images loaded per task (default: all)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def measure(zoo: Zoo, tasks: Sequence[Task] | None, steps: int, per_task: int = 16, lr: float = 1e-3,
            samples: int | None = None, device: str = "cpu") -> dict:
    """Merge ``zoo`` with wemoe, adapt it ``steps`` steps and return the timings (data and heads are ready first)."""
    bench = Workbench(zoo, tasks, samples=samples)
    start = time.perf_counter()
    bench.data()
    bench.heads()
    prepare_s = time.perf_counter() - start
    merge = bench.merge("wemoe")
    step_s: list[float] = []
    last = 0.0
    for record in bench.adapt("wemoe", steps=steps, lr=lr, per_task=per_task, device=device):
        step_s.append(record.elapsed - last)
        last = record.elapsed
    images_per_step = per_task * len(bench.task_names)
    median = statistics.median(step_s)
    return {
        "zoo": zoo.name, "tasks": len(bench.task_names), "steps": steps, "per_task": per_task,
        "images_per_step": images_per_step, "device": device, "threads": torch.get_num_threads(),
        "prepare_s": prepare_s, "merge_s": merge.merge_seconds, "adapt_s": last,
        "step_ms_median": median * 1000, "step_ms_first": step_s[0] * 1000,
        "images_per_s": images_per_step / median, "first_loss": merge.history[0].loss,
        "last_loss": merge.history[-1].loss,
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
    }


def main(argv: list[str] | None = None) -> dict:
    """Entry point: loads the pocket zoo, prints a summary, then the figures as one JSON line (also returned)."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from wemoe.pocket import load_pocket_zoo

    result = measure(load_pocket_zoo(), None, args.steps, args.per_task, args.lr, args.samples, args.device)
    print(f"{result['zoo']}: {result['tasks']} tasks x {result['per_task']} images per step, {result['device']} "
          f"({result['threads']} threads)\n"
          f"  {result['steps']} steps: {result['adapt_s']:.1f} s (target <= 60 s for 300), "
          f"{result['step_ms_median']:.1f} ms per step (median; first {result['step_ms_first']:.0f} ms), "
          f"{result['images_per_s']:.0f} images/s\n"
          f"  entropy loss {result['first_loss']:.3f} -> {result['last_loss']:.3f}; "
          f"data+heads {result['prepare_s']:.1f} s, merge {result['merge_s']:.2f} s")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
