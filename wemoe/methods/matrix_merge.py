"""Shared by the training-free subspace merges (TSV-M, Iso-C, Iso-CTS, WUDI): one rule for weight matrices, the mean
for everything else.

Every 2-D tensor of the task vectors (attention and MLP weights, the positional embedding, the projection) is merged
by the method's matrix rule; every other tensor (biases, LayerNorms, the class embedding, the patch convolution) is
averaged over the tasks, as the methods' reference code does. A matrix whose task vectors are all zero (a weight no
expert changed, e.g. the pocket zoo's frozen attention) merges to zero without calling the rule.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from wemoe.stopping import check_stop
from wemoe.task_vector import TaskVector

MatrixRule = Callable[[torch.Tensor], torch.Tensor]
"""Merges the stacked task matrices ``[T, m, n]`` of one weight into one ``[m, n]`` merged task matrix."""


def merge_matrices(vectors: list[TaskVector], rule: MatrixRule) -> TaskVector:
    """The merged task vector: ``rule`` on every 2-D tensor (stacked over tasks), the mean on the others."""
    merged = {}
    for key in vectors[0].keys():  # noqa: SIM118  (a TaskVector has keys() but no __iter__)
        check_stop()  # a cancelled merge stops between matrices
        stacked = torch.stack([v[key] for v in vectors])
        if stacked.ndim == 3 and bool(stacked.any()):
            merged[key] = rule(stacked)
        elif stacked.ndim == 3:
            merged[key] = torch.zeros_like(stacked[0])
        else:
            merged[key] = stacked.mean(dim=0)
    return TaskVector(merged)


def polar(matrix: torch.Tensor) -> torch.Tensor:
    """The orthonormal factor of ``matrix`` (its polar decomposition, ``U @ Vh`` of its SVD): the nearest matrix with
    orthonormal columns (or rows, when it is wide)."""
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    return u @ vh
