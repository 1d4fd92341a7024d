"""Our merge methods against FusionBench 0.2.33's implementations on the same weights, in both attention layouts.

The zoo (``bench/structured_zoo.py``) is open_clip's ViT-B/32 image tower, ``--blocks`` transformer blocks (2 by
default; attention ``in_proj`` 2304x768, ``out_proj`` 768x768, MLP ``c_fc`` 3072x768 and ``c_proj`` 768x3072, biases,
LayerNorms, the patch convolution, the positional embedding and the projection) with random base weights and T = 8
experts = base + **structured** task vectors: per matrix a shared and a task-specific full-rank part with decaying
singular spectra (``--task-vectors iid`` gives the old i.i.d. ones). Each method merges it both ways, ours through the
registered method (``get_method(name)(zoo)``), FusionBench's through its merging function on the same task-vector
state dicts (alpha / scaling factor 1.0), and the script prints the max abs difference of the merged weights per
method (EMR: of every task's model, theta_0 + rescaler_t mask_t tau_uni), also relative to the largest merged
task-vector entry (the issue's measure, target 1e-6).

Both layouts (``--layouts``): ``fused`` hands FusionBench the task vectors in open_clip's layout (one
``attn.in_proj_weight`` [3d, d] per block) and runs ours with ``attention=fused``; ``split`` hands FusionBench the
Hugging Face layout (``q_proj``, ``k_proj``, ``v_proj`` weights and biases, as in the ``CLIPVisionModel`` experts it
merges), fuses its result again, and runs ours with ``attention=split``. TIES (FusionBench's ``ties_merging`` on the
flattened task vectors, top 20%, sum) and EMR work entry by entry, so the layout cannot change them; they run in both.

Layer-wise AdaMerging (``adamerging``) is trained on images, so it is compared on the **same given coefficients**
(uniform in [0.1, 0.9], one per task per parameter tensor, from the seed): ours with the layout's granularity (split:
q, k, v weights and biases each their own), FusionBench's ``LayerWiseMergedModel.merge_weights`` on modules holding
the pretrained and fine-tuned weights in that layout (one coefficient per named parameter).

FusionBench's WUDI runs autograd through T products of [m, n] x [n, m] per step (seconds per step on a 2-core
machine at full width), so it is compared at ``--wudi-steps`` (20 by default) and FusionBench's fixed rate 1e-5;
ours runs the same Adam steps on the closed-form gradient. ``--float64`` runs the matrix rules (TSV-M, Iso-C,
Iso-CTS, WUDI) on both sides in float64 on the task vectors themselves: what is left of a float32 difference there
is not the rule.

Run it in the FusionBench venv (``bash bench/setup_fusionbench.sh`` makes it):
    bench/.venv-fusionbench/bin/python bench/methods_vs_fusionbench.py
Tiny run (the test): ``--width 64 --image-size 32 --patch-size 16 --experts 3 --wudi-steps 5``.
The last line printed is one JSON object mapping each compared method's registry name to its max abs difference
(the largest over the layouts), after one line per layout: ``{"layout": ..., "max_abs_diff": {method: diff}, ...}``.
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

from merge_speed import cpu_model  # noqa: E402  (also puts the repository on sys.path; first)  # isort: skip

import torch  # noqa: E402
from torch import nn  # noqa: E402

from structured_zoo import structured_zoo  # noqa: E402
from wemoe.methods import get_method  # noqa: E402
from wemoe.methods.iso import iso_c_matrix, iso_cts_matrix  # noqa: E402
from wemoe.methods.matrix_merge import MatrixRule, merge_matrices  # noqa: E402
from wemoe.methods.tsv_m import tsv_matrix  # noqa: E402
from wemoe.methods.wudi import wudi_matrix  # noqa: E402
from wemoe.task_vector import TaskVector, task_vectors  # noqa: E402
from wemoe.zoo.zoo import Zoo  # noqa: E402

METHODS = ("ties", "tsv_m", "iso_c", "iso_cts", "wudi", "emr_merging", "adamerging")
MATRIX_RULES = ("tsv_m", "iso_c", "iso_cts", "wudi")  # the ones --float64 compares
LAYOUTS = ("fused", "split")
IN_PROJ = "attn.in_proj_"  # open_clip's fused q, k, v: in_proj_weight [3d, d], in_proj_bias [3d]
TIES_TOP_K = 20.0
StateDict = dict[str, torch.Tensor]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags; the defaults are two ViT-B/32 blocks with T = 8 structured task vectors."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blocks", "--layers", type=int, default=2, help="transformer blocks")
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--patch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--task-vectors", choices=("structured", "iid"), default="structured")
    p.add_argument("--tv-std", type=float, default=0.01, help="task vector entries' rms (std of the i.i.d. ones)")
    p.add_argument("--shared", type=float, default=0.5, help="the shared part's share of a task vector's energy")
    p.add_argument("--decay", type=float, default=1.0, help="singular values ~ (i + 1)^-decay")
    p.add_argument("--wudi-steps", type=int, default=20, help="Adam steps per matrix for WUDI, both sides")
    p.add_argument("--common-fraction", type=float, default=0.8, help="Iso-CTS's common subspace fraction")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--layouts", default=",".join(LAYOUTS), help="fused (open_clip in_proj), split (HF q, k, v)")
    p.add_argument("--float64", action="store_true", help="the matrix rules on both sides in float64 (see above)")
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


def given_coefficients(columns: int, experts: int, seed: int) -> torch.Tensor:
    """The layer-wise coefficients both AdaMerging sides merge with: uniform in [0.1, 0.9], ``[experts, columns]``."""
    generator = torch.Generator().manual_seed(seed + 1)
    return 0.1 + 0.8 * torch.rand(experts, columns, generator=generator)


def column_names(names: list[str], layout: str) -> list[str]:
    """The parameter each of our layer-wise coefficient columns belongs to, in the ``layout``'s names (split: the
    q, k, v thirds of an ``in_proj`` tensor as Hugging Face names them)."""
    if layout == "fused":
        return list(names)
    return [key for name in names for key in split_qkv({name: torch.zeros(3)})]


def module_of(state: StateDict) -> nn.Module:
    """A module whose named parameters are ``state``'s tensors under their dotted names (a stand-in for a model in
    that layout: FusionBench's layer-wise merge reads only the parameters)."""
    root = nn.Module()
    for key, value in state.items():
        *path, leaf = key.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, nn.Parameter(value.clone()))
    return root


