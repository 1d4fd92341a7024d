"""Our TIES, TSV-M, Iso-C, Iso-CTS, WUDI and EMR-Merging against FusionBench's implementations on the same random
weights, in both attention layouts.

The zoo is ``bench/merge_speed.py``'s: open_clip ViT-B/32-shaped image-tower blocks (attention ``in_proj`` 2304x768,
``out_proj`` 768x768, MLP ``c_fc`` 3072x768 and ``c_proj`` 768x3072, biases, LayerNorms, the patch convolution, the
positional embedding and the projection) with random weights and T = 8 experts = base + random task vectors. Each
method merges it both ways, ours through the registered method (``get_method(name)(zoo)``), FusionBench's through its
merging function on the same task-vector state dicts (alpha / scaling factor 1.0), and the script prints the max abs
difference of the merged weights per method (EMR: of every task's model, theta_0 + rescaler_t mask_t tau_uni).

Both layouts (``--layouts``): ``fused`` hands FusionBench the task vectors in open_clip's layout (one
``attn.in_proj_weight`` [3d, d] per block) and runs ours with ``attention=fused``; ``split`` hands FusionBench the
Hugging Face layout (``q_proj``, ``k_proj``, ``v_proj`` weights and biases, as in the ``CLIPVisionModel`` experts it
merges), fuses its result again, and runs ours with ``attention=split``. TIES (FusionBench's ``ties_merging`` on the
flattened task vectors, top 20%, sum) and EMR work entry by entry, so the layout cannot change them; they run in both.

FusionBench's WUDI runs autograd through T products of [m, n] x [n, m] per step (minutes per step on a 2-core
machine at full width), so it is compared at ``--wudi-steps`` (20 by default) on the same matrices; ours runs the same
Adam steps on the closed-form gradient. Defaults: one block (every distinct matrix shape; more blocks repeat them).

Run it in the FusionBench venv (``bash bench/setup_fusionbench.sh`` makes it):
    bench/.venv-fusionbench/bin/python bench/methods_vs_fusionbench.py
Tiny run (the test): ``--width 64 --image-size 32 --patch-size 16 --experts 3 --wudi-steps 5``.
The last line printed is one JSON object mapping each compared method's registry name to its max abs difference
(the largest over the layouts), after one line per layout: ``{"layout": ..., "max_abs_diff": {method: diff}}``.
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

METHODS = ("ties", "tsv_m", "iso_c", "iso_cts", "wudi", "emr_merging")
LAYOUTS = ("fused", "split")
IN_PROJ = "attn.in_proj_"  # open_clip's fused q, k, v: in_proj_weight [3d, d], in_proj_bias [3d]
TIES_TOP_K = 20.0
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
    p.add_argument("--layouts", default=",".join(LAYOUTS), help="fused (open_clip in_proj), split (HF q, k, v)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _fusionbench(name: str, vectors: list[StateDict], args: argparse.Namespace) -> StateDict | list[StateDict]:
    """FusionBench's merged task vector (EMR: every task's own task vector), its prints sent to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        if name == "ties":
            from fusion_bench.method.ties_merging.ties_merging_utils import (
                state_dict_to_vector,
                ties_merging,
                vector_to_state_dict,
            )

            flat = torch.vstack([state_dict_to_vector(v) for v in vectors])
            merged = ties_merging(flat, reset_thresh=TIES_TOP_K, merge_func="sum")
            return dict(vector_to_state_dict(merged, {k: v.clone() for k, v in vectors[0].items()}))
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


def split_qkv(state: StateDict) -> StateDict:
    """Task vectors in Hugging Face's attention layout: each ``attn.in_proj_weight`` / ``_bias`` as three ``q_proj``,
    ``k_proj``, ``v_proj`` tensors (rows q, then k, then v); everything else as it is."""
    out = {}
    for key, value in state.items():
        prefix, found, kind = key.partition(IN_PROJ)
        if not found:
            out[key] = value
            continue
        for part, chunk in zip(("q", "k", "v"), value.chunk(3), strict=True):
            out[f"{prefix}attn.{part}_proj.{kind}"] = chunk.clone()
    return out


