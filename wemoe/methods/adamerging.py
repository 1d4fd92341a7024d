"""Layer-wise AdaMerging: one coefficient per task per parameter tensor, trained by entropy (Yang et al., ICLR 2024)."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call

from wemoe.methods.base import MergeMethod, Param
from wemoe.methods.registry import register
from wemoe.task_vector import task_vectors
from wemoe.zoo.zoo import Zoo


class LayerWiseMergedTower(nn.Module):
    """An image tower whose weights are ``theta_0[p] + sum_t c[t, p] tau_t[p]`` with trainable coefficients ``c``."""

    def __init__(self, tower: nn.Module, pretrained: dict[str, torch.Tensor], vectors: list,
                 lambda_: float) -> None:
        super().__init__()
        self.tower = tower.requires_grad_(False)
        self.names = [k for k in vectors[0].keys()]  # noqa: SIM118  (a TaskVector has keys() but no __iter__)
        for i, name in enumerate(self.names):
            self.register_buffer(f"base_{i}", pretrained[name].detach().float().clone())
            self.register_buffer(f"tvs_{i}", torch.stack([v[name] for v in vectors]))
        self.coefficients = nn.Parameter(torch.full((len(vectors), len(self.names)), float(lambda_)))

    def merged_state(self) -> dict[str, torch.Tensor]:
        """The current merged weights (differentiable in the coefficients)."""
        state = {}
        for i, name in enumerate(self.names):
            tvs = getattr(self, f"tvs_{i}")
            state[name] = getattr(self, f"base_{i}") + torch.tensordot(self.coefficients[:, i], tvs, dims=1)
        return state

    def static_tower(self) -> nn.Module:
        """A plain image tower holding the current merged weights (for export and fast inference)."""
        tower = copy.deepcopy(self.tower)
        with torch.no_grad():
            tower.load_state_dict({**tower.state_dict(), **{k: v.detach() for k, v in self.merged_state().items()}})
        return tower

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return functional_call(self.tower, self.merged_state(), (images,))


@register
class AdaMerging(MergeMethod):
    name = "adamerging"
    pretty_name = "AdaMerging (layer-wise)"
    description = "Task arithmetic with one coefficient per task per weight tensor, tuned by test-time entropy."
    reference_url = "https://arxiv.org/abs/2310.02575"
    order = 40
    adaptive = True
    params = (Param("lambda", float, 0.3, "Initial value of every merging coefficient.", min=0.0, max=2.0),)

    def merge(self, zoo: Zoo, **params) -> nn.Module:
        vectors = list(task_vectors(zoo.base_state, zoo.experts).values())
        return LayerWiseMergedTower(zoo.visual_with(zoo.base_state), zoo.base_state, vectors, params["lambda"])
