"""The memory planner's estimates (``wemoe/zoo/memory_plan.py``) against measured merges on another model size and
other task counts than the ViT-B/32 eight-task zoo they were calibrated on.

For each number of experts and each method, a fresh process builds a random open_clip ViT (``--width``,
``--layers``; 224 px, patch 32) with that many in-memory experts (base + 1% noise), reads its RSS, merges, and reads
its peak (``VmHWM``). The merge's own memory (peak - RSS before) is compared with the planner's
:func:`~wemoe.zoo.memory_plan.merge_bytes`. The zoo's load is not compared (in-memory experts, not the hub files).

    python bench/memory_plan_check.py                          # width 512, 6 blocks, 4 and 12 experts
    python bench/memory_plan_check.py --tasks 2,4 --width 64 --layers 2     # tiny (the tests' mode)
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MB = 1e6


def status(key: str) -> float:
    """``VmRSS`` or ``VmHWM`` of this process, in MB (Linux)."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) * 1024 / MB


def model_config(width: int, layers: int) -> dict:
    """A ViT CLIP of this width and depth (224 px, patch 32, heads of 64), a one-block text tower."""
    return {"embed_dim": 256, "quick_gelu": True,
            "vision_cfg": {"image_size": 224, "patch_size": 32, "width": width, "layers": layers, "head_width": 64},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}


def measure(experts: int, method: str, width: int, layers: int) -> dict:
    """In this process: build the zoo, merge with ``method``, return the merge's measured and estimated MB."""
    import torch

    import wemoe  # noqa: F401  (its torchvision shim, before open_clip)
    from wemoe.methods import get_method
    from wemoe.zoo.clip_models import create_clip
    from wemoe.zoo.memory_plan import kind_of, merge_bytes, shape_of_zoo
    from wemoe.zoo.zoo import Zoo

    torch.set_num_threads(1)
    torch.manual_seed(0)
    clip, preprocess, tokenizer = create_clip(f"memory-plan-check-{width}-{layers}",
                                              model_config=model_config(width, layers))
    base = clip.visual.state_dict()
    experts_state = {f"task{i}": {k: v + 0.01 * torch.randn_like(v) for k, v in base.items()} for i in range(experts)}
    zoo = Zoo(name="check", clip=clip, experts=experts_state, preprocess=preprocess, tokenizer=tokenizer)
    before = status("VmRSS")
    get_method(method)(zoo)
    measured = status("VmHWM") - before
    estimated = merge_bytes(shape_of_zoo(zoo), kind_of(method)) / MB
    return {"experts": experts, "method": method, "measured_mb": round(measured, 1),
            "estimated_mb": round(estimated, 1), "ratio": round(estimated / measured, 3) if measured > 0 else None,
            "tower_mb": round(sum(v.numel() for v in base.values()) * 4 / MB, 4)}


def main(argv: list[str] | None = None) -> list[dict]:
    """Every (experts, method) in a fresh process; print a table and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="4,12", help="numbers of experts, comma-separated")
    parser.add_argument("--methods", default="task_arithmetic,wemoe", help="merge methods, comma-separated")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child: "experts,method"
    args = parser.parse_args(argv)
    if args.one:
        experts, method = args.one.split(",")
        print(json.dumps(measure(int(experts), method, args.width, args.layers)))
        return []
    rows = []
    for experts in [int(t) for t in args.tasks.split(",") if t]:
        for method in [m for m in args.methods.split(",") if m]:
            done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", f"{experts},{method}",
                                   "--width", str(args.width), "--layers", str(args.layers)],
                                  capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                sys.stderr.write(done.stderr)
                raise SystemExit(f"{method} with {experts} experts failed (exit {done.returncode})")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"ViT width {args.width}, {args.layers} blocks; one tower {rows[0]['tower_mb']} MB (float32)")
    print(f"{'experts':>7} {'method':<18} {'measured MB':>11} {'estimated MB':>12} {'est/meas':>8}")
    for r in rows:
        print(f"{r['experts']:>7} {r['method']:<18} {r['measured_mb']:>11.1f} {r['estimated_mb']:>12.1f} "
              f"{r['ratio'] if r['ratio'] is not None else '-':>8}")
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
