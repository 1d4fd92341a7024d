"""Compressed experts: WEMoE with rank-k MLP task vectors vs the dense tower and exact WEMoE, and on the pocket zoo.

Part 1, the tower (``bench/moe_vs_fusionbench.py``'s setting: open_clip ViT-B/32 image tower with random weights, T=8
experts = base + random task vectors, batch 16 at 224x224, 2 threads). Variants:

- dense_torch / dense_kernel: the task-arithmetic merge, its MLP matrices through torch's GEMM / through our fused
  kernel with no experts; ``dense`` is the faster one (named in the output);
- exact: ``upscale_to_wemoe`` (every block), routers with small random weights;
- rank_k: the same tower with ``WEMoEConfig(rank=k, anchor=...)`` (``wemoe.moe.layer.LowRankWeightEnsemblingMLP``;
  ``--anchor``: task_arithmetic, the default, or pretrained, the plain form), the same routers.
  The factors are computed once at the largest k and truncated for the smaller ones (the top-k of an SVD are its
  first k components).

fwd / fwd+bwd as in moe_vs_fusionbench (dense's fwd+bwd takes the gradient w.r.t. the images), interleaved, the median
of ``--runs``. Model memory: bytes of parameters and buffers; ``extra`` = (model - dense tower) / dense tower, split
into the experts' part (factors or task vectors, bias task vectors) and the routers'.

Part 2, the pocket zoo (``--pocket-steps``, default 300): exact WEMoE and each rank adapted the same way (same seeds,
loss, learning rate and images), then the accuracy table's average; and the share of each MLP task vector's energy
(squared Frobenius norm) that rank k keeps (mean and minimum over experts, blocks and matrices).

    python bench/compressed_wemoe.py                                   # the chosen k (wemoe_compressed's default)
    python bench/compressed_wemoe.py --ranks 4,8,16,32,64 --losses entropy,im    # the k table of bench/README.md

The last line printed is one JSON object: rank, fwd_ratio_dense, fwdbwd_ratio_dense, extra_model_memory_ratio,
pocket_avg_exact, pocket_avg_compressed (for ``--rank`` and the first loss), then everything measured.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import wemoe  # noqa: E402,F401  (before open_clip: the torchvision compatibility step)  # isort: skip
import torch  # noqa: E402
from torch import nn  # noqa: E402

import moe_vs_fusionbench as tower_bench  # noqa: E402
from dense_baseline import cpu_model, fastest_dense, gemm_gflops, with_kernel_mlps  # noqa: E402
from wemoe.methods.wemoe_compressed import DEFAULT_RANK  # noqa: E402
from wemoe.moe import lowrank  # noqa: E402
from wemoe.moe.layer import ANCHORS, MLP_PARTS, TASK_ARITHMETIC, WEMoEConfig, moe_layers, upscale_to_wemoe  # noqa: E402
from wemoe.zoo.zoo import Zoo  # noqa: E402


def ints(text: str) -> list[int]:
    """``"4,8,16"`` -> ``[4, 8, 16]``."""
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags: the tower's (as moe_vs_fusionbench) and the pocket zoo's."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rank", type=int, default=DEFAULT_RANK, help="the chosen k (the summary's)")
    p.add_argument("--ranks", type=ints, default=[], help="more ranks to measure alongside, e.g. 4,8,16,32,64")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--patch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--runs", type=int, default=5, help="timed runs per variant and mode (median)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tv-scale", type=float, default=0.01, help="task vector size relative to each tensor's std")
    p.add_argument("--lambda", dest="lambda_", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pocket-steps", type=int, default=300, help="adaptation steps on the pocket zoo (0: skip it)")
    p.add_argument("--losses", default="im,entropy",
                   help="adaptation losses, comma-separated; the summary uses the first")
    p.add_argument("--per-task", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--samples", type=int, default=None, help="pocket test images per task (default: all)")
    p.add_argument("--no-tower", action="store_true", help="skip part 1 (the ViT-B/32-shaped timings)")
    p.add_argument("--anchor", choices=ANCHORS, default=TASK_ARITHMETIC,
                   help="what the rank-k experts correct: task_arithmetic (the default) or pretrained (the plain form)")
    args = p.parse_args(argv)
    args.device = "cpu"
    args.all_ranks = sorted({args.rank, *args.ranks})
    return args


# ---------------------------------------------------------------- part 1: the tower


def truncated(tower: nn.Module, rank: int) -> nn.Module:
    """A copy of a low-rank tower keeping each expert's first ``rank`` components (of the ones it keeps)."""
    tower = copy.deepcopy(tower)
    for layer in moe_layers(tower).values():
        experts = layer.num_experts
        for part in MLP_PARTS:
            up, down = getattr(layer, f"{part}_up"), getattr(layer, f"{part}_down")
            in_features, kept = down.shape[0], down.shape[1] // experts
            k = min(rank, kept)
            us = up[:, in_features:].reshape(up.shape[0], experts, kept)[:, :, :k]
            v = down.reshape(in_features, experts, kept)[:, :, :k]
            setattr(layer, f"{part}_up", torch.cat([up[:, :in_features], us.reshape(up.shape[0], -1)], 1).contiguous())
            setattr(layer, f"{part}_down", v.reshape(in_features, -1).contiguous())
    tower.wemoe_config = dataclasses.replace(tower.wemoe_config, rank=rank)
    return tower