def adamerging_ours(zoo: Zoo, layout: str, seed: int) -> tuple[StateDict, dict[str, torch.Tensor]]:
    """Our layer-wise AdaMerging (``attention=layout``) merged with the given coefficients, and those coefficients
    by the parameter (in the layout's names) each column weighs."""
    tower = get_method("adamerging")(zoo, attention=layout)
    coefficients = given_coefficients(tower.coefficients.shape[1], len(zoo.experts), seed)
    with torch.no_grad():
        tower.coefficients.copy_(coefficients)
        merged = {k: v.detach() for k, v in tower.merged_state().items()}
    return merged, dict(zip(column_names(tower.names, layout), coefficients.T, strict=True))


def adamerging_fusionbench(zoo: Zoo, layout: str, by_name: dict[str, torch.Tensor]) -> StateDict:
    """FusionBench's ``LayerWiseMergedModel.merge_weights`` on the zoo in ``layout`` with the coefficients
    ``by_name`` (one per named parameter, as it learns them), in open_clip's names."""
    convert = split_qkv if layout == "split" else dict
    with contextlib.redirect_stdout(sys.stderr):
        from fusion_bench.models.wrappers.layer_wise_fusion import LayerWiseMergedModel

        pretrained = module_of(convert(zoo.base_state))
        finetuned = [module_of(convert(expert)) for expert in zoo.experts.values()]
        names = [name for name, _ in pretrained.named_parameters()]
        weights = torch.stack([by_name[name] for name in names], dim=1)  # [experts, parameters] in its order
        model = LayerWiseMergedModel(weights, pretrained, finetuned, clamp_weights=True)
        with torch.no_grad():
            merged = {k: v.detach() for k, v in model.merge_weights().items()}
    return fuse_qkv(merged) if layout == "split" else merged


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


def _max_diff(ours: StateDict, theirs: StateDict) -> float:
    return max(float((ours[k].double() - theirs[k].double()).abs().max()) for k in theirs)


def _largest_change(merged: list[StateDict], base: StateDict) -> float:
    return max(float((m[k].double() - base[k].double()).abs().max()) for m in merged for k in base)


def _timed(timed: dict[str, float], side: str, compute: Callable[[], object]) -> object:
    start = time.perf_counter()
    out = compute()
    timed[side] = round(time.perf_counter() - start, 3)
    return out


def compare(name: str, zoo: Zoo, args: argparse.Namespace, layout: str = "fused") -> dict[str, float]:
    """Max abs difference of the merged weights (ours vs FusionBench's, in ``layout``), relative to the largest entry
    of the merged task vector, and both sides' seconds."""
    base = zoo.base_state
    timed: dict[str, float] = {}
    if name == "adamerging":
        ours, by_name = _timed(timed, "ours_s", lambda: adamerging_ours(zoo, layout, args.seed))
        theirs = _timed(timed, "fusionbench_s", lambda: adamerging_fusionbench(zoo, layout, by_name))
        diff = _max_diff(ours, theirs)
        return {"max_abs_diff": diff, "relative_to_max_merged": diff / _largest_change([ours], base), **timed}
    vectors = [{k: v.clone() for k, v in tv.vector.items()} for tv in task_vectors(base, zoo.experts).values()]
    given = [split_qkv(v) for v in vectors] if layout == "split" else vectors
    ours = _timed(timed, "ours_s", lambda: _ours(name, zoo, args, layout))
    theirs = _timed(timed, "fusionbench_s", lambda: _fusionbench(name, given, args))
    if layout == "split":
        theirs = [fuse_qkv(t) for t in theirs] if isinstance(theirs, list) else fuse_qkv(theirs)
    merged = ours if isinstance(ours, list) else [ours]
    theirs = theirs if isinstance(theirs, list) else [theirs]
    diff = max(_max_diff(o, {k: base[k] + t[k] for k in t}) for o, t in zip(merged, theirs, strict=True))
    return {"max_abs_diff": diff, "relative_to_max_merged": diff / _largest_change(merged, base), **timed}


