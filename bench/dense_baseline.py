"""The dense baseline of the WEMoE benchmarks: the fastest dense path this machine has, and what machine it is.

Dense is timed twice, through torch's GEMM (MKL/oneDNN) and with every MLP matrix through our fused kernel with no
experts (``wemoe.moe.lowrank.matmul_t(..., kernel=True)``: the kernel's own matmul, torch's GEMM for the backward pass);
the benchmarks state ratios against the faster one and say which won. ``cpu_model`` and ``gemm_gflops`` go with
every figure.
"""

from __future__ import annotations

import copy
import statistics
import subprocess
import time

import torch
from torch import nn

from wemoe.moe import fused_kernel, lowrank


def cpu_model() -> str:
    """``lscpu``'s model name (or the platform's processor string)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    import platform

    return platform.processor() or platform.machine()


def gemm_gflops(rows: int = 800, inner: int = 768, cols: int = 3072, runs: int = 5) -> dict[str, float]:
    """GFLOPS of one float32 ``[rows, inner] x [inner, cols]`` GEMM (default: ViT-B/32's c_fc at batch 16), through
    torch and through the fused kernel with no experts (median of ``runs``)."""
    generator = torch.Generator().manual_seed(0)
    x, w = torch.randn(rows, inner, generator=generator), torch.randn(cols, inner, generator=generator)
    rates = {}
    for name, kernel in (("torch", False), ("kernel", True)):
        if kernel and not fused_kernel.available():
            continue
        lowrank.matmul_t(x, w, kernel)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            lowrank.matmul_t(x, w, kernel)
            times.append(time.perf_counter() - start)
        rates[name] = 2 * rows * inner * cols / statistics.median(times) / 1e9
    return rates


class KernelLinear(nn.Module):
    """A frozen ``nn.Linear`` whose matmul runs through the fused kernel with no experts (torch where unusable)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.register_buffer("weight", linear.weight.detach().contiguous().clone())
        self.register_buffer("bias", linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        return (lowrank.matmul_t(flat, self.weight, kernel=True) + self.bias).view(*x.shape[:-1], -1)


def with_kernel_mlps(tower: nn.Module) -> nn.Module:
    """A copy of a dense open_clip image tower whose MLP matrices (``c_fc``, ``c_proj``) run through the kernel."""
    tower = copy.deepcopy(tower)
    for block in tower.transformer.resblocks:
        block.mlp.c_fc = KernelLinear(block.mlp.c_fc)
        block.mlp.c_proj = KernelLinear(block.mlp.c_proj)
    return tower


def fastest_dense(times: dict[str, float]) -> tuple[str, float]:
    """``("dense_torch" | "dense_kernel", ms)``: the faster of the two dense variants in ``times``."""
    name = min((n for n in ("dense_torch", "dense_kernel") if n in times), key=lambda n: times[n])
    return name, times[name]