def memory_split(tower: nn.Module, dense_bytes: int) -> dict[str, float]:
    """The model's bytes and its extra over the dense tower, as ratios: all, the experts' part, the routers'."""
    total = tower_bench.model_bytes(tower)
    routers = sum(p.numel() * p.element_size()
                  for layer in moe_layers(tower).values() for p in layer.router.parameters())
    return {"model_mb": total / 2**20, "extra_ratio": (total - dense_bytes) / dense_bytes,
            "extra_experts_ratio": (total - dense_bytes - routers) / dense_bytes,
            "extra_routers_ratio": routers / dense_bytes}


def build_towers(args: argparse.Namespace) -> dict[str, nn.Module]:
    """dense_torch, dense_kernel, exact and one rank_k tower per rank (all with the exact tower's routers)."""
    zoo = tower_bench.build_zoo(args)
    towers: dict[str, nn.Module] = {"dense_torch": tower_bench.build_dense(zoo, args)}
    towers["dense_kernel"] = with_kernel_mlps(towers["dense_torch"])
    towers["exact"] = tower_bench.build_ours(zoo, args)
    largest = upscale_to_wemoe(zoo, WEMoEConfig(lambda_=args.lambda_, rank=max(args.all_ranks),
                                                anchor=args.anchor))
    largest.load_state_dict(towers["exact"].state_dict(), strict=False)  # the same routers (the factors stay)
    for rank in args.all_ranks:
        towers[f"rank_{rank}"] = truncated(largest, rank)
    del largest, zoo  # the T expert towers are not needed any more
    gc.collect()
    return {name: tower.eval() for name, tower in towers.items()}


def tower_part(args: argparse.Namespace) -> dict:
    """Times (fwd, fwd+bwd) and memory of every tower variant; ratios against the faster dense variant."""
    towers = build_towers(args)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        exact_out = towers["exact"](images)
        diffs = {name: float((towers[name](images) - exact_out).abs().max()) for name in towers if name != "exact"}
    result: dict = {"max_abs_diff_vs_exact": diffs}
    for mode in tower_bench.MODES:
        steps = {name: tower_bench.make_step(tower, mode, images) for name, tower in towers.items()}
        times = tower_bench.time_interleaved(steps, {name: args.runs for name in steps}, args.warmup, "cpu")
        winner, dense_ms = fastest_dense(times)
        result[mode] = {"ms": times, "dense": winner, "dense_ms": dense_ms,
                        "ratio": {n: ms / dense_ms for n, ms in times.items() if not n.startswith("dense")}}
    dense_bytes = tower_bench.model_bytes(towers["dense_torch"])
    result["dense_mb"] = dense_bytes / 2**20
    result["memory"] = {name: memory_split(towers[name], dense_bytes)
                        for name in towers if not name.startswith("dense")}
    del towers
    gc.collect()
    return result


# ---------------------------------------------------------------- part 2: the pocket zoo


def energy_table(zoo: Zoo, ranks: list[int]) -> dict[int, dict[str, float]]:
    """Per rank, the mean and the minimum share of energy kept over every MLP weight task vector of the zoo."""
    base = zoo.base_state
    keys = [k for k in base if ".mlp." in k and k.endswith(".weight")]
    shares: dict[int, list[torch.Tensor]] = {rank: [] for rank in ranks}
    for key in keys:
        tvs = torch.stack([state[key].float() - base[key].float() for state in zoo.experts.values()])
        for rank in ranks:
            shares[rank].append(lowrank.energy_kept(tvs, rank))
    return {rank: {"mean": float(torch.cat(s).mean()), "min": float(torch.cat(s).min())} for rank, s in shares.items()}


