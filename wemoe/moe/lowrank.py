"""Low-rank experts for WEMoE: each MLP task vector kept as its top-k singular components, applied without ever
building a per-sample weight matrix.

A task vector ``tau_t`` (``[out, in]``) is kept as ``tau_t ~ U_t S_t V_t^T`` with its k largest singular values. A
WEMoE linear layer with routing weights ``r_b`` then is

    y_bn = x_bn W_0^T + sum_t r_bt (x_bn V_t)(U_t S_t)^T + c_b

and every term is a GEMM over all tokens of the batch: ``z = x [V_1 .. V_T]`` (``[B*N, T*k]``), each sample's
``z`` scaled by its routing weights, then ``[x | r * z] [W_0 | U_1 S_1 .. U_T S_T]^T`` in one GEMM with an inner
dimension of ``in + T*k`` (``in`` alone is the dense layer). The layer keeps ``T*k*(in + out)`` floats per matrix
instead of ``T*out*in``. Plain torch ops, so autograd gives the backward pass into the routing weights (and the
inputs); nothing of size ``B x out x in`` is ever held.

``WeightEnsemblingMLP``'s low-rank form (``wemoe.moe.layer.LowRankWeightEnsemblingMLP``) stores these factors.

**Anchored at task arithmetic** (the default of ``wemoe.moe.layer.WEMoEConfig.anchor``): the first block of ``up`` is
task arithmetic's merged weight ``W_0 + lambda * sum_t tau_t`` with the *exact* task vectors, and the rank-k experts
add ``(r_bt - lambda) tau~_t``. Untrained routers (``r = lambda``) then give task arithmetic exactly, and the
truncation only touches how far the routing moves from lambda; on the pocket zoo k = 8 is then within 0.2 points of
exact WEMoE after adaptation, where the plain form (``anchor='pretrained'``: ``W_0 + sum_t r_bt tau~_t``) lost 2.8
(bench/README.md, "Compressed experts"). Either way the layer equals an exact WEMoE layer: with the pretrained
weight ``W_0 + lambda * sum_t (tau_t - tau~_t)`` and the task vectors ``tau~_t``, which the tests check.
"""

from __future__ import annotations

import torch

from wemoe.moe import fused_kernel, kernel_policy

KERNEL_MIN_ROWS = 512
"""The fused kernel (with no experts) serves a plain GEMM of at least this many rows (see :func:`matmul_t`)."""


def kept_rank(rank: int, shape: torch.Size | tuple[int, ...]) -> int:
    """The rank actually kept for a ``[..., out, in]`` matrix: ``rank``, at most ``min(out, in)`` (full rank)."""
    if rank < 1:
        raise ValueError(f"A low-rank factorisation needs rank >= 1, got {rank}.")
    return min(rank, shape[-2], shape[-1])


