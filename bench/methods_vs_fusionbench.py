"""Our TSV-M, Iso-C, Iso-CTS, WUDI and EMR-Merging against FusionBench's implementations on the same random weights.

The zoo is ``bench/merge_speed.py``'s: open_clip ViT-B/32-shaped image-tower blocks (attention ``in_proj`` 2304x768,
``out_proj`` 768x768, MLP ``c_fc`` 3072x768 and ``c_proj`` 768x3072, biases, LayerNorms, the patch convolution, the
positional embedding and the projection) with random weights and T = 8 experts = base + random task vectors. Each
method merges it both ways, ours through the registered method (``get_method(name)(zoo)``), FusionBench's through its
merging function on the same task-vector state dicts (alpha / scaling factor 1.0), and the script prints the max abs
difference of the merged weights per method (EMR: of every task's model, theta_0 + rescaler_t mask_t tau_uni).

FusionBench's WUDI runs autograd through T products of [m, n] x [n, m] per step (minutes per step on a 2-core
machine at full width), so it is compared at ``--wudi-steps`` (20 by default) on the same matrices; ours runs the same
Adam steps on the closed-form gradient. Defaults: one block (every distinct matrix shape; more blocks repeat them).

Run it in the FusionBench venv (``bash bench/setup_fusionbench.sh`` makes it):
    bench/.venv-fusionbench/bin/python bench/methods_vs_fusionbench.py
Tiny run (the test): ``--width 64 --image-size 32 --patch-size 16 --experts 3 --wudi-steps 5``.
The last line printed is one JSON object mapping each compared method's registry name to its max abs difference.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from merge_speed import cpu_model, random_zoo  # noqa: E402  (also puts the repository on sys.path; first)  # isort: skip

import torch  # noqa: E402

from wemoe.methods import get_method  # noqa: E402
from wemoe.task_vector import task_vectors  # noqa: E402
from wemoe.zoo.zoo import Zoo  # noqa: E402

METHODS = ("tsv_m", "iso_c", "iso_cts", "wudi", "emr_merging")
StateDict = dict[str, torch.Tensor]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags; the defaults are one ViT-B/32 block with T = 8."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=1, help="transformer blocks (every distinct shape is in one)")
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--patch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--tv-scale", type=float, default=0.5,
                   help="task vector std relative to the weights' 0.02 (0.5: task vectors of std 0.01)")
    p.add_argument("--wudi-steps", type=int, default=20, help="Adam steps per matrix for WUDI, both sides")
    p.add_argument("--common-fraction", type=float, default=0.8, help="Iso-CTS's common subspace fraction")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _fusionbench(name: str, vectors: list[StateDict], args: argparse.Namespace) -> StateDict | list[StateDict]:
    """FusionBench's merged task vector (EMR: every task's own task vector), its prints sent to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        if name == "tsv_m":
            from fusion_bench.method.task_singular_vector.utils.TSVM_utils import compute_and_sum_svd_mem_reduction

            return compute_and_sum_svd_mem_reduction(vectors, exclude_keys=[], accelerator="cpu")
        if name == "iso_c":
            from fusion_bench.method.isotropic_merging.iso_utils import iso_c

            return iso_c(vectors, accelerator="cpu")
        if name == "iso_cts":
            from fusion_bench.method.isotropic_merging.iso_utils import iso_cts

            return iso_cts(vectors, common_space_fraction=args.common_fraction, accelerator="cpu")
        if name == "wudi":
            from fusion_bench.method.wudi.wudi import wudi_merging

            merged = wudi_merging(vectors, accelerator="cpu", iter_num=args.wudi_steps)
            return {k: v.detach() for k, v in merged.items()}
        if name == "emr_merging":
            from fusion_bench.method.emr_merging.utils import emr_merge

            unified, masks, rescalers = emr_merge(vectors)
            return [{k: unified[k] * masks[k][t] * rescalers[t] for k in unified} for t in range(len(vectors))]
    raise ValueError(f"no FusionBench counterpart for {name!r}")


def _ours(name: str, zoo: Zoo, args: argparse.Namespace) -> StateDict | list[StateDict]:
    """Our merged weights through the registered method (EMR: every task's own weights)."""
    params = {"tsv_m": {"alpha": 1.0}, "iso_c": {"alpha": 1.0},
              "iso_cts": {"alpha": 1.0, "common_fraction": args.common_fraction},
              "wudi": {"steps": args.wudi_steps}, "emr_merging": {}}[name]
    model = get_method(name)(zoo, **params)
    if name == "emr_merging":
        return [model.task_state(task) for task in zoo.task_names]
    return model.state_dict()


def _max_diff(ours: StateDict, base: StateDict, theirs_tv: StateDict) -> float:
    return max(float((ours[k].double() - (base[k].double() + theirs_tv[k].double())).abs().max()) for k in theirs_tv)


def compare(name: str, zoo: Zoo, args: argparse.Namespace) -> dict[str, float]:
    """Max abs difference of the merged weights (ours vs FusionBench's) and both sides' seconds."""
    base = zoo.base_state
    vectors = [{k: v.clone() for k, v in tv.vector.items()} for tv in task_vectors(base, zoo.experts).values()]
    timed: dict[str, float] = {}

    def run(side: str, compute: Callable[[], object]) -> object:
        start = time.perf_counter()
        out = compute()
        timed[side] = round(time.perf_counter() - start, 3)
        return out

    ours = run("ours_s", lambda: _ours(name, zoo, args))
    theirs = run("fusionbench_s", lambda: _fusionbench(name, vectors, args))
    if name == "emr_merging":
        diff = max(_max_diff(o, base, t) for o, t in zip(ours, theirs, strict=True))
    else:
        diff = _max_diff(ours, base, theirs)
    scale = max(float(v.abs().max()) for tv in vectors for v in tv.values())
    return {"max_abs_diff": diff, "relative_to_max_tv": diff / scale, **timed}


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Compare every requested method; print a table, then (last) the JSON of max abs differences by method."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    zoo = random_zoo(args.layers, args.width, args.patch_size, args.image_size, args.experts, args.tv_scale, args.seed)
    print(f"CPU: {cpu_model()} ({args.threads} threads); {args.layers} block(s), width {args.width}, "
          f"T = {args.experts}, WUDI steps {args.wudi_steps}")
    rows = {}
    for name in methods:
        rows[name] = compare(name, zoo, args)
        row = rows[name]
        print(f"{name:12s} max abs diff {row['max_abs_diff']:.2e} (relative {row['relative_to_max_tv']:.1e}); "
              f"ours {row['ours_s']:.2f} s, FusionBench {row['fusionbench_s']:.2f} s", flush=True)
    result = {name: row["max_abs_diff"] for name, row in rows.items()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
