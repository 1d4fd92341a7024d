"""Task-wise AdaMerging: one coefficient per task for all its weights, trained by the same test-time loss as the
layer-wise variant (Yang et al., ICLR 2024)."""

from __future__ import annotations

import torch
from torch import nn

from wemoe.methods.adamerging import INITIAL, LayerWiseMergedTower
from wemoe.methods.base import MergeMethod
from wemoe.methods.registry import register
from wemoe.task_vector import task_vectors
from wemoe.zoo.zoo import Zoo


class TaskWiseMergedTower(LayerWiseMergedTower):
    """An image tower whose weights are ``theta_0 + sum_t c[t] tau_t`` with one trainable coefficient per task."""

    def __init__(self, tower: nn.Module, pretrained: dict[str, torch.Tensor], vectors: list,
                 lambda_: float) -> None:
        super().__init__(tower, pretrained, vectors, lambda_)
        self.coefficients = nn.Parameter(torch.full((len(vectors),), float(lambda_)))

    def merged_state(self) -> dict[str, torch.Tensor]:
        """The current merged weights (differentiable in the coefficients)."""
        return {name: getattr(self, f"base_{i}") + torch.tensordot(self.coefficients, getattr(self, f"tvs_{i}"), dims=1)
                for i, name in enumerate(self.names)}


@register
class TaskWiseAdaMerging(MergeMethod):
    name = "task_wise_adamerging"
    pretty_name = "AdaMerging (task-wise)"
    description = "Task arithmetic with one coefficient per task, tuned by test-time entropy."
    reference_url = "https://arxiv.org/abs/2310.02575"
    order = 39
    adaptive = True
    params = (INITIAL,)  # one coefficient per task: no attention layout to choose

    def merge(self, zoo: Zoo, **params) -> nn.Module:
        vectors = list(task_vectors(zoo.base_state, zoo.experts).values())
        return TaskWiseMergedTower(zoo.visual_with(zoo.base_state), zoo.base_state, vectors, params["lambda"])
