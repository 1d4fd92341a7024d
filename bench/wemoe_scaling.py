"""How WEMoE's cost grows: exact and compressed (low-rank) WEMoE MLPs against the dense MLP, by experts, batch, tokens.

One transformer block's MLP (c_fc - GELU - c_proj, width 768 -> 3072 -> 768 by default: ViT-B's) with T experts
(base + random task vectors). Variants, all on the same input ``[batch, tokens, width]``:

- dense_torch: the MLP through torch's GEMM; dense_kernel: its matrices through our fused kernel with no experts.
  ``dense`` is the faster of the two (the table says which);
- exact: ``wemoe.moe.layer.WeightEnsemblingMLP`` (its router included) under the library's shape policy (fused kernel
  or torch ops, ``wemoe.moe.fused_kernel.worthwhile``); exact_kernel / exact_torch: the same forward with the kernel
  forced on / off (forward only: the backward pass is torch ops either way);
- compressed: ``wemoe.moe.layer.LowRankWeightEnsemblingMLP`` at ``--rank`` (router included).

fwd: one forward under ``torch.no_grad()``; fwd+bwd: forward, loss = mean of squared outputs, backward into the input
(and the router): the input of a block's MLP needs its gradient in an adaptation step (earlier routers). Times are the
median of ``--runs`` interleaved rounds after one warm-up round. The defaults are the issue's grid (T = 2, 8, 14, 20;
batch 1, 16, 64; 50 and 197 tokens: ViT-B/32 and ViT-B/16); flags shrink it. Last line: one JSON object.

    python bench/wemoe_scaling.py                                   # the whole grid (a few minutes on 2 cores)
    python bench/wemoe_scaling.py --experts 8 --batches 16 --tokens 50
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import wemoe  # noqa: E402,F401  (before open_clip: the torchvision compatibility step)  # isort: skip
import torch  # noqa: E402
from torch import nn  # noqa: E402

from dense_baseline import KernelLinear, cpu_model, fastest_dense, gemm_gflops  # noqa: E402
from wemoe.methods.wemoe_compressed import DEFAULT_RANK  # noqa: E402
from wemoe.moe import fused_kernel  # noqa: E402
from wemoe.moe.ensembled_linear import Workspace  # noqa: E402
from wemoe.moe.kernel_calibration import time_round_robin  # noqa: E402
from wemoe.moe.layer import LowRankWeightEnsemblingMLP, WeightEnsemblingMLP  # noqa: E402

FORWARD_ONLY = ("dense_kernel", "exact_kernel", "exact_torch")  # timed forward only (see the module docstring)


def ints(text: str) -> list[int]:
    """``"2,8,14"`` -> ``[2, 8, 14]``."""
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags; the defaults are the issue's grid."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experts", type=ints, default=[2, 8, 14, 20], help="values of T, comma-separated")
    p.add_argument("--batches", type=ints, default=[1, 16, 64])
    p.add_argument("--tokens", type=ints, default=[50, 197], help="tokens per sample (ViT-B/32: 50, ViT-B/16: 197)")
    p.add_argument("--width", type=int, default=768, help="token width (the MLP's hidden width is 4x)")
    p.add_argument("--rank", type=int, default=DEFAULT_RANK, help="singular components per task vector (compressed)")
    p.add_argument("--runs", type=int, default=3, help="timed rounds (the median is reported)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_mlp(width: int, generator: torch.Generator) -> nn.Sequential:
    """open_clip's block MLP (``c_fc``, ``gelu``, ``c_proj``) with random weights."""
    mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, 4 * width), gelu=nn.GELU(),
                                    c_proj=nn.Linear(4 * width, width)))
    with torch.no_grad():
        for p in mlp.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
    return mlp.requires_grad_(False)


def build_layers(width: int, experts: int, rank: int, seed: int) -> dict[str, nn.Module]:
    """dense_torch, dense_kernel, exact and compressed MLPs for T = ``experts`` (routers with random weights)."""
    generator = torch.Generator().manual_seed(seed)
    mlp = make_mlp(width, generator)
    base = mlp.state_dict()
    expert_mlps = [{k: v + torch.randn(v.shape, generator=generator) * 2e-4 for k, v in base.items()}
                   for _ in range(experts)]
    kernel_mlp = nn.Sequential(OrderedDict(c_fc=KernelLinear(mlp.c_fc), gelu=nn.GELU(),
                                           c_proj=KernelLinear(mlp.c_proj)))
    exact = WeightEnsemblingMLP(mlp, expert_mlps, workspace=Workspace(), generator=generator)
    compressed = LowRankWeightEnsemblingMLP(mlp, expert_mlps, rank, generator=generator)
    with torch.no_grad():  # trained-looking routers: every sample routes differently
        for layer in (exact, compressed):
            for p in layer.router.parameters():
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + 1)) * 0.02)
    return {"dense_torch": mlp, "dense_kernel": kernel_mlp, "exact": exact, "compressed": compressed}


