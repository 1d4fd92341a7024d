"""Interference before merging: how the zoo's task vectors relate, per block and as a whole.

Task arithmetic adds the task vectors ``tau_t = theta_t - theta_0``; what it loses depends on how they overlap:

- :func:`cosine_similarity`: the cosine of every pair of task vectors (flattened), whole and per block;
- sign conflicts (TIES' notion, Yadav et al. 2023): the share of a block's parameters where the (trimmed) task
  vectors that touch the parameter do not all have the same sign, so summing them cancels part of each;
- the norm of each task vector per block (where each task moved the weights, and how far).

Blocks are the image tower's transformer blocks (``transformer.resblocks.<i>``); every other parameter (patch
embedding, class token, layer norms outside the blocks, projection) is one block called ``other``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from wemoe.methods.ties import trim_threshold
from wemoe.task_vector import lazy_task_vectors
from wemoe.workbench.result_codecs import register_result_type
from wemoe.zoo.zoo import Zoo

OTHER = "other"
WHOLE = "whole"


def block_of(key: str) -> str:
    """The block a parameter belongs to: ``block<i>`` for ``transformer.resblocks.<i>.*``, else ``other``."""
    parts = key.split(".")
    if len(parts) > 2 and parts[0] == "transformer" and parts[1] == "resblocks":
        return f"block{parts[2]}"
    return OTHER


def cosine_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Pairwise cosines ``[T, T]`` from the Gram matrix of ``T`` vectors (``gram[i, j] = <v_i, v_j>``), 0 where a
    vector is all zeros (as ``F.normalize`` does)."""
    norms = gram.diagonal().clamp_min(0).sqrt().clamp_min(1e-12)
    return gram / (norms[:, None] * norms[None, :])


def trim(flat: torch.Tensor, top_k: float) -> torch.Tensor:
    """Keep each row's ``top_k`` percent of entries with the largest magnitude (TIES' trim), zero the rest."""
    if top_k >= 100.0:
        return flat
    keep = max(1, int(round(flat.shape[1] * top_k / 100.0)))
    thresholds = flat.abs().kthvalue(flat.shape[1] - keep + 1, dim=1, keepdim=True).values
    return torch.where(flat.abs() >= thresholds, flat, torch.zeros_like(flat))


def sign_conflicts(flat: torch.Tensor) -> float:
    """The share of parameters (columns of ``flat`` ``[T, P]``) whose nonzero entries have both signs."""
    positive = (flat > 0).any(dim=0)
    negative = (flat < 0).any(dim=0)
    return float((positive & negative).double().mean()) if flat.shape[1] else 0.0


@register_result_type  # kept on disk with the app's results (wemoe.workbench.result_codecs)
@dataclass
class Interference:
    """The zoo's task vectors compared: cosines, sign conflicts and norms, whole and per block."""

    task_names: list[str]
    blocks: list[str]
    cosine: torch.Tensor  # [T, T], whole vectors
    block_cosine: torch.Tensor  # [blocks, T, T]
    conflicts: pd.Series  # per block (and "whole"): share of parameters with conflicting signs
    norms: pd.DataFrame  # task x block (and "whole"): Euclidean norm
    top_k: float

    def cosine_frame(self, block: str = WHOLE) -> pd.DataFrame:
        """The cosine matrix of the whole vectors or of one block as a task x task table."""
        matrix = self.cosine if block == WHOLE else self.block_cosine[self.blocks.index(block)]
        return pd.DataFrame(matrix.numpy(), index=self.task_names, columns=self.task_names)

    def to_dict(self) -> dict:
        """Everything as plain lists and dicts (JSON-ready)."""
        return {
            "tasks": self.task_names,
            "blocks": self.blocks,
            "top_k": self.top_k,
            "cosine": _rounded(self.cosine),
            "block_cosine": {b: _rounded(self.block_cosine[i]) for i, b in enumerate(self.blocks)},
            "sign_conflicts": {b: round(float(v), 6) for b, v in self.conflicts.items()},
            "norms": {t: {b: round(float(v), 6) for b, v in row.items()} for t, row in self.norms.iterrows()},
        }


def _rounded(matrix: torch.Tensor) -> list[list[float]]:
    return [[round(float(v), 6) for v in row] for row in matrix]


def interference(zoo: Zoo, top_k: float = 100.0) -> Interference:
    """Cosines, sign conflicts and norms of ``zoo``'s task vectors; sign conflicts after trimming each whole task
    vector to its ``top_k`` percent largest entries (100: no trim; TIES uses 20), counted per block.

    One tensor of every task vector at a time (float64 Gram matrices per block, conflicts counted per tensor): on
    ViT-B/32's eight experts the whole-vector form held ~20 GB; this one a tensor's worth plus one vector's
    magnitudes while its trim threshold is found."""
    vectors = lazy_task_vectors(zoo.base_state, zoo.experts)
    names = list(vectors)
    keys = vectors[names[0]].keys()
    # TIES' trim over each whole vector: a magnitude threshold per task ("rounded": max(1, round(d * K)) kept)
    thresholds = None if top_k >= 100.0 else torch.tensor(
        [trim_threshold(vectors[t], keys, top_k, rule="rounded") for t in names]).unsqueeze(1)
    grams: dict[str, torch.Tensor] = {}
    conflicting: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for key in keys:
        block = block_of(key)
        stacked = torch.stack([vectors[t][key].flatten() for t in names])
        double = stacked.double()
        grams[block] = grams[block] + double @ double.T if block in grams else double @ double.T
        kept = stacked if thresholds is None else torch.where(stacked.abs() >= thresholds, stacked, 0.0)
        conflicting[block] = conflicting.get(block, 0) + int(((kept > 0).any(0) & (kept < 0).any(0)).sum())
        sizes[block] = sizes.get(block, 0) + stacked.shape[1]
    blocks = sorted((b for b in grams if b != OTHER), key=lambda b: int(b[5:])) + ([OTHER] if OTHER in grams else [])
    whole_gram = torch.stack([grams[b] for b in blocks]).sum(dim=0)
    conflicts = {b: conflicting[b] / sizes[b] if sizes[b] else 0.0 for b in blocks}
    total = sum(sizes.values())
    conflicts[WHOLE] = sum(conflicting.values()) / total if total else 0.0
    norms = pd.DataFrame(
        {**{b: [float(v) for v in grams[b].diagonal().sqrt()] for b in blocks},
         WHOLE: [float(v) for v in whole_gram.diagonal().sqrt()]},
        index=names,
    )
    block_cosine = torch.stack([cosine_from_gram(grams[b]) for b in blocks])
    return Interference(names, blocks, cosine_from_gram(whole_gram), block_cosine, pd.Series(conflicts), norms, top_k)
