"""A Zoo: one base open_clip CLIP model (image + text towers) and named expert image towers.

Experts are kept as image-tower state dicts in open_clip's layout (the keys of ``clip.visual.state_dict()``),
one per task, each checked against the base when the zoo is made. Merge methods read the base tower and the
experts from here; heads come from the base text tower.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from wemoe.errors import ZooError

StateDict = dict[str, torch.Tensor]


def check_expert(name: str, base_state: Mapping[str, torch.Tensor], expert_state: Mapping[str, torch.Tensor]) -> None:
    """Raise a ZooError naming the first parameter where the expert does not match the base image tower."""
    missing = [k for k in base_state if k not in expert_state]
    extra = [k for k in expert_state if k not in base_state]
    if missing or extra:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise ZooError(
            f"Expert {name!r} does not match the base image tower: {detail} "
            f"({len(missing)} missing, {len(extra)} unexpected parameters). Use experts fine-tuned from this base."
        )
    for key, value in base_state.items():
        if tuple(expert_state[key].shape) != tuple(value.shape):
            raise ZooError(
                f"Expert {name!r} does not match the base image tower: parameter {key!r} has shape "
                f"{tuple(expert_state[key].shape)} in the expert but {tuple(value.shape)} in the base. "
                "Use experts fine-tuned from this base architecture."
            )


@dataclass
class Zoo:
    """A base CLIP model and its experts, ready to merge.

    ``experts`` maps a task name to that expert's image-tower state dict (float32, CPU). ``preprocess`` turns a
    PIL image into the model's input tensor; ``tokenizer`` turns prompts into text tokens.
    """

    name: str
    clip: nn.Module
    experts: dict[str, StateDict]
    preprocess: Callable
    tokenizer: Callable
    description: str = ""
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.clip.eval().requires_grad_(False)
        base = self.base_state
        for name, state in self.experts.items():
            check_expert(name, base, state)
            self.experts[name] = {k: v.detach().to(device="cpu", dtype=base[k].dtype) for k, v in state.items()}

    @property
    def task_names(self) -> list[str]:
        """Names of the experts' tasks, in the zoo's order."""
        return list(self.experts)

    @property
    def visual(self) -> nn.Module:
        """The base (pretrained) image tower."""
        return self.clip.visual

    @property
    def base_state(self) -> StateDict:
        """The base image tower's state dict (shared tensors, do not modify)."""
        return self.clip.visual.state_dict()

    def visual_with(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """A fresh copy of the image tower holding ``state`` (an expert's or a merge's weights), in eval mode."""
        tower = copy.deepcopy(self.clip.visual)
        tower.load_state_dict(state)
        return tower.eval().requires_grad_(False)

    def expert_visual(self, task: str) -> nn.Module:
        """The image tower of the expert for ``task``."""
        if task not in self.experts:
            raise ZooError(f"No expert for task {task!r}. Experts in this zoo: {', '.join(self.experts)}.")
        return self.visual_with(self.experts[task])

    def parameter_count(self) -> dict[str, int]:
        """Parameter counts: image tower, text side, and all experts together."""
        visual = sum(p.numel() for p in self.clip.visual.parameters())
        total = sum(p.numel() for p in self.clip.parameters())
        return {"image_tower": visual, "text_and_rest": total - visual, "experts": visual * len(self.experts)}


def load_zoo(spec, progress: Callable[[float, str], None] | None = None) -> Zoo:
    """Load a Zoo from ``"pocket"``, a preset name, a ``.json`` spec file or a spec mapping (see ``wemoe.sources``).

    ``progress(fraction, message)``, if given, is called as the base and each expert load.
    """
    from wemoe.sources import load_zoo as _load_zoo  # lazy: sources imports this module

    return _load_zoo(spec, progress)