def step(layer: nn.Module, x: torch.Tensor, mode: str, switch: str | None = None) -> Callable[[], None]:
    """One forward (no grad) or forward+backward of ``layer`` on ``x``; ``switch``: WEMOE_FUSED_KERNEL during it."""

    def run() -> None:
        if mode == "fwd":
            with torch.no_grad():
                layer(x)
            return
        for p in layer.parameters():
            p.grad = None
        x_grad = x.detach().requires_grad_(True)
        layer(x_grad).square().mean().backward()

    if switch is None:
        return run

    def switched() -> None:
        with fused_kernel.switched(switch):
            run()

    return switched


def measure(layers: dict[str, nn.Module], batch: int, tokens: int, width: int, runs: int, seed: int) -> dict:
    """The times of every variant and mode for one input shape, and the ratios to the fastest dense variant."""
    x = torch.randn(batch, tokens, width, generator=torch.Generator().manual_seed(seed + 2))
    row: dict = {"batch": batch, "tokens": tokens}
    for mode in ("fwd", "fwdbwd"):
        steps = {"dense_torch": step(layers["dense_torch"], x, mode), "exact": step(layers["exact"], x, mode),
                 "compressed": step(layers["compressed"], x, mode)}
        if mode == "fwd":
            steps |= {"dense_kernel": step(layers["dense_kernel"], x, mode),
                      "exact_kernel": step(layers["exact"], x, mode, "1"),
                      "exact_torch": step(layers["exact"], x, mode, "0")}
        else:
            steps["dense_kernel"] = step(layers["dense_kernel"], x, mode)
        times = time_round_robin(steps, runs)
        winner, dense_ms = fastest_dense(times)
        row[mode] = {"ms": times, "dense": winner, "dense_ms": dense_ms,
                     "ratio": {name: ms / dense_ms for name, ms in times.items() if not name.startswith("dense")}}
    row["exact_kernel_used"] = fused_kernel.worthwhile(batch, tokens, 4 * width, width, layers["exact"].num_experts) \
        and fused_kernel.available()
    return row


def main(argv: list[str] | None = None) -> dict:
    """Run the grid, print a table per mode, then every figure as one JSON line (also returned)."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model, rates = cpu_model(), gemm_gflops()
    rows = []
    for experts in args.experts:
        layers = build_layers(args.width, experts, args.rank, args.seed)
        for batch in args.batches:
            for tokens in args.tokens:
                row = measure(layers, batch, tokens, args.width, args.runs, args.seed)
                row["experts"] = experts
                rows.append(row)
                print(f"T={experts} batch={batch} tokens={tokens}: fwd exact {row['fwd']['ratio']['exact']:.2f}x, "
                      f"compressed {row['fwd']['ratio']['compressed']:.2f}x dense", file=sys.stderr)
        del layers
    print(f"CPU: {model}, {args.threads} threads; GEMM 800x768x3072 (ViT-B/32 c_fc, batch 16): "
          + ", ".join(f"{name} {rate:.0f} GFLOPS" for name, rate in rates.items()))
    print(f"One MLP {args.width} -> {4 * args.width} -> {args.width}; compressed rank {args.rank}; "
          "x dense = against the faster dense variant (named); exact runs the kernel where the shape policy says "
          "(k = used)")
    header = (f"{'T':>3} {'batch':>5} {'tok':>4} | {'dense fwd':>15} {'exact':>6} {'e_kern':>6} {'e_torch':>7} "
              f"{'compr':>6} | {'dense fwd+bwd':>17} {'exact':>6} {'compr':>6}")
    print(header)
    print("-" * len(header))
    for row in rows:
        fwd, both = row["fwd"], row["fwdbwd"]
        flag = "k" if row["exact_kernel_used"] else " "
        print(f"{row['experts']:>3} {row['batch']:>5} {row['tokens']:>4} | "
              f"{fwd['dense_ms']:>7.1f} {fwd['dense'][6:]:>7} {fwd['ratio']['exact']:>5.2f}{flag} "
              f"{fwd['ratio']['exact_kernel']:>6.2f} {fwd['ratio']['exact_torch']:>7.2f} "
              f"{fwd['ratio']['compressed']:>6.2f} | "
              f"{both['dense_ms']:>8.1f} {both['dense'][6:]:>8} {both['ratio']['exact']:>6.2f} "
              f"{both['ratio']['compressed']:>6.2f}")
    result = {"cpu": model, "threads": args.threads, "gemm_gflops": rates, "width": args.width, "rank": args.rank,
              "runs": args.runs, "torch": torch.__version__, "rows": rows}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
