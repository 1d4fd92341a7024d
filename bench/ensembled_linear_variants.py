"""Formulations of one WEMoE linear layer, timed against the dense layer: which way of computing it is fastest here.

``y_b = x_b W_b^T + c_b`` with ``W_b = W_0 + sum_t r_bt tau_t`` for a batch of samples b. Candidates (forward only,
no grad; the library's choice is ``library``, i.e. ``wemoe.moe.ensembled_linear.stacked_ensembled_linear``):

- dense:     ``F.linear(x, W_0, c_0)``, the floor;
- library:   what the library does now (``stacked_ensembled_linear``): on CPU in float32 the fused C++ kernel
             (``wemoe.moe.fused_kernel``: each sample's weights built tile by tile in cache, never written out);
- torch_ops: the library with the kernel switched off (W_0 as the last row of the stack, one GEMM with K = T + 1
             builds the weights into the model's ``Workspace``, one baddbmm applies them);
- build:     one GEMM builds every sample's weights ``[B, out, in]``, one baddbmm applies them (the formulation the
             library started from);
- build_buf: the same, writing the weights into a buffer kept between calls (no fresh allocation, no page faults);
- chunked:   per block of output rows, build ``[B, rows, in]`` (small enough to stay in cache) and apply it;
- tokens:    ``x W_0^T + sum_t r_bt (x tau_t^T)``: no per-sample weights, T+1 times the dense FLOPs;
- apply_only: only the batched matmul with per-sample weights built beforehand (not a candidate: the floor of
             every per-sample-weights formulation, since a batch of 50-token GEMMs packs each sample's weights);
- bf16:      ``build_buf`` in bfloat16 (task vectors stored in bf16, AMX/AVX512-BF16 matmuls where the CPU has them);
             not exact: compare its max|diff| with the 1e-4 the FusionBench comparison demands.

Shapes default to ViT-B/32's MLP (768 -> 3072 -> 768, 50 tokens), batch 16, T=8, 2 threads. Every candidate is
checked against ``build`` (max abs diff printed). The last line printed is one JSON object.

    python bench/ensembled_linear_variants.py
    python bench/ensembled_linear_variants.py --batch 64 --rows 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import wemoe  # noqa: E402,F401  (first: before torch and open_clip)  # isort: skip
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from wemoe.moe import fused_kernel  # noqa: E402
from wemoe.moe.ensembled_linear import Workspace, stacked_ensembled_linear  # noqa: E402

Layer = dict[str, torch.Tensor]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--tokens", type=int, default=50)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rows", type=int, default=64, help="output rows per chunk for the chunked candidate")
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def make_layer(out_features: int, in_features: int, experts: int, generator: torch.Generator) -> Layer:
    """Random W_0, c_0 and T small task vectors for one linear layer."""
    def randn(*shape: int, scale: float) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    weight = randn(out_features, in_features, scale=0.02)
    weight_tvs = randn(experts, out_features, in_features, scale=2e-4)
    return {"weight": weight, "bias": randn(out_features, scale=0.02), "weight_tvs": weight_tvs,
            "bias_tvs": randn(experts, out_features, scale=2e-4), "stack": torch.cat([weight_tvs, weight.unsqueeze(0)])}


WORKSPACE = Workspace()


def dense(x: torch.Tensor, r: torch.Tensor, layer: Layer) -> torch.Tensor:
    """The dense layer (the floor)."""
    return F.linear(x, layer["weight"], layer["bias"])


def library(x: torch.Tensor, r: torch.Tensor, layer: Layer) -> torch.Tensor:
    """wemoe.moe.ensembled_linear.stacked_ensembled_linear as the model calls it (its stack and workspace kept between
    calls)."""
    return stacked_ensembled_linear(x, r, layer["stack"], layer["bias"], layer["bias_tvs"], WORKSPACE)


def torch_ops(x: torch.Tensor, r: torch.Tensor, layer: Layer) -> torch.Tensor:
    """``library`` with the fused kernel switched off."""
    with fused_kernel.switched("0"):
        return library(x, r, layer)


def apply_only(x: torch.Tensor, r: torch.Tensor, layer: Layer) -> torch.Tensor:
    """Only ``baddbmm`` with per-sample weights built once, outside the timed call (the floor, not a candidate)."""
    key = ("prebuilt", r.shape[0], *layer["weight"].shape)
    if key not in _BUFFERS:
        _BUFFERS[key] = torch.addmm(layer["weight"].reshape(1, -1), r, layer["weight_tvs"].reshape(r.shape[1], -1))
    weights = _BUFFERS[key].view(r.shape[0], *layer["weight"].shape)
    return torch.baddbmm(_biases(r, layer), x, weights.transpose(1, 2))


def _biases(r: torch.Tensor, layer: Layer) -> torch.Tensor:
    return torch.addmm(layer["bias"].unsqueeze(0), r, layer["bias_tvs"]).unsqueeze(1)


def build(x: torch.Tensor, r: torch.Tensor, layer: Layer) -> torch.Tensor:
    """Every sample's weights in one GEMM, then one baddbmm."""
    w, tvs = layer["weight"], layer["weight_tvs"]
    weights = torch.addmm(w.reshape(1, -1), r, tvs.reshape(tvs.shape[0], -1)).view(r.shape[0], *w.shape)
    return torch.baddbmm(_biases(r, layer), x, weights.transpose(1, 2))


_BUFFERS: dict[tuple, torch.Tensor] = {}


