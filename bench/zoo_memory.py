"""Peak RSS of a real-sized zoo loaded from a local Hugging Face cache: load, merges, adaptation, expert evaluation.

The zoo is the stand-in of ``bench/standin_zoo.py``: what the ``vit-b-32-8tasks`` preset downloads (open_clip's
``timm/vit_base_patch32_clip_224.openai`` base and the eight ``tanganke/clip-vit-base-patch32_<task>``
CLIPVisionModel experts) in the hub's layout, random (seeded; each expert = base image tower + 1% noise per tensor),
built once and kept (``$MERGE_EXPLORER_STANDIN_DIR`` or ~/.cache/merge-explorer/standin). Every phase runs in a fresh
process with ``HF_HOME`` pointed at it and ``HF_HUB_OFFLINE=1``, and reads its peak RSS (``VmHWM`` in
``/proc/self/status``):

- ``load``: ``load_zoo`` on the preset, then one pass reading every weight (memory-mapped pages count once touched);
- ``task_arithmetic``, ``ties``, ``wemoe``: the load, then that merge (the method's defaults);
- ``adapt``: the load, the WEMoE merge and ``--steps`` adaptation steps (``--per-task`` images per task and step);
- ``experts``: the load, then evaluating ``pretrained`` and ``experts`` (what ``table --methods pretrained,experts``
  does).

Tasks are small synthetic ones named after the paper's (``--images`` random images per task, ``--classes`` classes),
so no text heads of the real class lists are computed. "The towers' own size" is the base CLIP (image and text
tower) plus the experts' image towers in float32: what a zoo must hold. ``--tiny`` runs the tiny stand-in (the same
layout, a 2-layer tower) end to end in seconds (the tests' mode).

    python bench/zoo_memory.py                       # ViT-B/32, 8 experts (the stand-in built first when missing)
    python bench/zoo_memory.py --cache-dir /tmp/standin-full
    python bench/zoo_memory.py --tiny
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT, ROOT / "bench"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import torch  # noqa: E402

from standin_zoo import StandIn, ensure_standin, synthetic_tasks  # noqa: E402

PHASES = ("load", "task_arithmetic", "ties", "wemoe", "adapt", "experts")
MB = 1e6


# ---------------------------------------------------------------------------------------------------------------
# One phase, in its own process


def proc_status() -> dict[str, float]:
    """``VmRSS``, ``VmHWM``, ``RssAnon`` and ``RssFile`` of this process in MB (Linux ``/proc/self/status``)."""
    text = Path("/proc/self/status").read_text()
    return {key: int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) * 1024 / MB
            for key in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}


def run_phase(phase: str, spec: str, args: argparse.Namespace) -> dict:
    """Load the zoo, run ``phase``, return RSS figures (MB) and the towers' own size."""
    torch.set_num_threads(args.threads)
    from wemoe.loading import load_zoo
    from wemoe.workbench.workbench import Workbench

    start = proc_status()
    t0 = time.perf_counter()
    zoo = load_zoo(spec)
    after_load = proc_status()
    checksum = 0.0  # read every weight: a memory-mapped page is resident only once touched
    for state in [zoo.clip.state_dict(), *zoo.experts.values()]:
        checksum += sum(float(v.float().sum()) for v in state.values())
    touched = proc_status()
    load_seconds = time.perf_counter() - t0
    base_bytes = sum(v.numel() * v.element_size() for v in zoo.clip.state_dict().values())
    visual_bytes = sum(v.numel() * v.element_size() for v in zoo.clip.visual.state_dict().values())
    expert_bytes = sum(v.numel() * v.element_size() for s in zoo.experts.values() for v in s.values())
    result = {
        "phase": phase, "start_mb": start["VmRSS"], "after_load_mb": after_load["VmRSS"],
        "after_touch_mb": touched["VmRSS"], "after_touch_anon_mb": touched["RssAnon"],
        "after_touch_file_mb": touched["RssFile"], "load_seconds": round(load_seconds, 1),
        "towers_mb": (base_bytes + expert_bytes) / MB, "image_towers_mb": (visual_bytes + expert_bytes) / MB,
        "experts": len(zoo.experts),
    }
    if phase != "load":
        size = zoo.clip.visual.image_size[0]
        tasks = synthetic_tasks(zoo.task_names, args.classes, args.images, min(size, 64))
        with tempfile.TemporaryDirectory() as heads:
            bench = Workbench(zoo, tasks=tasks, cache_dir=heads)
            t1 = time.perf_counter()
            if phase == "experts":
                bench.evaluate(["pretrained", "experts"])
            else:
                bench.merge(phase if phase in ("task_arithmetic", "ties") else "wemoe")
                if phase == "adapt":
                    for _ in bench.adapt("wemoe", steps=args.steps, per_task=args.per_task):
                        pass
            result["phase_seconds"] = round(time.perf_counter() - t1, 1)
    result["peak_mb"] = proc_status()["VmHWM"]
    return result


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` prints it."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    match = re.search(r"^Model name:\s+(.+)$", text, re.M)
    return match.group(1).strip() if match else "unknown"


def _child_env(standin: StandIn) -> dict[str, str]:
    """The environment of a phase: the stand-in as the Hugging Face home, offline."""
    return {**os.environ, **standin.env(), "GRADIO_ANALYTICS_ENABLED": "False"}


def main(argv: list[str] | None = None) -> dict:
    """Build the cache, run every phase in a fresh process, print the table and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", type=Path,
                        help="the stand-in's folder (default: $MERGE_EXPLORER_STANDIN_DIR/<size> or ~/.cache)")
    parser.add_argument("--tiny", action="store_true", help="a tiny architecture (seconds; for tests)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, of {', '.join(PHASES)}")
    parser.add_argument("--steps", type=int, default=10, help="adaptation steps")
    parser.add_argument("--per-task", type=int, default=2, help="images per task per adaptation step")
    parser.add_argument("--images", type=int, default=4, help="test images per task")
    parser.add_argument("--classes", type=int, default=4, help="classes per synthetic task")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in each phase")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:  # a child: one phase, one JSON line
        print(json.dumps(run_phase(args.phase, args.spec, args)))
        return {}
    phases = [p for p in args.phases.split(",") if p]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        parser.error(f"unknown phases {unknown}; known: {', '.join(PHASES)}")
    t0 = time.perf_counter()
    standin = ensure_standin("tiny" if args.tiny else "full", args.cache_dir, progress=print)
    build_seconds = time.perf_counter() - t0
    results = []
    for phase in phases:
        command = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--spec", standin.zoo,
                   "--steps", str(args.steps), "--per-task", str(args.per_task), "--images", str(args.images),
                   "--classes", str(args.classes), "--threads", str(args.threads)]
        done = subprocess.run(command, env=_child_env(standin), capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            raise SystemExit(f"phase {phase} failed (exit {done.returncode})")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    towers = results[0]["towers_mb"]
    image_towers = results[0]["image_towers_mb"]
    model = "tiny" if args.tiny else "ViT-B-32"
    print(f"zoo: {model}, base + {results[0]['experts']} experts from a local hub cache (HF_HUB_OFFLINE=1); "
          f"cache ready in {build_seconds:.0f} s")
    print(f"towers' own size (float32): {towers:.0f} MB = base CLIP (image + text tower) + experts' image towers; "
          f"image towers alone {image_towers:.0f} MB")
    print(f"CPU: {cpu_model()}, torch {torch.__version__}, {args.threads} threads")
    print(f"{'phase':<16} {'peak MB':>8} {'x towers':>8} {'x image':>8} {'after load':>10} {'seconds':>8}")
    for r in results:
        seconds = r["load_seconds"] + r.get("phase_seconds", 0.0)
        print(f"{r['phase']:<16} {r['peak_mb']:>8.0f} {r['peak_mb'] / towers:>8.2f} {r['peak_mb'] / image_towers:>8.2f}"
              f" {r['after_touch_mb']:>10.0f} {seconds:>8.1f}")
    print("(peak: VmHWM of a fresh process that loads the zoo, reads every weight, then runs the phase; after load: "
          "RSS once every weight was read)")
    summary = {
        "model": model, "experts": results[0]["experts"], "towers_mb": round(towers, 1),
        "image_towers_mb": round(image_towers, 1), "cpu": cpu_model(), "torch": torch.__version__,
        "threads": args.threads, "steps": args.steps, "per_task": args.per_task,
        "phases": {r["phase"]: {"peak_mb": round(r["peak_mb"], 1), "ratio": round(r["peak_mb"] / towers, 3),
                                "ratio_image_towers": round(r["peak_mb"] / image_towers, 3),
                                "after_load_mb": round(r["after_touch_mb"], 1),
                                "seconds": round(r["load_seconds"] + r.get("phase_seconds", 0.0), 1)}
                   for r in results},
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
