"""Shared by the training-free subspace merges (TSV-M, Iso-C, Iso-CTS, WUDI): one rule for weight matrices, the mean
for everything else.

Every 2-D tensor of the task vectors (attention and MLP weights, the positional embedding, the projection) is merged
by the method's matrix rule; every other tensor (biases, LayerNorms, the class embedding, the patch convolution) is
averaged over the tasks, as the methods' reference code does. A matrix whose task vectors are all zero (a weight no
expert changed, e.g. the pocket zoo's frozen attention) merges to zero without calling the rule.

**Which matrix the rule sees at a block's attention input is a declared choice** (:data:`ATTENTION`): ``split``
gives it q, k and v as three ``[d, d]`` matrices, as Hugging Face ``CLIPVisionModel`` holds them and FusionBench
merges the paper's experts; ``fused`` gives it open_clip's one ``in_proj_weight`` ``[3d, d]`` (rows q, then k, then
v), as the task-vector papers' open_clip code does. A rule taking an SVD or a Gram matrix gives different merges
(Iso-C on ViT-B/32-shaped task vectors: 57% apart in relative Frobenius norm). ``source`` (the default) follows the
layout the experts were published in (:attr:`wemoe.zoo.zoo.Zoo.source_layout`: split for Hugging Face checkpoints,
fused for open_clip ones and the pocket zoo).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from wemoe.params import Param
from wemoe.stopping import check_stop
from wemoe.task_vector import TaskVector
from wemoe.zoo.zoo import Zoo

MatrixRule = Callable[[torch.Tensor], torch.Tensor]
"""Merges the stacked task matrices ``[T, m, n]`` of one weight into one ``[m, n]`` merged task matrix."""


LAYOUTS = ("split", "fused")
ATTENTION = Param(
    "attention", str, "source",
    "The attention input a per-matrix rule sees: split (q, k, v as three matrices, as FusionBench merges Hugging Face "
    "experts), fused (open_clip's one in_proj matrix), or source (split for experts from Hugging Face checkpoints, "
    "fused for open_clip ones).",
    choices=("source", *LAYOUTS),
)
ATTENTION_INPUT = "attn.in_proj_weight"  # open_clip's fused q, k, v weight, [3d, d]


def attention_layout(zoo: Zoo, choice: str) -> str:
    """``split`` or ``fused``: the layout ``choice`` (an :data:`ATTENTION` value) means for ``zoo``'s experts."""
    return zoo.source_layout if choice == "source" else choice


def _rule_or_zero(stacked: torch.Tensor, rule: MatrixRule) -> torch.Tensor:
    return rule(stacked) if bool(stacked.any()) else torch.zeros_like(stacked[0])


def merge_matrices(vectors: list[TaskVector], rule: MatrixRule, attention: str = "fused") -> TaskVector:
    """The merged task vector: ``rule`` on every 2-D tensor (stacked over tasks), the mean on the others; with
    ``attention="split"`` each ``attn.in_proj_weight`` is merged as its q, k and v thirds and fused again."""
    if attention not in LAYOUTS:
        raise ValueError(f"attention must be one of {LAYOUTS}, got {attention!r}")
    merged = {}
    for key in vectors[0].keys():  # noqa: SIM118  (a TaskVector has keys() but no __iter__)
        check_stop()  # a cancelled merge stops between matrices
        stacked = torch.stack([v[key] for v in vectors])
        if stacked.ndim == 3 and attention == "split" and key.endswith(ATTENTION_INPUT):
            merged[key] = torch.cat([_rule_or_zero(part, rule) for part in stacked.chunk(3, dim=1)], dim=0)
        elif stacked.ndim == 3:
            merged[key] = _rule_or_zero(stacked, rule)
        else:
            merged[key] = stacked.mean(dim=0)
    return TaskVector(merged)


def polar(matrix: torch.Tensor) -> torch.Tensor:
    """The orthonormal factor of ``matrix`` (its polar decomposition, ``U @ Vh`` of its SVD): the nearest matrix with
    orthonormal columns (or rows, when it is wide)."""
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    return u @ vh
