"""TIES-Merging: trim, elect sign, disjoint merge (Yadav et al., NeurIPS 2023)."""

import torch
from torch import nn

from wemoe.methods.base import MergeMethod, Param
from wemoe.methods.registry import register
from wemoe.methods.task_arithmetic import LAMBDA
from wemoe.task_vector import TaskVector, task_vectors
from wemoe.zoo.zoo import Zoo


def ties_merge(vectors: list[TaskVector], top_k: float, merge: str = "sum") -> TaskVector:
    """Merge task vectors the TIES way.

    1. Trim: in each task vector keep the ``top_k`` percent of entries with the largest magnitude (over all its
       tensors together), zero the rest.
    2. Elect: per entry, the sign of the sum of the trimmed vectors.
    3. Disjoint merge: per entry, the sum (or mean) of the trimmed values that agree with the elected sign.
    """
    keys = vectors[0].keys()
    flat = torch.stack([torch.cat([v[k].flatten() for k in keys]) for v in vectors])  # [T, P]
    keep = max(1, int(round(flat.shape[1] * top_k / 100.0)))
    thresholds = flat.abs().kthvalue(flat.shape[1] - keep + 1, dim=1, keepdim=True).values
    trimmed = torch.where(flat.abs() >= thresholds, flat, torch.zeros_like(flat))
    sign = torch.sign(trimmed.sum(dim=0))
    agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
    merged = (trimmed * agree).sum(dim=0)
    if merge == "mean":
        merged = merged / agree.sum(dim=0).clamp(min=1)
    out, offset = {}, 0
    for k in keys:
        n = vectors[0][k].numel()
        out[k] = merged[offset : offset + n].view_as(vectors[0][k])
        offset += n
    return TaskVector(out)


@register
class Ties(MergeMethod):
    name = "ties"
    pretty_name = "TIES-Merging"
    description = "Keep each task vector's largest entries, elect a sign per weight, merge only agreeing values."
    reference_url = "https://arxiv.org/abs/2306.01708"
    order = 20
    params = (
        LAMBDA,
        Param("top_k", float, 20.0, "Percent of each task vector's entries kept (largest magnitudes).",
              min=0.1, max=100.0),
        Param("merge", str, "sum", "How agreeing values combine: sum (FusionBench's default) or mean (the paper's).",
              choices=("sum", "mean")),
    )

    def merge(self, zoo: Zoo, **params) -> nn.Module:
        vectors = list(task_vectors(zoo.base_state, zoo.experts).values())
        merged = ties_merge(vectors, params["top_k"], params["merge"])
        return zoo.visual_with(merged.apply_to(zoo.base_state, params["lambda"]))
