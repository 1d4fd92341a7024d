"""TSV-M, task singular vectors merging (Gargiulo et al., CVPR 2025, arXiv 2412.00081).

Per weight matrix: each task keeps the top ``1/T`` of its singular components (``U_t S_t V_t^T``, truncated); the
kept components of all tasks are concatenated into ``U = [U_1 .. U_T]``, ``S``, ``V = [V_1 .. V_T]``, the
concatenated singular vectors are decorrelated (replaced by their nearest orthonormal matrices, the polar factors)
and the matrix ``polar(U) diag(S) polar(V)^T`` is the merged task matrix. Other tensors are averaged. The merged task
vector is added with scale ``alpha`` (1.0 in the paper and FusionBench). The attention input is merged as q, k, v
or fused as the ``attention`` parameter says (``wemoe.methods.matrix_merge``).
"""

from __future__ import annotations

import torch
from torch import nn

from wemoe.methods.base import MergeMethod, Param
from wemoe.methods.matrix_merge import ATTENTION, attention_layout, merge_matrices
from wemoe.methods.registry import register
from wemoe.task_vector import task_vectors
from wemoe.zoo.zoo import Zoo

ALPHA = Param("alpha", float, 1.0, "Scale of the merged task vector (1.0 in the paper).", min=0.0, max=3.0)


def kept_components(rank: int, tasks: int) -> int:
    """Singular components each task keeps: the top 1/T of ``rank``, rounded down as the reference code does."""
    return int(rank * (1.0 / tasks))


def tsv_matrix(deltas: torch.Tensor) -> torch.Tensor:
    """TSV-M's merged task matrix of the stacked task matrices ``deltas`` ``[T, m, n]``.

    Computed as FusionBench's ``compute_and_sum_svd_mem_reduction`` computes it, operation for operation: the kept
    components placed in ``[m, rank]`` / ``[rank]`` / ``[rank, n]`` buffers (zero where ``T * keep < rank``), each
    polar factor as ``U @ Vh`` of its SVD, and the product ``multi_dot(U_u, Vh_u, diag(S), U_v, Vh_v)`` in
    ``multi_dot``'s order. On task vectors that share directions the concatenated singular vectors are nearly rank
    deficient (condition numbers near 1e6 on ViT-B/32-shaped ones), so float32 rounding moves the result by ~1e-4 of
    its largest entry and any other product order lands elsewhere inside that rounding; this order gives
    FusionBench's float32 numbers bit for bit."""
    tasks = deltas.shape[0]
    rank = min(deltas.shape[1:])
    keep = kept_components(rank, tasks)
    if keep == 0:
        return torch.zeros_like(deltas[0])
    u, s, vh = torch.linalg.svd(deltas, full_matrices=False)  # batched over tasks: the same numbers as one by one
    u_all = torch.zeros_like(u[0])  # [m, rank]
    s_all = torch.zeros_like(s[0])  # [rank]
    vh_all = torch.zeros_like(vh[0])  # [rank, n]
    for t in range(tasks):
        u_all[:, t * keep:(t + 1) * keep] = u[t, :, :keep]
        s_all[t * keep:(t + 1) * keep] = s[t, :keep]
        vh_all[t * keep:(t + 1) * keep, :] = vh[t, :keep, :]
    del u, vh
    u_u, _, vh_u = torch.linalg.svd(u_all, full_matrices=False)  # polar(U) = u_u @ vh_u
    u_v, _, vh_v = torch.linalg.svd(vh_all, full_matrices=False)  # polar(Vh) = u_v @ vh_v
    return torch.linalg.multi_dot((u_u, vh_u, torch.diag(s_all), u_v, vh_v))


@register
class TSVMerge(MergeMethod):
    name = "tsv_m"
    pretty_name = "TSV-M (task singular vectors)"
    description = "Keep each task's top 1/T singular components per matrix, decorrelate them across tasks, sum."
    reference_url = "https://arxiv.org/abs/2412.00081"
    order = 25
    params = (ALPHA, ATTENTION)

    def merge(self, zoo: Zoo, **params) -> nn.Module:
        vectors = list(task_vectors(zoo.base_state, zoo.experts).values())
        merged = merge_matrices(vectors, tsv_matrix, attention_layout(zoo, params["attention"]))
        return zoo.visual_with(merged.apply_to(zoo.base_state, params["alpha"]))
