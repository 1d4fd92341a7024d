"""TIES-Merging: trim, elect sign, disjoint merge (Yadav et al., NeurIPS 2023)."""

from collections.abc import Sequence

import torch
from torch import nn

from wemoe.methods.base import MergeMethod, Param
from wemoe.methods.registry import register
from wemoe.methods.task_arithmetic import LAMBDA
from wemoe.task_vector import TaskVector, VectorLike, lazy_task_vectors
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


def ties_merge(vectors: Sequence[VectorLike], top_k: float, merge: str = "sum", rule: str = "fusionbench"
               ) -> TaskVector:
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

    Computed one tensor at a time (with :func:`~wemoe.task_vector.lazy_task_vectors`, no whole task vector is held):
    each vector's trim threshold from its magnitudes alone, then the election and the merge per tensor, and for
    ``fusionbench`` the majority sign counted exactly over every tensor first. The values are bit for bit those of
    stacking every vector into one ``[T, P]`` matrix (the formulation before;
    ``tests/methods/test_per_tensor_merges.py``).
    """
    if rule not in KEEP_RULES:
        raise ValueError(f"rule must be one of {KEEP_RULES}, got {rule!r}")
    keys = vectors[0].keys()
    thresholds = [trim_threshold(vector, keys, top_k, rule) for vector in vectors]

    def trimmed(key: str) -> torch.Tensor:  # [T, *shape]: each vector's entries at or above its threshold
        flat = torch.stack([vector[key] for vector in vectors])
        limits = torch.tensor(thresholds, dtype=flat.dtype).view(-1, *([1] * (flat.dim() - 1)))
        return torch.where(flat.abs() >= limits, flat, torch.zeros_like(flat))

    majority = 0.0
    if rule == "fusionbench":  # the sign of the sum of every elected sign, counted exactly (ints, not float32)
        count = 0
        for key in keys:
            sign = torch.sign(trimmed(key).sum(dim=0))
            count += int((sign > 0).sum()) - int((sign < 0).sum())
        majority = float((count > 0) - (count < 0))
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        kept = trimmed(key)
        sign = torch.sign(kept.sum(dim=0))
        if rule == "fusionbench":
            # FusionBench: a zero sign becomes the majority sign; were that 0 too, its where() keeps negative entries.
            sign[sign == 0] = majority
            agree = torch.where(sign > 0, kept > 0, kept < 0)
        else:
            agree = (torch.sign(kept) == sign) & (kept != 0)
        merged = (kept * agree).sum(dim=0)
        if merge == "mean":
            merged = merged / agree.sum(dim=0).clamp(min=1)
        out[key] = merged
    return TaskVector(out)


def trim_threshold(vector: VectorLike, keys: Sequence[str], top_k: float, rule: str = "fusionbench") -> float:
    """The smallest magnitude TIES keeps of ``vector`` (over every tensor of ``keys``): the ``(d - kept + 1)``-th
    smallest of its ``d`` magnitudes, ``kept = kept_count(d, top_k, rule)``. One vector's magnitudes are held at a
    time (and ``kthvalue``'s copy and indices of them)."""
    sizes = [vector.numel(key) for key in keys]
    magnitudes: torch.Tensor | None = None
    offset = 0
    for key, size in zip(keys, sizes, strict=True):
        piece = vector[key].abs().flatten()
        if magnitudes is None:
            magnitudes = torch.empty(sum(sizes), dtype=piece.dtype)
        magnitudes[offset: offset + size] = piece
        offset += size
    if magnitudes is None:
        raise ValueError("A task vector without tensors has no trim threshold.")
    keep = kept_count(magnitudes.numel(), top_k, rule)
    return float(magnitudes.kthvalue(magnitudes.numel() - keep + 1).values)


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
        vectors = list(lazy_task_vectors(zoo.base_state, zoo.experts).values())  # per tensor: one tower, not 6 x T
        merged = ties_merge(vectors, params["top_k"], params["merge"], params["rule"])
        return zoo.visual_with(merged.apply_to(zoo.base_state, params["lambda"]))
