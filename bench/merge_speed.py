"""Merge time per method on a ViT-B/32-shaped random zoo: what each registered method costs to build.

The zoo is open_clip's ViT-B/32 image tower (12 blocks, width 768, 32 px patches at 224 px) with random weights and T
experts = base + small random task vectors in every tensor, drawn from a local ``torch.Generator``. Each method's
``merge`` is timed once (task vectors, the method's own work, the merged tower); for an adaptive method (AdaMerging,
WEMoE) that is building the untrained model, not adapting it. The CPU model comes from ``lscpu``; the last line
printed is one JSON object: ``{"cpu": ..., "threads": ..., "zoo": {...}, "seconds": {method: s}}``.

    python bench/merge_speed.py                          # every method, ViT-B/32, T = 8, 2 threads
    python bench/merge_speed.py --methods tsv_m,wudi --layers 2
Tiny run (the test): ``--layers 1 --width 64 --image-size 32 --patch-size 16 --experts 3 --wudi-steps 5``.
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
import open_clip  # noqa: E402
import torch  # noqa: E402

from dense_baseline import cpu_model  # noqa: E402
from wemoe.methods import get_method, list_methods  # noqa: E402
from wemoe.zoo.zoo import Zoo  # noqa: E402

TINY_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags; the defaults are ViT-B/32 with T = 8 experts on 2 threads."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=12, help="transformer blocks in the image tower")
    p.add_argument("--width", type=int, default=768, help="token width (heads = width // 64)")
    p.add_argument("--patch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--experts", type=int, default=8, help="T, the number of experts")
    p.add_argument("--methods", default="all", help="comma list of registered methods, or all")
    p.add_argument("--wudi-steps", type=int, default=300, help="WUDI's Adam steps per matrix (its default: 300)")
    p.add_argument("--tv-scale", type=float, default=0.01, help="task vector size relative to each tensor's std")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def random_zoo(layers: int, width: int, patch_size: int, image_size: int, experts: int, tv_scale: float,
               seed: int) -> Zoo:
    """An open_clip CLIP with random image-tower weights and ``experts`` noisy copies, all from local generators."""
    vision = {"image_size": image_size, "layers": layers, "width": width, "patch_size": patch_size, "head_width": 64}
    clip = open_clip.CLIP(embed_dim=512, vision_cfg=vision, text_cfg=TINY_TEXT).eval()
    generator = torch.Generator().manual_seed(seed)
    base = {k: torch.randn(v.shape, generator=generator) * 0.02 if torch.is_floating_point(v) else v
            for k, v in clip.visual.state_dict().items()}
    clip.visual.load_state_dict(base)
    tasks = {}
    for t in range(experts):
        tasks[f"task{t}"] = {k: v + torch.randn(v.shape, generator=generator) * tv_scale * 0.02
                             if torch.is_floating_point(v) else v.clone() for k, v in base.items()}
    return Zoo("merge-speed", clip, tasks, preprocess=lambda image: image, tokenizer=lambda texts: texts)


def method_params(name: str, args: argparse.Namespace) -> dict:
    """The parameters a method is timed with: its defaults, WUDI's steps from ``--wudi-steps``."""
    return {"steps": args.wudi_steps} if name == "wudi" else {}


def measure(zoo: Zoo, methods: list[str], args: argparse.Namespace) -> dict[str, float]:
    """Seconds of one ``merge`` per method, each logged to stderr as it finishes."""
    seconds = {}
    for name in methods:
        start = time.perf_counter()
        model = get_method(name)(zoo, **method_params(name, args))
        seconds[name] = round(time.perf_counter() - start, 3)
        del model
        print(f"{name}: {seconds[name]:.2f} s", file=sys.stderr, flush=True)
    return seconds


def main(argv: list[str] | None = None) -> dict:
    """Build the zoo, time every requested method, print the CPU model, a table and (last) the JSON result."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = list_methods() if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    for name in methods:
        get_method(name).resolve(method_params(name, args))  # fail before any work
    zoo = random_zoo(args.layers, args.width, args.patch_size, args.image_size, args.experts, args.tv_scale, args.seed)
    cpu = cpu_model()
    print(f"CPU: {cpu} ({args.threads} threads)")
    seconds = measure(zoo, methods, args)
    for name, value in seconds.items():
        print(f"{name:24s} {value:9.2f} s")
    result = {
        "cpu": cpu,
        "threads": args.threads,
        "torch": torch.__version__,
        "zoo": {"layers": args.layers, "width": args.width, "patch_size": args.patch_size,
                "image_size": args.image_size, "experts": args.experts, "wudi_steps": args.wudi_steps},
        "seconds": seconds,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
