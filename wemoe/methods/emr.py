"""EMR-Merging: elect, mask, rescale (Huang et al., NeurIPS 2024, arXiv 2405.17461). It needs the task at inference.

1. Elect: per weight, the sign of the summed task vectors (``sign(sum_t tau_t)``, zero counted as negative, as in the
   reference code) and the largest magnitude among the task vectors that agree with it: the unified vector
   ``tau_uni``.
2. Mask: per task, the weights where its own task vector agrees with the elected sign (``tau_t * sign > 0``).
3. Rescale: per task, ``sum_p mean|tau_t[p]| / sum_p mean|mask_t[p] * tau_uni[p]|`` over the parameter tensors ``p``.
   A mean per tensor weighs tensors, not entries, so the rescalers depend on how attention is cut: with
   ``attention=split`` the q, k and v thirds of ``in_proj_weight`` and ``in_proj_bias`` count as the six tensors of
   Hugging Face's layout (as FusionBench rescales the paper's experts), with ``fused`` as open_clip's two; ``source``
   (the default) follows the experts' layout (``wemoe.methods.matrix_merge``). Steps 1 and 2 are per entry.

Task ``t``'s model is ``theta_0 + rescaler_t * mask_t * tau_uni``; with one task it is that expert. The merged model is
*task-conditioned*: ``model.for_task(task)`` gives that task's tower (``wemoe.evaluation.evaluate.tower_for`` uses it,
so tables give each task its own, "task given"). Called without a task (``model(images)``, export) it is the mean of the
task models, ``theta_0 + mean_t(rescaler_t * mask_t) * tau_uni``: what EMR offers when nobody says which task an image
is.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call

from wemoe.methods.base import MergeMethod
from wemoe.methods.matrix_merge import ATTENTION, attention_layout
from wemoe.methods.registry import register
from wemoe.task_vector import TaskVector, task_vectors
from wemoe.zoo.zoo import Zoo


def _mean_abs(stacked: torch.Tensor, thirds: bool) -> torch.Tensor:
    """Per task, ``mean|x|`` of one tensor ``[T, ...]``, or (``thirds``) the sum of its q, k, v thirds' means."""
    parts = stacked.chunk(3, dim=1) if thirds else (stacked,)
    return sum(part.abs().flatten(1).mean(dim=1).double() for part in parts)


def emr_merge(vectors: list[TaskVector], attention: str = "fused",
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """``(tau_uni, masks, rescalers)``: the unified vector by name, the stacked boolean masks ``[T, ...]`` by name,
    and the ``[T]`` rescalers (``attention``: ``split`` or ``fused``, how the rescalers count attention's input)."""
    unified, masks = {}, {}
    own = torch.zeros(len(vectors), dtype=torch.float64)
    kept = torch.zeros(len(vectors), dtype=torch.float64)
    for key in vectors[0].keys():  # noqa: SIM118  (a TaskVector has keys() but no __iter__)
        stacked = torch.stack([v[key] for v in vectors])
        sign = torch.where(stacked.sum(dim=0) > 0, 1.0, -1.0)
        mask = stacked * sign > 0
        unified[key] = sign * (stacked.abs() * mask).amax(dim=0)
        masks[key] = mask
        thirds = attention == "split" and "attn.in_proj_" in key
        own += _mean_abs(stacked, thirds)
        kept += _mean_abs(mask * unified[key], thirds)
    rescalers = torch.where(kept > 0, own / kept.clamp(min=1e-300), torch.zeros_like(own))
    return unified, masks, rescalers.float()


class EMRModel(nn.Module):
    """The EMR merge: a base tower, the unified vector, one mask and one rescaler per task.

    ``for_task(task)`` is that task's plain image tower; ``forward`` (no task known) runs the mean of the task models,
    and ``static_tower()`` is that mean as a plain tower (what export saves).
    """

    def __init__(self, tower: nn.Module, task_names: list[str], vectors: list[TaskVector],
                 attention: str = "fused") -> None:
        super().__init__()
        self.tower = tower.requires_grad_(False)
        self.task_names = list(task_names)
        unified, masks, rescalers = emr_merge(vectors, attention)
        self.names = list(unified)
        for i, name in enumerate(self.names):
            self.register_buffer(f"unified_{i}", unified[name])
            self.register_buffer(f"masks_{i}", masks[name])
        self.register_buffer("rescalers", rescalers)

    def _state(self, weights: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Merged weights with per-task ``weights`` on the masked unified vector (None: the mean over tasks)."""
        base = dict(self.tower.state_dict())
        state = {}
        for i, name in enumerate(self.names):
            masks = getattr(self, f"masks_{i}")
            scale = torch.tensordot(weights if weights is not None else self.rescalers / len(self.task_names),
                                    masks.to(self.rescalers.dtype), dims=1)
            state[name] = (base[name].float() + scale * getattr(self, f"unified_{i}")).to(base[name].dtype)
        return state

    def task_state(self, task: str) -> dict[str, torch.Tensor]:
        """Task ``task``'s weights: ``theta_0 + rescaler_t * mask_t * tau_uni``."""
        if task not in self.task_names:
            raise KeyError(f"EMR has no task {task!r}; its tasks: {', '.join(self.task_names)}.")
        weights = torch.zeros_like(self.rescalers)
        weights[self.task_names.index(task)] = self.rescalers[self.task_names.index(task)]
        return self._state(weights)

    def _tower_with(self, state: dict[str, torch.Tensor]) -> nn.Module:
        tower = copy.deepcopy(self.tower)
        tower.load_state_dict({**tower.state_dict(), **state})
        return tower.eval().requires_grad_(False)

    def for_task(self, task: str) -> nn.Module:
        """The plain image tower of task ``task`` (built on each call: keep it only while you use it)."""
        return self._tower_with(self.task_state(task))

    def static_tower(self) -> nn.Module:
        """The plain image tower of the mean of the task models (no task known)."""
        return self._tower_with(self._state(None))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cached = self.__dict__.get("_mean_state")  # not a buffer: rebuilt after a move to another device
        if cached is None or next(iter(cached.values())).device != self.rescalers.device:
            cached = self.__dict__["_mean_state"] = self._state(None)
        return functional_call(self.tower, cached, (images,))


@register
class EMRMerging(MergeMethod):
    name = "emr_merging"
    pretty_name = "EMR-Merging (task given)"
    description = "Elect one unified task vector; each task gets its own mask and rescaler (needs the task)."
    reference_url = "https://arxiv.org/abs/2405.17461"
    order = 30
    params = (ATTENTION,)

    def merge(self, zoo: Zoo, **params) -> nn.Module:
        vectors = list(task_vectors(zoo.base_state, zoo.experts).values())
        layout = attention_layout(zoo, params["attention"])
        return EMRModel(zoo.visual_with(zoo.base_state), zoo.task_names, vectors, layout).eval()