def matrix_rule(name: str, args: argparse.Namespace) -> MatrixRule:
    """Our matrix rule of a per-matrix method (the function its registered method hands ``merge_matrices``)."""
    rules: dict[str, MatrixRule] = {
        "tsv_m": tsv_matrix, "iso_c": iso_c_matrix,
        "iso_cts": lambda deltas: iso_cts_matrix(deltas, args.common_fraction),
        "wudi": lambda deltas: wudi_matrix(deltas, args.wudi_steps)[0],
    }
    return rules[name]


def compare_float64(name: str, zoo: Zoo, args: argparse.Namespace, layout: str = "fused") -> dict[str, float]:
    """Our matrix rule and FusionBench's function on the same task vectors, both in float64: max abs difference of
    the merged task vectors, relative to the largest merged entry; beside it each side's float32 result against
    FusionBench's float64 one (how far float32 rounding alone moves each), and both sides' float64 seconds."""
    vectors32 = [dict(tv.vector) for tv in task_vectors(zoo.base_state, zoo.experts).values()]
    timed: dict[str, float] = {}
    merged: dict[str, StateDict] = {}
    for precision, vectors in (("float64", [{k: v.double() for k, v in tv.items()} for tv in vectors32]),
                               ("float32", vectors32)):
        given = [split_qkv(v) for v in vectors] if layout == "split" else vectors
        rule = matrix_rule(name, args)
        ours = _timed(timed, "ours_s", lambda: merge_matrices([TaskVector(v) for v in vectors], rule, layout))  # noqa: B023
        theirs = _timed(timed, "fusionbench_s", lambda: _fusionbench(name, given, args))  # noqa: B023
        merged[f"ours_{precision}"] = {k: ours[k] for k in ours.keys()}  # noqa: SIM118  (TaskVector: no __iter__)
        merged[f"fusionbench_{precision}"] = fuse_qkv(theirs) if layout == "split" else theirs
        if precision == "float64":
            seconds = dict(timed)
    reference = merged["fusionbench_float64"]
    largest = max(float(v.abs().max()) for v in reference.values())
    diff = _max_diff(merged["ours_float64"], reference)
    return {"max_abs_diff": diff, "relative_to_max_merged": diff / largest,
            "ours_float32_vs_fusionbench_float64": _max_diff(merged["ours_float32"], reference) / largest,
            "fusionbench_float32_vs_float64": _max_diff(merged["fusionbench_float32"], reference) / largest,
            **seconds}


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Compare every requested method in every requested layout; print a table, one JSON line per layout, then (last)
    the JSON of the largest max abs difference by method."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.float64:
        methods = [m for m in methods if m in MATRIX_RULES]
    layouts = [m.strip() for m in args.layouts.split(",") if m.strip()]
    zoo = structured_zoo(args.blocks, args.width, args.patch_size, args.image_size, args.experts, args.tv_std,
                         args.shared, args.decay, args.seed, iid=args.task_vectors == "iid")
    print(f"CPU: {cpu_model()} ({args.threads} threads); {args.blocks} block(s), width {args.width}, "
          f"T = {args.experts}, {args.task_vectors} task vectors, WUDI steps {args.wudi_steps}, "
          f"{'float64' if args.float64 else 'float32'}")
    result: dict[str, float] = {}
    for layout in layouts:
        rows = {}
        for name in methods:
            rows[name] = row = (compare_float64 if args.float64 else compare)(name, zoo, args, layout)
            rounding = (f"; float32 vs FusionBench's float64: ours {row['ours_float32_vs_fusionbench_float64']:.1e}, "
                        f"FusionBench's {row['fusionbench_float32_vs_float64']:.1e}") if args.float64 else ""
            print(f"{layout:5s} {name:12s} max abs diff {row['max_abs_diff']:.2e} (relative to the largest merged "
                  f"entry {row['relative_to_max_merged']:.1e}){rounding}; ours {row['ours_s']:.2f} s, "
                  f"FusionBench {row['fusionbench_s']:.2f} s", flush=True)
            result[name] = max(result.get(name, 0.0), row["max_abs_diff"])
        print(json.dumps({"layout": layout, **{column: {n: r[column] for n, r in rows.items()}
                                               for column in (next(iter(rows.values())) if rows else {})
                                               if not column.endswith("_s")}}))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
