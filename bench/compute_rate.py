"""This machine's dense GEMM rate next to the rate a zoo's evaluation and classification reach (GFLOPS).

- ``gemm_gflops``: ``torch.matmul`` in float32 on the four matrix shapes of a ViT-B/32 block at batch 16 (800 tokens:
  q/k/v 768->2304, out 768->768, c_fc 768->3072, c_proj 3072->768), their FLOPs over their median seconds.
- ``eval_gflops``: the library's evaluation (``Workbench.evaluate``) of the task-arithmetic merge on ``--per-task``
  preprocessed test images per task: FLOPs of one image through the image tower x images / seconds.
- ``classify_gflops``: one new image classified by the library (``Workbench.classify``, the app's Classify: the
  pretrained tower, the task-arithmetic merge and every expert): FLOPs per image x towers / seconds (median of
  ``--images`` images). ``classify_shown_s``: the same with only what the page's compact table shows
  (``models="shown"``: the merge and the expert of the task), and ``classify_shown_with_wemoe_s`` beside
  ``classify_with_wemoe_s`` (the WEMoE merge, then the expert of its guess).

FLOPs of one image are counted from the zoo's image tower's shapes (a multiply-add counts 2: a ViT-B/32 image is
8.8 GFLOP; the "4.4 GFLOPs" usually quoted counts multiply-adds). The zoo loads through
``load_zoo`` (set ``HF_HOME`` for a stand-in, ``bench/standin_zoo.py``); its tasks are synthetic (a few classes, one
template), so no text heads of real class lists are computed: heads are a negligible part of a classification.

    python bench/compute_rate.py --zoo pocket
    python bench/compute_rate.py --gemm-only
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT, ROOT / "bench"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import torch  # noqa: E402

B32_TOKENS = 50 * 16  # a ViT-B/32 image is 49 patches + the class token; batch 16
B32_GEMMS = {"qkv": (768, 2304), "out": (768, 768), "c_fc": (768, 3072), "c_proj": (3072, 768)}


def gemm_gflops(rows: int = B32_TOKENS, runs: int = 7) -> dict[str, float]:
    """GFLOPS of ``torch.matmul`` on a ViT-B/32 block's four matrix shapes at ``rows`` tokens: each shape's and
    ``total`` (the block's FLOPs over the sum of the medians)."""
    generator = torch.Generator().manual_seed(0)
    rates, flops_sum, seconds_sum = {}, 0.0, 0.0
    for name, (inner, cols) in B32_GEMMS.items():
        x, w = torch.randn(rows, inner, generator=generator), torch.randn(inner, cols, generator=generator)
        torch.matmul(x, w)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            torch.matmul(x, w)
            times.append(time.perf_counter() - start)
        flops, seconds = 2.0 * rows * inner * cols, statistics.median(times)
        rates[name] = flops / seconds / 1e9
        flops_sum, seconds_sum = flops_sum + flops, seconds_sum + seconds
    rates["total"] = flops_sum / seconds_sum / 1e9
    return rates


def cpu_model() -> str:
    """``lscpu``'s model name ("unknown" without lscpu)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name:")),
                "unknown")


def image_flops(tower: torch.nn.Module) -> float:
    """FLOPs of one image through ``tower`` (an open_clip ViT image tower), a multiply-add counted as 2: the patch
    embedding, per block q/k/v, attention scores and mixing, the output projection and the MLP, and the final
    projection (layer norms, softmax and activations left out: under 1%). Counted from the shapes, as torch's flop
    counter misses the fused attention of ``nn.MultiheadAttention``."""
    side = tower.image_size[0] if isinstance(tower.image_size, (tuple, list)) else tower.image_size
    patch = tower.patch_size[0] if isinstance(tower.patch_size, (tuple, list)) else tower.patch_size
    width = tower.conv1.out_channels
    patches = (side // patch) ** 2
    tokens = patches + 1  # and the class token
    flops = 2.0 * patches * 3 * patch * patch * width
    for block in tower.transformer.resblocks:
        hidden = block.mlp.c_fc.out_features
        flops += 2.0 * tokens * width * (3 * width + width + 2 * hidden) + 4.0 * tokens * tokens * width
    if getattr(tower, "proj", None) is not None:
        flops += 2.0 * width * tower.proj.shape[1]
    return flops


def zoo_rates(zoo_name: str, per_task: int, images: int, classes: int = 10, wemoe_steps: int = 0) -> dict:
    """Load ``zoo_name`` and time the library's evaluation and classification on it (see the module's doc)."""
    import numpy as np
    from PIL import Image

    from standin_zoo import synthetic_tasks
    from wemoe.loading import load_zoo
    from wemoe.workbench.workbench import Workbench

    start = time.perf_counter()
    zoo = load_zoo(zoo_name)
    load_s = time.perf_counter() - start
    side = zoo.clip.visual.image_size[0]
    flops = image_flops(zoo.clip.visual)
    with tempfile.TemporaryDirectory(prefix="compute-rate-") as heads:
        bench = Workbench(zoo, tasks=synthetic_tasks(zoo.task_names, classes, per_task, side), cache_dir=heads)
        bench.data(), bench.heads()  # preprocessing and heads are not the towers' work
        bench.merge("task_arithmetic")
        bench.evaluate(["task_arithmetic"])  # once untimed: first-call allocations
        start = time.perf_counter()
        bench.evaluate(["task_arithmetic"])
        eval_s = time.perf_counter() - start
        evaluated = per_task * len(zoo.task_names)
        rng = np.random.default_rng(0)
        pictures = [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(images + 1)]
        times = []
        for picture in pictures:  # the first one untimed
            start = time.perf_counter()
            (result,) = bench.classify([picture])
            times.append(time.perf_counter() - start)
        towers = 2 + len(zoo.task_names)  # pretrained, task arithmetic, every expert
        classify_s = statistics.median(times[1:])
        shown_s = median_seconds(lambda p: bench.classify([p], zoo.task_names[0], models="shown"), pictures)
        wemoe = wemoe_figures(bench, pictures, wemoe_steps) if wemoe_steps else {}
    return wemoe | {"zoo": zoo_name, "load_s": round(load_s, 1), "flops_per_image": int(flops),
            "gflop_per_image": round(flops / 1e9, 4),
            "eval_images": evaluated, "eval_s": round(eval_s, 3),
            "eval_gflops": round(flops * evaluated / eval_s / 1e9, 1),
            "classify_towers": towers, "classify_s": round(classify_s, 4),
            "classify_gflops": round(flops * towers / classify_s / 1e9, 1),
            "classify_shown_towers": 2, "classify_shown_s": round(shown_s, 4)}


def median_seconds(classify: Any, pictures: list) -> float:
    """Median seconds of ``classify(picture)`` over ``pictures``, the first one untimed."""
    times = []
    for picture in pictures:
        start = time.perf_counter()
        classify(picture)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def wemoe_figures(bench: Any, pictures: list, steps: int) -> dict:
    """Seconds of the WEMoE merge, of each of ``steps`` adaptation steps at the app's defaults (the page's images
    per task, its IM loss) and of one classification with the WEMoE merge beside task arithmetic (its routers' guess
    of the task, as the app's Classify with "auto")."""
    from wemoe.adaptation.adapt import DEFAULT_PER_TASK

    start = time.perf_counter()
    bench.merge("wemoe")
    merge_s = time.perf_counter() - start
    step_s, last = [], time.perf_counter()
    for _ in bench.adapt("wemoe", steps=steps, per_task=DEFAULT_PER_TASK, loss="im"):
        now = time.perf_counter()
        step_s.append(now - last)
        last = now
    times = []
    for picture in pictures:  # the first one untimed (it computes the routers' task centroids)
        start = time.perf_counter()
        bench.classify([picture])
        times.append(time.perf_counter() - start)
    return {"wemoe_merge_s": round(merge_s, 1), "adapt_per_task": DEFAULT_PER_TASK,
            "adapt_step_s": [round(t, 2) for t in step_s],
            "classify_with_wemoe_s": round(statistics.median(times[1:]), 4),
            "classify_shown_with_wemoe_s": round(median_seconds(lambda p: bench.classify([p], models="shown"),
                                                                pictures), 4)}


def main(argv: list[str] | None = None) -> dict:
    """Measure and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zoo", default="pocket", help="what load_zoo is given")
    parser.add_argument("--per-task", type=int, default=16, help="test images per task evaluated")
    parser.add_argument("--images", type=int, default=3, help="images classified one at a time (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--gemm-only", action="store_true", help="only the GEMM rate")
    parser.add_argument("--wemoe-steps", type=int, default=0,
                        help="also time the WEMoE merge, this many adaptation steps at the app's defaults and a "
                             "classification with it (memory: a WEMoE merge of the zoo)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rates = {k: round(v, 1) for k, v in gemm_gflops().items()}
    result = {"cpu": cpu_model(), "threads": torch.get_num_threads(), "gemm_gflops": rates}
    if not args.gemm_only:
        result |= zoo_rates(args.zoo, args.per_task, args.images, wemoe_steps=args.wemoe_steps)
        total = result["gemm_gflops"]["total"]
        result["eval_share"] = round(result["eval_gflops"] / total, 3)
        result["classify_share"] = round(result["classify_gflops"] / total, 3)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