def fuse_qkv(state: StateDict) -> StateDict:
    """The inverse of :func:`split_qkv`."""
    out = {}
    for key, value in state.items():
        prefix, found, kind = key.partition("attn.q_proj.")
        if found:
            parts = [state[f"{prefix}attn.{part}_proj.{kind}"] for part in ("q", "k", "v")]
            out[f"{prefix}{IN_PROJ}{kind}"] = torch.cat(parts)
        elif "attn.k_proj." not in key and "attn.v_proj." not in key:
            out[key] = value
    return out


def _ours(name: str, zoo: Zoo, args: argparse.Namespace, layout: str) -> StateDict | list[StateDict]:
    """Our merged weights through the registered method (EMR: every task's own weights)."""
    params = {"ties": {"lambda": 1.0, "top_k": TIES_TOP_K, "merge": "sum"}, "tsv_m": {"alpha": 1.0},
              "iso_c": {"alpha": 1.0}, "iso_cts": {"alpha": 1.0, "common_fraction": args.common_fraction},
              "wudi": {"steps": args.wudi_steps}, "emr_merging": {}}[name]
    if "attention" in {p.name for p in get_method(name).params}:
        params["attention"] = layout
    model = get_method(name)(zoo, **params)
    if name == "emr_merging":
        return [model.task_state(task) for task in zoo.task_names]
    return model.state_dict()


def _max_diff(ours: StateDict, base: StateDict, theirs_tv: StateDict) -> float:
    return max(float((ours[k].double() - (base[k].double() + theirs_tv[k].double())).abs().max()) for k in theirs_tv)


def compare(name: str, zoo: Zoo, args: argparse.Namespace, layout: str = "fused") -> dict[str, float]:
    """Max abs difference of the merged weights (ours vs FusionBench's, in ``layout``) and both sides' seconds."""
    base = zoo.base_state
    vectors = [{k: v.clone() for k, v in tv.vector.items()} for tv in task_vectors(base, zoo.experts).values()]
    given = [split_qkv(v) for v in vectors] if layout == "split" else vectors
    timed: dict[str, float] = {}

    def run(side: str, compute: Callable[[], object]) -> object:
        start = time.perf_counter()
        out = compute()
        timed[side] = round(time.perf_counter() - start, 3)
        return out

    ours = run("ours_s", lambda: _ours(name, zoo, args, layout))
    theirs = run("fusionbench_s", lambda: _fusionbench(name, given, args))
    if layout == "split":
        theirs = [fuse_qkv(t) for t in theirs] if isinstance(theirs, list) else fuse_qkv(theirs)
    if name == "emr_merging":
        diff = max(_max_diff(o, base, t) for o, t in zip(ours, theirs, strict=True))
    else:
        diff = _max_diff(ours, base, theirs)
    scale = max(float(v.abs().max()) for tv in vectors for v in tv.values())
    merged = ours if isinstance(ours, list) else [ours]
    largest = max(float((m[k].double() - base[k].double()).abs().max()) for m in merged for k in base)
    return {"max_abs_diff": diff, "relative_to_max_tv": diff / scale, "relative_to_max_merged": diff / largest,
            **timed}


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Compare every requested method in every requested layout; print a table, one JSON line per layout, then (last)
    the JSON of the largest max abs difference by method."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    layouts = [m.strip() for m in args.layouts.split(",") if m.strip()]
    zoo = random_zoo(args.layers, args.width, args.patch_size, args.image_size, args.experts, args.tv_scale, args.seed)
    print(f"CPU: {cpu_model()} ({args.threads} threads); {args.layers} block(s), width {args.width}, "
          f"T = {args.experts}, WUDI steps {args.wudi_steps}")
    result: dict[str, float] = {}
    for layout in layouts:
        rows = {}
        for name in methods:
            rows[name] = row = compare(name, zoo, args, layout)
            print(f"{layout:5s} {name:12s} max abs diff {row['max_abs_diff']:.2e} (relative to the largest task "
                  f"vector entry {row['relative_to_max_tv']:.1e}, to the largest merged entry "
                  f"{row['relative_to_max_merged']:.1e}); ours {row['ours_s']:.2f} s, "
                  f"FusionBench {row['fusionbench_s']:.2f} s", flush=True)
            result[name] = max(result.get(name, 0.0), row["max_abs_diff"])
        print(json.dumps({"layout": layout, "max_abs_diff": {n: r["max_abs_diff"] for n, r in rows.items()},
                          "relative_to_max_merged": {n: r["relative_to_max_merged"] for n, r in rows.items()}}))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
