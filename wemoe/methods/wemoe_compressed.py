"""WEMoE with compressed experts: each MLP task vector kept as its top-k singular components (``wemoe.moe.lowrank``).

The same method as ``wemoe`` with another default for ``rank``, anchored at task arithmetic (``anchor``: its merged
MLP weights stay exact and the rank-k experts correct them); the default k is the one chosen from the k table in
bench/README.md ("Compressed experts"): the smallest k within 1 point of exact WEMoE on the pocket zoo.
"""

from dataclasses import replace

from wemoe.methods.registry import register
from wemoe.methods.wemoe import WEMoE

DEFAULT_RANK = 8
"""Singular components kept per MLP task vector by default (bench/README.md, "Compressed experts")."""


@register
class CompressedWEMoE(WEMoE):
    name = "wemoe_compressed"
    pretty_name = "WEMoE (compressed experts)"
    description = ("WEMoE whose experts keep only the top singular components of their MLP task vectors: close to the "
                   "dense model's cost and memory.")
    order = 51
    params = tuple(replace(p, default=DEFAULT_RANK, min=1) if p.name == "rank" else p for p in WEMoE.params)
