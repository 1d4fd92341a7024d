"""WEMoE's per-sample linear layer: ``y_b = x_b W_b^T + c_b`` with ``W_b = W_0 + sum_t r_bt tau_t``, for a batch.

:func:`stacked_ensembled_linear` is the op every exact WEMoE layer (``wemoe.moe.layer.WeightEnsemblingMLP``) runs for
its two matrices. One matmul builds every sample's weights, one batched matmul applies them; the weights are written
into a :class:`Workspace` that the layers of one model reuse instead of allocating 100s of MB per layer and pass, and
the backward pass rebuilds them instead of keeping them (``_EnsembledLinear``). On CPU in float32, for large layers at
batch >= 8 with few tokens (ViT-B/32), the forward pass instead calls the fused C++ kernel (``wemoe.moe.fused_kernel``)
that builds the weights tile by tile in cache and never writes them out; the torch-op path here is its reference, its
fallback, and the faster path for every other shape.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence

import torch

from wemoe.moe import fused_kernel


class Workspace:
    """Scratch memory that every WEMoE layer of one model reuses for its per-sample weights.

    Building ``W_b`` for a batch writes ``B x out x in`` floats (151 MB for a ViT-B/32 MLP matrix at batch 16). A fresh
    allocation that large is a new memory mapping whose pages fault and get zeroed on first touch, on every layer
    of every forward and backward pass; reusing one buffer removes that cost (ViT-B/32 forward 3.1x -> 1.8x the dense
    tower, ``bench/moe_vs_fusionbench.py``). The buffer serves every layer in turn (forward: ``W_b``, or the fused
    kernel's scratch; backward: ``W_b``, then ``dL/dW_b``), behind a lock, so two threads may share a model. Only CPU
    tensors use it (CUDA's caching allocator already reuses memory); requests above ``max_bytes`` are allocated per
    call instead of kept. ``release()`` frees what is kept.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._buffers: dict[torch.dtype, torch.Tensor] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def borrow(self, shape: Sequence[int], like: torch.Tensor) -> Iterator[torch.Tensor]:
        """A tensor of ``shape`` (contents undefined) on ``like``'s device and dtype, for use inside the block."""
        numel = math.prod(shape)
        if like.device.type != "cpu" or numel * like.element_size() > self.max_bytes:
            yield like.new_empty(shape)
            return
        with self._lock:
            key = like.dtype
            buffer = self._buffers.get(key)
            # a buffer made under torch.inference_mode() cannot be written outside it: make a normal one
            stale = buffer is not None and buffer.is_inference() and not torch.is_inference_mode_enabled()
            if buffer is None or buffer.numel() < numel or stale:
                self._buffers.pop(key, None)  # drop the old buffer before allocating: one at a time in memory
                buffer = self._buffers[key] = like.new_empty(numel)
            yield buffer[:numel].view(shape)

    def release(self) -> None:
        """Free the kept buffers (they are made again on the next call)."""
        with self._lock:
            self._buffers.clear()

    def __deepcopy__(self, memo: dict) -> Workspace:
        return Workspace(self.max_bytes)  # a copied model gets its own, empty scratch memory

    def kept_bytes(self) -> int:
        """Bytes held between calls."""
        return sum(b.numel() * b.element_size() for b in self._buffers.values())


def _sample_weights(routing: torch.Tensor, weight_stack: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Every sample's weights ``[B, out, in]`` = ``[r_b, 1] @ [tau_1 .. tau_T, W_0]``: one GEMM with K = T + 1.

    Keeping W_0 as the last row of the stack lets the GEMM add it (an ``addmm`` onto a broadcast W_0 first copies
    W_0 into every sample's slot: a measured 10% of an adaptation step). ``out``: where to write them.
    """
    ones = routing.new_ones(routing.shape[0], 1)
    flat = None if out is None else out.view(routing.shape[0], -1)
    weights = torch.mm(torch.cat([routing, ones], dim=1), weight_stack.reshape(weight_stack.shape[0], -1), out=flat)
    return weights.view(routing.shape[0], *weight_stack.shape[1:])


LONG_REDUCTION = 1 << 20
"""Inner products over at least this many weights are reduced in pieces (see :func:`_inner_products`)."""


def _inner_products(grad_weights: torch.Tensor, task_vectors: torch.Tensor) -> torch.Tensor:
    """``<grad_weights[b], task_vectors[t]>`` for every sample b and task t: ``[B, out, in] x [T, out, in] -> [B, T]``.

    Each inner product sums ``out x in`` terms (2.36M for a ViT-B/32 MLP matrix). As one float32 reduction that long
    it was 1.4-1.9e-5 off the float64 result (relative to the largest), so for long ones each output row is reduced
    over ``in`` in float32 (one batched GEMM over the rows) and the row sums are added in float64: 2-3e-7 off, and
    no slower (ViT-B/32 shapes, batch 8-64: 0.8-1.0x the time of the single product). Short ones (the pocket zoo's
    65K weights, 2e-6 off) keep the single product, which is faster there.
    """
    batch, experts = grad_weights.shape[0], task_vectors.shape[0]
    if grad_weights[0].numel() < LONG_REDUCTION:
        return grad_weights.reshape(batch, -1) @ task_vectors.reshape(experts, -1).T
    per_row = torch.bmm(task_vectors.permute(1, 0, 2), grad_weights.permute(1, 2, 0))  # [out, T, B]
    return per_row.sum(dim=0, dtype=torch.float64).T.to(grad_weights.dtype)


class _EnsembledLinear(torch.autograd.Function):
    """Forward of ``stacked_ensembled_linear`` that does not keep the per-sample weights for the backward pass.

    Autograd would keep ``W_b`` (``B x out x in`` floats per layer) alive until backward; here backward rebuilds it
    from the routing weights and the task vectors, so adaptation holds only the layer inputs and routing weights.
    Both passes write ``W_b`` (and backward, after it, ``dL/dW_b``) into the same workspace buffer. On CPU in
    float32 and for shapes where it pays (``fused_kernel.worthwhile``), the forward pass runs the fused kernel
    instead, which never writes ``W_b`` out.
    """

    @staticmethod
    def forward(ctx, x, routing, weight_stack, bias, bias_tvs, workspace):
        ctx.workspace = workspace
        ctx.save_for_backward(x, routing, weight_stack, bias_tvs)
        fused = (
            x.dim() == 3
            and x.numel() > 0
            and fused_kernel.worthwhile(x.shape[0], x.shape[1], *weight_stack.shape[1:], weight_stack.shape[0] - 1)
            and fused_kernel.usable(x, routing, weight_stack, bias, bias_tvs)
        )
        if fused:
            # CPU float32, a shape where it pays: weights built and applied tile by tile in cache, none written out;
            # the workspace lends the kernel its scratch (a fresh allocation of MBs page-faults on every call)
            with workspace.borrow((fused_kernel.scratch_numel(x, weight_stack),), x) as scratch:
                return fused_kernel.ensembled_linear_forward(x, routing, weight_stack, bias, bias_tvs, scratch)
        biases = torch.addmm(bias.reshape(1, -1), routing, bias_tvs)
        with workspace.borrow((routing.shape[0], *weight_stack.shape[1:]), x) as buffer:
            weights = _sample_weights(routing, weight_stack, out=buffer)
            return torch.baddbmm(biases.unsqueeze(1), x, weights.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad_out):
        x, routing, weight_stack, bias_tvs = ctx.saved_tensors
        workspace: Workspace = ctx.workspace
        batch, shape = routing.shape[0], weight_stack.shape[1:]
        grad_x = grad_routing = None
        if ctx.needs_input_grad[0]:
            with workspace.borrow((batch, *shape), x) as buffer:
                grad_x = torch.bmm(grad_out, _sample_weights(routing, weight_stack, out=buffer))
        if ctx.needs_input_grad[1]:
            # dL/dr_bt = <dL/dW_b, tau_t> + <dL/dc_b, beta_t>, with dL/dW_b = grad_out_b^T x_b.
            with workspace.borrow((batch, *shape), x) as buffer:  # W_b is no longer needed: reuse its memory
                grad_weights = torch.bmm(grad_out.transpose(1, 2), x, out=buffer)
                grad_routing = _inner_products(grad_weights, weight_stack[:-1])
            grad_routing += grad_out.sum(dim=1) @ bias_tvs.T
        return grad_x, grad_routing, None, None, None, None


def stacked_ensembled_linear(
    x: torch.Tensor,
    routing: torch.Tensor,
    weight_stack: torch.Tensor,
    bias: torch.Tensor,
    bias_tvs: torch.Tensor,
    workspace: Workspace | None = None,
) -> torch.Tensor:
    """``y_b = x_b W_b^T + c_b`` with ``W_b = W_0 + sum_t routing[b, t] tau_t`` and
    ``c_b = bias + routing_b @ bias_tvs``.

    Shapes: x ``[B, N, in]``, routing ``[B, T]``, weight_stack ``[T + 1, out, in]`` (the task vectors, then W_0),
    bias ``[out]``, bias_tvs ``[T, out]``. Returns ``[B, N, out]``. One GEMM builds every sample's weights, one
    batched GEMM applies them; weights, task vectors and biases are frozen (no gradient flows to them).
    ``workspace``: where the per-sample weights are written (default: a fresh one, i.e. fresh memory every call).
    """
    return _EnsembledLinear.apply(x, routing, weight_stack, bias, bias_tvs, workspace or Workspace(max_bytes=0))