def pocket_part(args: argparse.Namespace) -> dict:
    """Adapt exact WEMoE and every rank on the pocket zoo the same way; their accuracy averages, and energy kept."""
    from wemoe.pocket import load_pocket_zoo
    from wemoe.workbench.workbench import Workbench

    zoo = load_pocket_zoo()
    bench = Workbench(zoo, samples=args.samples)
    full = zoo.visual.transformer.width  # MLP matrices width x 4 width: full rank is the width
    result: dict = {"energy": {str(k): v for k, v in energy_table(zoo, args.all_ranks).items()}, "full_rank": full,
                    "steps": args.pocket_steps, "average": {}}
    names = {"exact": 0, **{f"rank_{rank}": rank for rank in args.all_ranks}}
    for loss in args.losses.split(","):
        averages = {}
        for name, rank in names.items():
            params = {"lambda": args.lambda_, "rank": rank, **({"anchor": args.anchor} if rank else {})}
            bench.merge("wemoe", params, name=name)
            for _ in bench.adapt(name, steps=args.pocket_steps, lr=args.lr, per_task=args.per_task, loss=loss):
                pass
            averages[name] = float(bench.evaluate([name])["average"].iloc[0])
            bench.merges.pop(name)
            print(f"pocket, {loss}: {name} {averages[name]:.2f}", file=sys.stderr)
        result["average"][loss] = averages
    return result


# ---------------------------------------------------------------- report


def print_report(args: argparse.Namespace, tower: dict | None, pocket: dict | None, machine: dict) -> None:
    """The k table: per variant, energy kept, pocket accuracy per loss, tower times against dense, model memory."""
    print(f"CPU: {machine['cpu']}, {args.threads} threads; GEMM 800x768x3072: "
          + ", ".join(f"{n} {r:.0f} GFLOPS" for n, r in machine["gemm_gflops"].items()))
    if tower:
        print(f"Tower: {args.layers} blocks, width {args.width}, {args.image_size}px/patch {args.patch_size}, "
              f"T={args.experts}, batch {args.batch}; "
              f"dense fwd {tower['fwd']['dense_ms']:.1f} ms ({tower['fwd']['dense']}), "
              f"fwd+bwd {tower['fwdbwd']['dense_ms']:.1f} ms ({tower['fwdbwd']['dense']}); dense tower "
              f"{tower['dense_mb']:.0f} MB; times: median of {args.runs}")
        print("  dense ms: " + ", ".join(f"{n} fwd {tower['fwd']['ms'][n]:.1f} / fwd+bwd {tower['fwdbwd']['ms'][n]:.1f}"
                                         for n in ("dense_torch", "dense_kernel")))
    losses = args.losses.split(",") if pocket else []
    header = f"{'variant':<9} {'energy':>13} " + " ".join(f"{'pocket ' + loss:>14}" for loss in losses)
    header += (f" {'fwd x':>6} {'fwdbwd x':>8} {'extra mem':>9} {'experts':>7} {'routers':>7} {'|diff|':>8}"
               if tower else "")
    print(header)
    print("-" * len(header))
    for name in ["exact", *(f"rank_{r}" for r in args.all_ranks)]:
        rank = name.split("_")[1] if name != "exact" else None
        energy = pocket["energy"][rank] if pocket and rank else None
        line = f"{name:<9} " + (f"{energy['mean']:>6.3f}/{energy['min']:.3f}" if energy else f"{'1':>13}")
        for loss in losses:
            line += f" {pocket['average'][loss][name]:>14.2f}"
        if tower:
            mem = tower["memory"][name]
            diff = tower["max_abs_diff_vs_exact"].get(name, 0.0)
            line += (f" {tower['fwd']['ratio'][name]:>6.2f} {tower['fwdbwd']['ratio'][name]:>8.2f} "
                     f"{mem['extra_ratio']:>9.3f} {mem['extra_experts_ratio']:>7.3f} {mem['extra_routers_ratio']:>7.3f}"
                     f" {diff:>8.1e}")
        print(line)
    if pocket:
        print("energy: mean/min share of each pocket MLP task vector's squared norm kept "
              f"(full rank {pocket['full_rank']}); "
              f"pocket: average accuracy after {pocket['steps']} steps")


def main(argv: list[str] | None = None) -> dict:
    """Run both parts, print the k table, then one JSON line (also returned)."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = {"cpu": cpu_model(), "gemm_gflops": gemm_gflops()}
    tower = None if args.no_tower else tower_part(args)
    pocket = pocket_part(args) if args.pocket_steps > 0 else None
    print_report(args, tower, pocket, machine)
    chosen, first_loss = f"rank_{args.rank}", args.losses.split(",")[0]
    summary = {
        "rank": args.rank,
        "fwd_ratio_dense": tower["fwd"]["ratio"][chosen] if tower else None,
        "fwdbwd_ratio_dense": tower["fwdbwd"]["ratio"][chosen] if tower else None,
        "extra_model_memory_ratio": tower["memory"][chosen]["extra_ratio"] if tower else None,
        "pocket_avg_exact": pocket["average"][first_loss]["exact"] if pocket else None,
        "pocket_avg_compressed": pocket["average"][first_loss][chosen] if pocket else None,
        **machine, "threads": args.threads, "torch": torch.__version__, "tower": tower, "pocket": pocket,
        "settings": {k: v for k, v in vars(args).items() if k != "all_ranks"},
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
