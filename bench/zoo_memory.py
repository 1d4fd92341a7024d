"""Peak RSS of a real-sized zoo loaded from a local Hugging Face cache: load, merges, adaptation, expert evaluation.

The script builds a cache in the hub's layout (``models--owner--name/{blobs,refs,snapshots}``) holding what the
``vit-b-32-8tasks`` preset downloads: open_clip's ``timm/vit_base_patch32_clip_224.openai`` base checkpoint and the
eight ``tanganke/clip-vit-base-patch32_<task>`` CLIPVisionModel experts (transformers 4.x key layout and
``config.json``), all random (seeded; each expert = base image tower + 1% noise per tensor). Then every phase runs in
a fresh process with ``HF_HUB_CACHE`` pointed at the cache and ``HF_HUB_OFFLINE=1``, and reads its peak RSS
(``VmHWM`` in ``/proc/self/status``):

- ``load``: ``load_zoo`` on the preset, then one pass reading every weight (memory-mapped pages count once touched);
- ``task_arithmetic``, ``wemoe``: the load, then that merge;
- ``adapt``: the load, the WEMoE merge and ``--steps`` adaptation steps (``--per-task`` images per task and step);
- ``experts``: the load, then evaluating ``pretrained`` and ``experts`` (what ``table --methods pretrained,experts``
  does).

Tasks are small synthetic ones named after the paper's (``--images`` random images per task, ``--classes`` classes),
so no dataset is needed. "The towers' own size" is the base CLIP (image and text tower) plus the experts' image
towers in float32: what a zoo must hold. ``--tiny`` runs a tiny architecture end to end in seconds (the tests' mode;
its base is a local checkpoint file instead of the open_clip tag).

    python bench/zoo_memory.py                       # ViT-B/32, 8 experts, cache in a temp dir (deleted after)
    python bench/zoo_memory.py --cache-dir /tmp/zoo-cache --keep-cache
    python bench/zoo_memory.py --tiny
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

PHASES = ("load", "task_arithmetic", "wemoe", "adapt", "experts")
BASE_REPO = "timm/vit_base_patch32_clip_224.openai"  # the openai tag's hf_hub entry in open_clip's pretrained.py
BASE_FILE = "open_clip_model.safetensors"  # what open_clip looks for first there
TINY_MODEL = "zoo-memory-tiny"
TINY_CONFIG = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "head_width": 32, "layers": 2},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
MB = 1e6


# ---------------------------------------------------------------------------------------------------------------
# Building the cache


def _hub_file(cache: Path, repo: str, name: str, data: bytes) -> None:
    """Write ``data`` as ``name`` of hub repo ``repo`` in the hub cache layout (blob + snapshot symlink + refs/main)."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(repo.encode()).hexdigest()
    blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    link = folder / "snapshots" / commit / name
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(blob, link.parent))


def open_clip_to_hf_vision(tower: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An open_clip image-tower state dict in a transformers 4.x ``CLIPVisionModel``'s keys (no projection)."""
    from wemoe.zoo.hf_convert import _LAYER_RENAMES, _RENAMES

    renames = {v: k for k, v in _RENAMES.items()}
    layer_renames = {v: k for k, v in _LAYER_RENAMES.items()}
    out = {}
    for key, value in tower.items():
        if key == "proj":
            continue
        if key in renames:
            out[f"vision_model.{renames[key]}"] = value
            continue
        match = re.match(r"^transformer\.resblocks\.(\d+)\.(.+)$", key)
        layer, rest = match.group(1), match.group(2)
        prefix = f"vision_model.encoder.layers.{layer}."
        if rest.startswith("attn.in_proj_"):
            kind = rest.removeprefix("attn.in_proj_")
            for part, chunk in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[f"{prefix}self_attn.{part}_proj.{kind}"] = chunk.contiguous()
        else:
            out[prefix + layer_renames[rest]] = value
    return out


def _hf_vision_config(clip: torch.nn.Module) -> dict:
    """The ``config.json`` of a CLIPVisionModel shaped like ``clip``'s image tower (QuickGELU, as OpenAI's)."""
    visual = clip.visual
    width = visual.conv1.out_channels
    blocks = visual.transformer.resblocks
    return {
        "architectures": ["CLIPVisionModel"],
        "model_type": "clip_vision_model",
        "hidden_act": "quick_gelu",
        "hidden_size": width,
        "intermediate_size": blocks[0].mlp.c_fc.out_features,
        "num_hidden_layers": len(blocks),
        "num_attention_heads": blocks[0].attn.num_heads,
        "image_size": visual.image_size[0],
        "patch_size": visual.patch_size[0],
        "num_channels": 3,
        "layer_norm_eps": 1e-5,
        "projection_dim": visual.proj.shape[1],
        "torch_dtype": "float32",
    }


def build_cache(cache: Path, tiny: bool, tasks: list[str], seed: int = 0) -> dict:
    """Write the base and one expert per task into ``cache`` (hub layout); return the zoo spec that loads them."""
    from safetensors.torch import save

    from wemoe.zoo.clip_models import create_clip

    torch.manual_seed(seed)
    if tiny:
        clip, _, _ = create_clip(TINY_MODEL, model_config=TINY_CONFIG)
    else:
        clip, _, _ = create_clip("ViT-B-32", quick_gelu=True)
    base = {k: v.contiguous() for k, v in clip.state_dict().items()}
    if tiny:
        base_path = cache / "tiny-base" / BASE_FILE
        base_path.parent.mkdir(parents=True, exist_ok=True)
        base_path.write_bytes(save(base))
    else:
        _hub_file(cache, BASE_REPO, BASE_FILE, save(base))
    config = json.dumps(_hf_vision_config(clip), indent=2).encode()
    tower = clip.visual.state_dict()
    experts = {}
    for i, task in enumerate(tasks):
        generator = torch.Generator().manual_seed(seed * 1000 + i + 1)
        state = {k: v + 0.01 * (v.std() if v.numel() > 1 else v.abs()) * torch.randn(v.shape, generator=generator)
                 for k, v in tower.items()}
        repo = f"tanganke/clip-vit-base-patch32_{task}" if not tiny else f"zoo-memory/tiny_{task}"
        _hub_file(cache, repo, "config.json", config)
        _hub_file(cache, repo, "model.safetensors", save(open_clip_to_hf_vision(state)))
        experts[task] = repo
        del state
    if tiny:
        return {"name": "zoo-memory-tiny", "model": TINY_MODEL, "model_config": TINY_CONFIG,
                "pretrained": str(base_path), "quick_gelu": True, "experts": experts}
    return {"name": "vit-b-32-8tasks"}  # the preset itself: its hub ids are the ones written above


# ---------------------------------------------------------------------------------------------------------------
# One phase, in its own process


def proc_status() -> dict[str, float]:
    """``VmRSS``, ``VmHWM``, ``RssAnon`` and ``RssFile`` of this process in MB (Linux ``/proc/self/status``)."""
    text = Path("/proc/self/status").read_text()
    return {key: int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) * 1024 / MB
            for key in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}


