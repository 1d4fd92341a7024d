"""Layer-wise AdaMerging: one coefficient per task per parameter tensor, trained by entropy (Yang et al., ICLR 2024).

What a "parameter tensor" is at a block's attention input is the ``attention`` choice (``wemoe.methods.matrix_merge``):
``split`` gives q, k and v their own coefficients (6 per task per block: three weights, three biases, as FusionBench
learns them on the Hugging Face experts), ``fused`` one for open_clip's ``in_proj_weight`` and one for its bias (2);
``source`` (the default) follows the experts' layout.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call

from wemoe.methods.base import MergeMethod, Param
from wemoe.methods.matrix_merge import ATTENTION, attention_layout
from wemoe.methods.registry import register
from wemoe.task_vector import task_vectors
from wemoe.zoo.zoo import Zoo

INITIAL = Param("lambda", float, 0.3, "Initial value of every merging coefficient.", min=0.0, max=2.0)


class LayerWiseMergedTower(nn.Module):
    """An image tower whose weights are ``theta_0[p] + sum_t c[t, p] tau_t[p]`` with trainable coefficients ``c``.

    With ``attention="split"`` the q, k and v thirds of ``attn.in_proj_weight`` and ``attn.in_proj_bias`` are three
    tensors ``p`` each (columns of ``c`` in that order)."""

    def __init__(self, tower: nn.Module, pretrained: dict[str, torch.Tensor], vectors: list,
                 lambda_: float, attention: str = "fused") -> None:
        super().__init__()
        self.tower = tower.requires_grad_(False)
        self.names = [k for k in vectors[0].keys()]  # noqa: SIM118  (a TaskVector has keys() but no __iter__)
        self.parts = [3 if attention == "split" and "attn.in_proj_" in name else 1 for name in self.names]
        for i, name in enumerate(self.names):
            self.register_buffer(f"base_{i}", pretrained[name].detach().float().clone())
            self.register_buffer(f"tvs_{i}", torch.stack([v[name] for v in vectors]))
        self.coefficients = nn.Parameter(torch.full((len(vectors), sum(self.parts)), float(lambda_)))

    def merged_state(self) -> dict[str, torch.Tensor]:
        """The current merged weights (differentiable in the coefficients)."""
        state, column = {}, 0
        for i, name in enumerate(self.names):
            tvs, parts = getattr(self, f"tvs_{i}"), self.parts[i]
            if parts == 1:
                delta = torch.tensordot(self.coefficients[:, column], tvs, dims=1)
            else:  # one coefficient per third of the rows (q, k, v)
                rows = self.coefficients[:, column:column + parts].repeat_interleave(tvs.shape[1] // parts, dim=1)
                delta = (rows.view(*rows.shape, *[1] * (tvs.ndim - 2)) * tvs).sum(dim=0)
            state[name] = getattr(self, f"base_{i}") + delta
            column += parts
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
    params = (INITIAL, ATTENTION)

    def merge(self, zoo: Zoo, **params) -> nn.Module:
        vectors = list(task_vectors(zoo.base_state, zoo.experts).values())
        return LayerWiseMergedTower(zoo.visual_with(zoo.base_state), zoo.base_state, vectors, params["lambda"],
                                    attention_layout(zoo, params["attention"]))