def build_buf(x: torch.Tensor, r: torch.Tensor, layer: Layer) -> torch.Tensor:
    """``build`` with the per-sample weights written into a buffer reused across calls."""
    w, tvs = layer["weight"], layer["weight_tvs"]
    key = (r.shape[0], *w.shape)
    if key not in _BUFFERS:
        _BUFFERS[key] = torch.empty(r.shape[0], w.numel())
    weights = torch.addmm(w.reshape(1, -1), r, tvs.reshape(tvs.shape[0], -1), out=_BUFFERS[key])
    return torch.baddbmm(_biases(r, layer), x, weights.view(r.shape[0], *w.shape).transpose(1, 2))


def chunked(x: torch.Tensor, r: torch.Tensor, layer: Layer, rows: int = 64) -> torch.Tensor:
    """Per block of ``rows`` output rows: build ``[B, rows, in]`` into a small reused buffer, apply it."""
    w, tvs = layer["weight"], layer["weight_tvs"]
    out_features, in_features = w.shape
    batch = r.shape[0]
    y = _biases(r, layer).expand(batch, x.shape[1], out_features).contiguous()
    buffer = torch.empty(batch, rows * in_features)
    for start in range(0, out_features, rows):
        stop = min(start + rows, out_features)
        size = (stop - start) * in_features
        part = torch.addmm(w[start:stop].reshape(1, -1), r, tvs[:, start:stop].reshape(tvs.shape[0], -1),
                           out=buffer[:, :size])
        y[:, :, start:stop] += torch.bmm(x, part.view(batch, stop - start, in_features).transpose(1, 2))
    return y


def bf16(x: torch.Tensor, r: torch.Tensor, layer: Layer) -> torch.Tensor:
    """``build_buf`` with weights, task vectors and inputs in bfloat16 (output back in float32)."""
    if "weight_bf16" not in layer:
        layer["weight_bf16"] = layer["weight"].bfloat16()
        layer["weight_tvs_bf16"] = layer["weight_tvs"].bfloat16()
    w, tvs = layer["weight_bf16"], layer["weight_tvs_bf16"]
    key = ("bf16", r.shape[0], *w.shape)
    if key not in _BUFFERS:
        _BUFFERS[key] = torch.empty(r.shape[0], w.numel(), dtype=torch.bfloat16)
    weights = torch.addmm(w.reshape(1, -1), r.bfloat16(), tvs.reshape(tvs.shape[0], -1), out=_BUFFERS[key])
    y = torch.bmm(x.bfloat16(), weights.view(r.shape[0], *w.shape).transpose(1, 2))
    return y.float() + _biases(r, layer)


def tokens(x: torch.Tensor, r: torch.Tensor, layer: Layer) -> torch.Tensor:
    """``x W_0^T + sum_t r_t (x tau_t^T)`` without per-sample weights."""
    w, tvs = layer["weight"], layer["weight_tvs"]
    experts, out_features = tvs.shape[0], w.shape[0]
    per_expert = (x @ tvs.reshape(experts * out_features, -1).T).view(*x.shape[:2], experts, out_features)
    mixed = torch.einsum("bnto,bt->bno", per_expert, r)
    return F.linear(x, w, None) + mixed + _biases(r, layer)


def mlp(fn: Callable, x: torch.Tensor, r: torch.Tensor, fc: Layer, proj: Layer) -> torch.Tensor:
    """A whole MLP (c_fc - GELU - c_proj) through one candidate."""
    return fn(F.gelu(fn(x, r, fc)), r, proj)


def main(argv: list[str] | None = None) -> dict:
    """Time every candidate on the MLP (median ms, ratio to dense); print a table and a JSON line."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    fc = make_layer(4 * args.width, args.width, args.experts, g)
    proj = make_layer(args.width, 4 * args.width, args.experts, g)
    x = torch.randn(args.batch, args.tokens, args.width, generator=g)
    r = 0.3 + 0.05 * torch.randn(args.batch, args.experts, generator=g)
    candidates: dict[str, Callable] = {
        "dense": dense, "library": library, "torch_ops": torch_ops, "build": build, "build_buf": build_buf,
        "chunked": lambda x_, r_, l_: chunked(x_, r_, l_, args.rows), "tokens": tokens, "bf16": bf16,
        "apply_only": apply_only,
    }
    times: dict[str, list[float]] = {name: [] for name in candidates}
    with torch.no_grad():
        reference = mlp(build, x, r, fc, proj)
        diffs = {name: float((mlp(fn, x, r, fc, proj) - reference).abs().max()) for name, fn in candidates.items()}
        for round_ in range(args.warmup + args.runs):
            for name, fn in candidates.items():
                start = time.perf_counter()
                mlp(fn, x, r, fc, proj)
                if round_ >= args.warmup:
                    times[name].append((time.perf_counter() - start) * 1000)
    ms = {name: statistics.median(t) for name, t in times.items()}
    print(f"one MLP {args.width}->{4 * args.width}->{args.width}, {args.tokens} tokens, batch {args.batch}, "
          f"T={args.experts}, {args.threads} threads, median of {args.runs} (forward, no grad)")
    print(f"{'candidate':<10} {'ms':>8} {'x dense':>8} {'max|diff|':>10}")
    for name in candidates:
        print(f"{name:<10} {ms[name]:8.2f} {ms[name] / ms['dense']:8.2f} {diffs[name]:10.1e}")
    result = {"mlp_ms": ms, "ratio_vs_dense": {k: v / ms["dense"] for k, v in ms.items()}, "max_abs_diff": diffs,
              "batch": args.batch, "threads": args.threads}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
