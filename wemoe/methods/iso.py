"""Iso-C and Iso-CTS, isotropic merging in common (and task-specific) subspaces (Marczak et al., ICML 2025,
arXiv 2502.04959).

- **Iso-C**: per weight matrix, the summed task matrix ``sum_t tau_t = U S V^T`` with its spectrum flattened to the
  mean singular value: ``mean(S) U V^T``.
- **Iso-CTS**: the top ``common_fraction`` of the summed matrix's singular directions (the common subspace), and
  for each task the top directions of its matrix with the common subspace projected out, the same number for every
  task, filling the rank; the directions are orthonormalised (polar factors) and the spectrum flattened as in Iso-C.

Other tensors are averaged. The merged task vector is added with scale ``alpha`` (1.0 in FusionBench). The attention
input is merged as q, k, v or fused as the ``attention`` parameter says (``wemoe.methods.matrix_merge``).
"""

from __future__ import annotations

import torch
from torch import nn

from wemoe.methods.base import MergeMethod, Param
from wemoe.methods.matrix_merge import ATTENTION, attention_layout, merge_matrices, polar
from wemoe.methods.registry import register
from wemoe.methods.tsv_m import ALPHA
from wemoe.task_vector import task_vectors
from wemoe.zoo.zoo import Zoo


def iso_c_matrix(deltas: torch.Tensor) -> torch.Tensor:
    """Iso-C's merged task matrix of the stacked task matrices ``deltas`` ``[T, m, n]``."""
    u, s, vh = torch.linalg.svd(deltas.sum(dim=0), full_matrices=False)
    return s.mean() * (u @ vh)


def subspace_sizes(rank: int, tasks: int, common_fraction: float) -> tuple[int, int]:
    """(common directions, directions per task): the task-specific part divisible by the number of tasks, as the
    reference code rounds it."""
    common = int(rank * common_fraction)
    specific_total = min(round((rank - common) / tasks), rank // tasks) * tasks  # never more than the rank
    common = rank - specific_total
    return common, (rank - common) // tasks


def iso_cts_matrix(deltas: torch.Tensor, common_fraction: float) -> torch.Tensor:
    """Iso-CTS's merged task matrix of the stacked task matrices ``deltas`` ``[T, m, n]``."""
    tasks = deltas.shape[0]
    common, per_task = subspace_sizes(min(deltas.shape[1:]), tasks, common_fraction)
    u, s, vh = torch.linalg.svd(deltas.sum(dim=0), full_matrices=False)
    u_common = u[:, :common]
    # each task's matrix outside the common subspace, projected as the reference code does ((U U^T) tau): the
    # task directions are cut inside a dense spectrum, where the rounding of (U (U^T tau)) moved them by 1e-4 relative
    specific = deltas - (u_common @ u_common.T) @ deltas
    u_t, s_t, vh_t = torch.linalg.svd(specific, full_matrices=False)
    u_all = torch.cat([*u_t[:, :, :per_task], u_common], dim=1)
    s_all = torch.cat([s_t[:, :per_task].reshape(-1), s[:common]])
    vh_all = torch.cat([*vh_t[:, :per_task, :], vh[:common]], dim=0)
    return s_all.mean() * (polar(u_all) @ polar(vh_all))


@register
class IsoC(MergeMethod):
    name = "iso_c"
    pretty_name = "Iso-C (isotropic, common subspace)"
    description = "Sum the task matrices, then flatten each matrix's singular values to their mean."
    reference_url = "https://arxiv.org/abs/2502.04959"
    order = 26
    params = (ALPHA, ATTENTION)

    def merge(self, zoo: Zoo, **params) -> nn.Module:
        vectors = list(task_vectors(zoo.base_state, zoo.experts).values())
        merged = merge_matrices(vectors, iso_c_matrix, attention_layout(zoo, params["attention"]))
        return zoo.visual_with(merged.apply_to(zoo.base_state, params["alpha"]))


@register
class IsoCTS(MergeMethod):
    name = "iso_cts"
    pretty_name = "Iso-CTS (isotropic, common + task subspaces)"
    description = "Iso-C on the common subspace plus each task's own directions outside it, spectrum flattened."
    reference_url = "https://arxiv.org/abs/2502.04959"
    order = 27
    params = (
        ALPHA,
        Param("common_fraction", float, 0.8, "Fraction of each matrix's rank given to the common subspace.",
              min=0.0, max=1.0),
        ATTENTION,
    )

    def merge(self, zoo: Zoo, **params) -> nn.Module:
        vectors = list(task_vectors(zoo.base_state, zoo.experts).values())
        merged = merge_matrices(vectors, lambda deltas: iso_cts_matrix(deltas, params["common_fraction"]),
                                attention_layout(zoo, params["attention"]))
        return zoo.visual_with(merged.apply_to(zoo.base_state, params["alpha"]))