def low_rank_factors(task_vectors: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``rank`` singular factors of every task vector: ``[T, out, in]`` -> ``(U S [T, out, k], V [T, in, k])``.

    ``(U S) @ V^T`` is the best rank-k approximation of each task vector (Eckart-Young); k is ``rank`` at most
    ``min(out, in)``. An all-zero task vector (a placeholder that a saved model fills in) gets zero factors without
    a decomposition.
    """
    k = kept_rank(rank, task_vectors.shape)
    experts, out_features, in_features = task_vectors.shape
    if not bool(task_vectors.any()):
        zeros = task_vectors.new_zeros
        return zeros(experts, out_features, k), zeros(experts, in_features, k)
    u, s, vh = torch.linalg.svd(task_vectors, full_matrices=False)
    return (u[..., :k] * s[:, None, :k]).contiguous(), vh[:, :k, :].transpose(1, 2).contiguous()


def energy_kept(task_vectors: torch.Tensor, rank: int) -> torch.Tensor:
    """Per task vector, the share of its squared Frobenius norm that the top-``rank`` components keep (``[T]``)."""
    k = kept_rank(rank, task_vectors.shape)
    s = torch.linalg.svdvals(task_vectors.double())
    total = s.square().sum(dim=-1)
    return torch.where(total > 0, s[..., :k].square().sum(dim=-1) / total.clamp_min(1e-300), torch.ones_like(total))


def pack_factors(weight: torch.Tensor, us: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two matrices a low-rank layer keeps: ``up = [W_0 | U_1 S_1 .. U_T S_T]`` ``[out, in + T*k]`` and
    ``down = [V_1 .. V_T]`` ``[in, T*k]`` (expert t's k columns at ``t*k .. t*k + k - 1`` in both)."""
    experts, out_features, k = us.shape
    up = torch.cat([weight, us.permute(1, 0, 2).reshape(out_features, experts * k)], dim=1)
    down = v.permute(1, 0, 2).reshape(v.shape[1], experts * k)
    return up.contiguous(), down.contiguous()


def unpack_task_vectors(up: torch.Tensor, down: torch.Tensor, experts: int) -> torch.Tensor:
    """The rank-k task vectors ``(U_t S_t) V_t^T`` ``[T, out, in]`` that a packed layer computes with."""
    in_features = down.shape[0]
    k = down.shape[1] // experts
    us = up[:, in_features:].reshape(up.shape[0], experts, k).permute(1, 0, 2)
    v = down.reshape(in_features, experts, k).permute(1, 0, 2)
    return us @ v.transpose(1, 2)


class _KernelMatmul(torch.autograd.Function):
    """``x @ weight^T`` through the fused kernel with no experts (forward); the backward pass is torch's GEMM."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(weight)
        out_features = weight.shape[0]
        y = fused_kernel.ensembled_linear_forward(x.unsqueeze(0), x.new_empty(1, 0), weight.unsqueeze(0),
                                                  x.new_zeros(out_features), x.new_empty(0, out_features))
        return y[0]

    @staticmethod
    def backward(ctx, grad_out):
        (weight,) = ctx.saved_tensors
        return (grad_out @ weight if ctx.needs_input_grad[0] else None), None


def matmul_t(x: torch.Tensor, weight: torch.Tensor, kernel: bool | None = None) -> torch.Tensor:
    """``x @ weight^T`` (``[M, K] x [O, K] -> [M, O]``, no gradient to ``weight``) by the faster GEMM for its shape.

    On CPU in float32 with at least ``KERNEL_MIN_ROWS`` rows the fused kernel with no experts runs it: on the AMD EPYC
    box its matmul beat MKL's by 1.4-1.6x at 800 rows of ViT-B/32's MLP shapes, and lost 1.4-2x at 50 rows
    (bench/README.md, "Compressed experts"); a policy measured on this CPU (``python -m wemoe calibrate-kernel``)
    replaces that row limit by its own measurements. ``WEMOE_FUSED_KERNEL=0`` turns it off. Elsewhere: torch.
    ``kernel``: True uses the kernel whatever the rows (where it is usable), False never (None: the rule above).
    """
    if kernel is None:
        policy = kernel_policy.measured()
        kernel = policy.matmul_kernel_for(x.shape[0]) if policy is not None else x.shape[0] >= KERNEL_MIN_ROWS
    wanted = kernel
    if wanted and fused_kernel.usable(x, weight) and weight.is_contiguous():
        return _KernelMatmul.apply(x.contiguous(), weight)
    return x @ weight.T


def lowrank_ensembled_linear(
    x: torch.Tensor,
    routing: torch.Tensor,
    up: torch.Tensor,
    down: torch.Tensor,
    bias: torch.Tensor,
    bias_tvs: torch.Tensor,
    anchor: float = 0.0,
) -> torch.Tensor:
    """``y_b = x_b A^T + sum_t (routing[b, t] - anchor) (x_b V_t)(U_t S_t)^T + c_b``, ``c_b = bias + routing_b @
    bias_tvs``, where ``A`` is ``up``'s first ``in`` columns: the pretrained weight with ``anchor`` 0, or the
    task-arithmetic merge ``W_0 + anchor * sum_t tau_t`` (exact task vectors) with ``anchor`` its lambda.

    Shapes: x ``[B, N, in]``, routing ``[B, T]``, up ``[out, in + T*k]`` and down ``[in, T*k]`` (see
    :func:`pack_factors`), bias ``[out]``, bias_tvs ``[T, out]``; returns ``[B, N, out]``. Two GEMMs over all
    ``B*N`` tokens (``x @ down``, then ``[x | (r - anchor) * z] @ up^T`` by :func:`matmul_t`), plus the biases;
    differentiable in ``x`` and ``routing`` (autograd).
    """
    batch, tokens, in_features = x.shape
    experts = routing.shape[1]
    flat = x.reshape(batch * tokens, in_features)
    scale = routing - anchor if anchor else routing
    z = (flat @ down).view(batch, tokens, experts, -1) * scale[:, None, :, None]
    biases = torch.addmm(bias.unsqueeze(0), routing, bias_tvs)
    y = matmul_t(torch.cat([flat, z.reshape(batch * tokens, -1)], dim=1), up)
    return y.view(batch, tokens, -1) + biases.unsqueeze(1)


def merged_weight(up: torch.Tensor, down: torch.Tensor, routing: torch.Tensor, anchor: float = 0.0) -> torch.Tensor:
    """One weight ``A + sum_t (r_t - anchor) (U_t S_t) V_t^T`` ``[out, in]`` for routing ``[T]`` shared by every
    sample (``A``: ``up``'s first ``in`` columns, see :func:`lowrank_ensembled_linear`)."""
    in_features = down.shape[0]
    k = down.shape[1] // routing.shape[0]
    return torch.addmm(up[:, :in_features], up[:, in_features:] * (routing - anchor).repeat_interleave(k), down.T)
