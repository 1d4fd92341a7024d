"""Measuring where the fused kernel pays on this machine (``python -m wemoe calibrate-kernel``).

For a ViT-B-sized MLP (``width`` -> 4 x ``width`` -> ``width``) and every cell of a grid of batch x tokens x experts,
one exact WEMoE forward of both matrices (``ensembled_linear.stacked_ensembled_linear``, with a reused workspace as in a
model) is timed with the kernel forced on and forced off; for the compressed experts, the plain GEMM of their packed
matrices (``wemoe.moe.lowrank.matmul_t``, rank 8 x 8 experts) is timed by rows the same way. Rounds interleave the two
paths; each figure is the median of ``runs`` rounds after a warm-up round. The result is a
``wemoe.moe.kernel_policy.MeasuredPolicy``; :func:`kernel_policy.write` stores it for this CPU and thread count.
The default grid takes about two minutes on 2 cores.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import torch

from wemoe.errors import WemoeError
from wemoe.moe import fused_kernel, lowrank
from wemoe.moe.ensembled_linear import Workspace, stacked_ensembled_linear
from wemoe.moe.kernel_policy import Cell, MeasuredPolicy, RowsCell, cpu_model

BATCHES = (1, 4, 16, 64)
TOKENS = (50, 197)
EXPERTS = (2, 8, 16)
ROWS = (50, 200, 800, 3200)
COMPRESSED_INNER = 8 * 8  # the compressed experts' default: rank 8 for each of 8 experts


def time_round_robin(paths: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median milliseconds of each path: one warm-up round, then ``runs`` rounds in which every path runs once in
    turn (the benchmarks time their variants this way too)."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for round_ in range(runs + 1):
        for name, run in paths.items():
            start = time.perf_counter()
            run()
            if round_:
                times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in times.items()}


def _with_switch(value: str, run: Callable[[], object]) -> Callable[[], object]:
    def switched_run() -> object:
        with fused_kernel.switched(value):
            return run()
    return switched_run


def check_grid(batches: Sequence[int], tokens: Sequence[int], experts: Sequence[int], rows: Sequence[int],
               width: int, runs: int) -> None:
    """WemoeError naming the first bad value of the grid."""
    for name, values in (("batches", batches), ("tokens", tokens), ("experts", experts), ("rows", rows)):
        if not values or any(v < 1 for v in values):
            raise WemoeError(f"--{name} needs one or more whole numbers >= 1 (comma-separated), got {list(values)}.")
    if max(experts) > fused_kernel.MAX_EXPERTS:
        raise WemoeError(f"--experts goes up to {fused_kernel.MAX_EXPERTS}: beyond, layers always take torch ops "
                         f"(the kernel's unrolled paths end there), got {max(experts)}.")
    if width < 8 or runs < 1:
        raise WemoeError(f"--width needs >= 8 and --runs >= 1, got width {width}, runs {runs}.")


@torch.no_grad()
def calibrate(batches: Sequence[int] = BATCHES, tokens: Sequence[int] = TOKENS, experts: Sequence[int] = EXPERTS,
              rows: Sequence[int] = ROWS, width: int = 768, runs: int = 3, seed: int = 0,
              progress: Callable[[str], None] | None = None) -> MeasuredPolicy:
    """Time the kernel against torch ops on this machine over the grid; returns the measured policy (not stored).

    WemoeError when the kernel cannot be built here (no compiler, or a failed build) or the grid is bad."""
    check_grid(batches, tokens, experts, rows, width, runs)
    if fused_kernel.load() is None:
        raise WemoeError("The fused kernel is not available here (no C++ compiler, or its build failed): every "
                         "layer runs torch ops already, so there is nothing to calibrate.")
    if progress is not None:
        progress(f"timing the fused kernel against torch ops on {cpu_model()}, {torch.get_num_threads()} threads")
    generator = torch.Generator().manual_seed(seed)
    hidden = 4 * width
    cells = []
    for n_experts in experts:
        stacks = [torch.randn(n_experts + 1, hidden, width, generator=generator) * 0.02,
                  torch.randn(n_experts + 1, width, hidden, generator=generator) * 0.02]
        biases = [(torch.zeros(hidden), torch.zeros(n_experts, hidden)),
                  (torch.zeros(width), torch.zeros(n_experts, width))]
        workspace = Workspace()
        for batch in batches:
            routing = torch.rand(batch, n_experts, generator=generator)
            for n_tokens in tokens:
                inputs = [torch.randn(batch, n_tokens, width, generator=generator),
                          torch.randn(batch, n_tokens, hidden, generator=generator)]

                def mlp() -> None:  # timed right below, in this iteration: the loop variables are the current ones
                    for x, stack, (bias, bias_tvs) in zip(inputs, stacks, biases, strict=True):  # noqa: B023
                        stacked_ensembled_linear(x, routing, stack, bias, bias_tvs, workspace)  # noqa: B023

                ms = time_round_robin({"kernel": _with_switch("1", mlp), "torch": _with_switch("0", mlp)}, runs)
                cells.append(Cell(batch, n_tokens, n_experts, round(ms["kernel"], 3), round(ms["torch"], 3)))
                if progress is not None:
                    progress(f"T={n_experts:2d} batch {batch:3d} tokens {n_tokens:3d}: kernel {ms['kernel']:8.1f} ms, "
                             f"torch {ms['torch']:8.1f} ms -> {'kernel' if cells[-1].kernel_wins else 'torch'}")
        workspace.release()
    packed = [torch.randn(hidden, width + COMPRESSED_INNER, generator=generator),
              torch.randn(width, hidden + COMPRESSED_INNER, generator=generator)]
    rows_cells = []
    for n_rows in rows:
        xs = [torch.randn(n_rows, w.shape[1], generator=generator) for w in packed]
        ms = time_round_robin({
            "kernel": lambda xs=xs: [lowrank.matmul_t(x, w, kernel=True) for x, w in zip(xs, packed, strict=True)],
            "torch": lambda xs=xs: [lowrank.matmul_t(x, w, kernel=False) for x, w in zip(xs, packed, strict=True)],
        }, runs)
        rows_cells.append(RowsCell(n_rows, round(ms["kernel"], 3), round(ms["torch"], 3)))
        if progress is not None:
            progress(f"compressed GEMM, {n_rows:5d} rows: kernel {ms['kernel']:8.1f} ms, torch {ms['torch']:8.1f} ms"
                     f" -> {'kernel' if rows_cells[-1].kernel_wins else 'torch'}")
    return MeasuredPolicy(cells=tuple(cells), rows=tuple(rows_cells), cpu=cpu_model(), threads=torch.get_num_threads(),
                          width=width, measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


__all__ = ["calibrate", "check_grid", "time_round_robin", "BATCHES", "TOKENS", "EXPERTS", "ROWS"]