def synthetic_tasks(names: list[str], classes: int, images: int, size: int) -> list:
    """Tasks named ``names``, each ``classes`` classes and ``images`` random ``size``-px test images."""
    import datasets
    import numpy as np
    from PIL import Image

    from wemoe.tasks.registry import Task

    out = []
    for i, name in enumerate(names):
        rng = np.random.default_rng(i)
        classnames = [f"{name} class {c}" for c in range(classes)]
        data = datasets.Dataset.from_dict(
            {"image": [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(images)],
             "label": [j % classes for j in range(images)]},
            features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classnames)}),
        )
        out.append(Task(name=name, classnames=tuple(classnames), templates=("a photo of a {c}.",),
                        load_split=lambda split, d=data: d, description="synthetic", source="memory"))
    return out


def run_phase(phase: str, spec: dict, args: argparse.Namespace) -> dict:
    """Load the zoo, run ``phase``, return RSS figures (MB) and the towers' own size."""
    torch.set_num_threads(args.threads)
    from wemoe.loading import load_zoo
    from wemoe.workbench.workbench import Workbench

    start = proc_status()
    t0 = time.perf_counter()
    zoo = load_zoo(spec["name"] if set(spec) == {"name"} else spec)
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
                bench.merge("task_arithmetic" if phase == "task_arithmetic" else "wemoe")
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


def _child_env(cache: Path) -> dict[str, str]:
    """The environment of a phase: the built cache as the hub cache, offline."""
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    return env


def main(argv: list[str] | None = None) -> dict:
    """Build the cache, run every phase in a fresh process, print the table and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", type=Path, help="where to build the hub cache (default: a temp dir)")
    parser.add_argument("--keep-cache", action="store_true", help="keep the cache (default: delete a temp one)")
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
        print(json.dumps(run_phase(args.phase, json.loads(args.spec), args)))
        return {}
    phases = [p for p in args.phases.split(",") if p]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        parser.error(f"unknown phases {unknown}; known: {', '.join(PHASES)}")
    from wemoe.zoo.presets import PAPER_TASKS

    temp = None
    cache = args.cache_dir
    if cache is None:
        temp = tempfile.mkdtemp(prefix="zoo-memory-")
        cache = Path(temp)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        marker = cache / "zoo-memory.json"  # a cache built before with the same settings is reused
        built = json.loads(marker.read_text()) if marker.is_file() else {}
        if built.get("tiny") == args.tiny and "spec" in built:
            spec = built["spec"]
        else:
            spec = build_cache(cache, args.tiny, list(PAPER_TASKS))
            marker.write_text(json.dumps({"tiny": args.tiny, "spec": spec}))
        build_seconds = time.perf_counter() - t0
        results = []
        for phase in phases:
            command = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--spec", json.dumps(spec),
                       "--steps", str(args.steps), "--per-task", str(args.per_task), "--images", str(args.images),
                       "--classes", str(args.classes), "--threads", str(args.threads)]
            done = subprocess.run(command, env=_child_env(cache), capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                sys.stderr.write(done.stderr)
                raise SystemExit(f"phase {phase} failed (exit {done.returncode})")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        if temp is not None and not args.keep_cache:
            shutil.rmtree(temp, ignore_errors=True)
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
