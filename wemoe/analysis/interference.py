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

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from wemoe.task_vector import TaskVector, task_vectors
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


def flatten_by_block(vector: TaskVector) -> dict[str, torch.Tensor]:
    """One flat float64 vector per block, blocks in tower order with ``other`` last."""
    pieces: dict[str, list[torch.Tensor]] = {}
    for key in vector.keys():  # noqa: SIM118  (a TaskVector has keys() but no __iter__)
        pieces.setdefault(block_of(key), []).append(vector[key].detach().double().flatten())
    order = sorted((b for b in pieces if b != OTHER), key=lambda b: int(b[5:])) + ([OTHER] if OTHER in pieces else [])
    return {b: torch.cat(pieces[b]) for b in order}


def cosine_matrix(flat: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Pairwise cosine similarity ``[T, T]`` of flat vectors (0 where a vector is all zeros)."""
    stacked = torch.stack(list(flat.values()))
    normed = F.normalize(stacked, dim=1)
    return normed @ normed.T


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
    vector to its ``top_k`` percent largest entries (100: no trim; TIES uses 20), counted per block."""
    vectors = task_vectors(zoo.base_state, zoo.experts)
    names = list(vectors)
    by_block = {t: flatten_by_block(v) for t, v in vectors.items()}
    blocks = list(by_block[names[0]])
    whole = {t: torch.cat([by_block[t][b] for b in blocks]) for t in names}
    block_cosine = torch.stack([cosine_matrix({t: by_block[t][b] for t in names}) for b in blocks])
    trimmed = trim(torch.stack(list(whole.values())), top_k)  # over each whole vector, as TIES trims
    sizes = [by_block[names[0]][b].numel() for b in blocks]
    conflicts = {b: sign_conflicts(part) for b, part in zip(blocks, trimmed.split(sizes, dim=1), strict=True)}
    conflicts[WHOLE] = sign_conflicts(trimmed)
    norms = pd.DataFrame(
        {**{b: [float(by_block[t][b].norm()) for t in names] for b in blocks},
         WHOLE: [float(whole[t].norm()) for t in names]},
        index=names,
    )
    return Interference(names, blocks, cosine_matrix(whole), block_cosine, pd.Series(conflicts), norms, top_k)
