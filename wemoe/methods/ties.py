"""TIES-Merging: trim, elect sign, disjoint merge (Yadav et al., NeurIPS 2023)."""

import torch
from torch import nn

from wemoe.methods.base import MergeMethod, Param
from wemoe.methods.registry import register
from wemoe.methods.task_arithmetic import LAMBDA
from wemoe.task_vector import TaskVector, task_vectors
from wemoe.zoo.zoo import Zoo

KEEP_RULES = ("fusionbench", "rounded")


def kept_count(entries: int, top_k: float, rule: str = "fusionbench") -> int:
    """How many of a task vector's ``entries`` the trim keeps (before ties at the threshold) for ``top_k`` percent.

    ``fusionbench``: ``int(d * K) + 1`` with ``K = top_k / 100`` (FusionBench's ``topk_values_mask``: the threshold is
    the ``d - int(d * K)``-th smallest magnitude and every entry at or above it is kept), at most ``d``.
    ``rounded``: ``round(d * K)``, at least 1 (this project's rule before issue #35).
    """
    fraction = top_k / 100.0
    if rule == "fusionbench":
        return min(entries, int(entries * fraction) + 1)
    return max(1, int(round(entries * fraction)))


def ties_merge(vectors: list[TaskVector], top_k: float, merge: str = "sum", rule: str = "fusionbench") -> TaskVector:
    """Merge task vectors the TIES way.

    1. Trim: in each task vector keep its ``kept_count(d, top_k, rule)`` entries of largest magnitude (over all its
       tensors together; every entry tied with the smallest kept magnitude is kept too), zero the rest.
    2. Elect: per entry, the sign of the sum of the trimmed vectors. Where that sum is exactly 0 (the kept entries
       cancel, or none is kept), ``fusionbench`` gives the entry the majority sign, the sign of the sum of all the
       elected signs (FusionBench's ``resolve_zero_signs(..., "majority")``), and merges it; ``rounded`` merges
       nothing there.
    3. Disjoint merge: per entry, the sum (or mean) of the trimmed values that agree with the elected sign.

    ``rule="fusionbench"`` (the default) is FusionBench 0.2.33's ``ties_merging`` entry for entry; ``"rounded"``
    is the rule this project used before.
    """
    if rule not in KEEP_RULES:
        raise ValueError(f"rule must be one of {KEEP_RULES}, got {rule!r}")
    keys = vectors[0].keys()
    flat = torch.stack([torch.cat([v[k].flatten() for k in keys]) for v in vectors])  # [T, P]
    keep = kept_count(flat.shape[1], top_k, rule)
    thresholds = flat.abs().kthvalue(flat.shape[1] - keep + 1, dim=1, keepdim=True).values
    trimmed = torch.where(flat.abs() >= thresholds, flat, torch.zeros_like(flat))
    sign = torch.sign(trimmed.sum(dim=0))
    if rule == "fusionbench":
        # FusionBench: a zero sign becomes the majority sign; were that 0 too, its where() keeps negative entries.
        sign[sign == 0] = torch.sign(sign.sum())
        agree = torch.where(sign > 0, trimmed > 0, trimmed < 0)
    else:
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
        Param("rule", str, "fusionbench",
              "fusionbench: keep int(d*top_k/100)+1 entries per task and give a weight whose kept values cancel the "
              "majority sign (FusionBench's TIES); rounded: keep round(d*top_k/100) and leave such a weight unmerged.",
              choices=KEEP_RULES),
    )

    def merge(self, zoo: Zoo, **params) -> nn.Module:
        vectors = list(task_vectors(zoo.base_state, zoo.experts).values())
        merged = ties_merge(vectors, params["top_k"], params["merge"], params["rule"])
        return zoo.visual_with(merged.apply_to(zoo.base_state, params["lambda"]))
