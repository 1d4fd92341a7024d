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
from wemoe.methods.matrix_merge import ATTENTION, attention_layout, merge_matrices, polar
from wemoe.methods.registry import register
from wemoe.task_vector import task_vectors
from wemoe.zoo.zoo import Zoo

ALPHA = Param("alpha", float, 1.0, "Scale of the merged task vector (1.0 in the paper).", min=0.0, max=3.0)


def kept_components(rank: int, tasks: int) -> int:
    """Singular components each task keeps: the top 1/T of ``rank``, rounded down as the reference code does."""
    return int(rank * (1.0 / tasks))


def tsv_matrix(deltas: torch.Tensor) -> torch.Tensor:
    """TSV-M's merged task matrix of the stacked task matrices ``deltas`` ``[T, m, n]``."""
    tasks = deltas.shape[0]
    keep = kept_components(min(deltas.shape[1:]), tasks)
    if keep == 0:
        return torch.zeros_like(deltas[0])
    u, s, vh = torch.linalg.svd(deltas, full_matrices=False)  # batched over tasks
    u_all = torch.cat(list(u[:, :, :keep]), dim=1)  # [m, T*keep]
    s_all = s[:, :keep].reshape(-1)  # [T*keep]
    vh_all = torch.cat(list(vh[:, :keep, :]), dim=0)  # [T*keep, n]
    return (polar(u_all) * s_all) @ polar(vh_all)


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
