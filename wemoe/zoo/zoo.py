"""The zoo's data: a Zoo (one base open_clip CLIP, image + text towers, and named expert image towers) and the
ZooSpec that says where a zoo's weights come from.

Experts are kept as image-tower state dicts in open_clip's layout (the keys of ``clip.visual.state_dict()``),
one per task, each checked against the base when the zoo is made. Merge methods read the base tower and the
experts from here; heads come from the base text tower. Loading is elsewhere: ``wemoe.loading.load_zoo``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields

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

    def subset(self, tasks: Sequence[str]) -> Zoo:
        """The zoo with only the experts of ``tasks`` (at least two, in this zoo's order), sharing every tensor: merging
        it is merging those experts alone."""
        names = chosen_tasks(self, tasks)
        return Zoo(name=self.name, clip=self.clip, experts={t: self.experts[t] for t in names},
                   preprocess=self.preprocess, tokenizer=self.tokenizer, description=self.description,
                   info={**self.info, "tasks": names})

    @property
    def source_layout(self) -> str:
        """The attention layout the experts were published in: ``split`` (separate q, k, v) when every expert came
        from a Hugging Face checkpoint (``info["expert_layouts"]``, written by ``wemoe.zoo.sources``), else
        ``fused`` (open_clip's ``in_proj``; the pocket zoo)."""
        layouts = self.info.get("expert_layouts") or {}
        return "split" if self.experts and all(layouts.get(t) == "hf" for t in self.experts) else "fused"

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


@dataclass(frozen=True)
class ZooSpec:
    """Where a zoo's base and experts come from.

    ``model`` is an open_clip model name (``ViT-B-32``); ``pretrained`` an open_clip tag (``openai``) or the path of
    a full CLIP state dict, or None for random weights. ``experts`` maps a task name to a hub id, a local Hugging
    Face folder or a local state-dict file. ``quick_gelu`` None means "as the pretrained tag was trained" (OpenAI
    weights need QuickGELU). ``model_config`` is an open_clip architecture config (``embed_dim``, ``vision_cfg``,
    ``text_cfg``...) registered under ``model`` for architectures open_clip does not ship.
    """

    model: str
    experts: Mapping[str, str] = field(default_factory=dict)
    pretrained: str | None = None
    name: str = "custom"
    description: str = ""
    quick_gelu: bool | None = None
    model_config: Mapping | None = None

    @classmethod
    def from_mapping(cls, data: Mapping) -> ZooSpec:
        """A spec from a plain mapping (parsed JSON), with a clear error for unknown or missing fields."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ZooError(f"Unknown zoo spec field(s) {unknown}. Known fields: {', '.join(known)}.")
        if "model" not in data:
            raise ZooError('A zoo spec needs "model" (an open_clip model name such as "ViT-B-32").')
        experts = data.get("experts", {})
        if not isinstance(experts, Mapping):
            raise ZooError(
                '"experts" must map task names to sources, e.g. {"mnist": "tanganke/clip-vit-base-patch32_mnist"}.'
            )
        return cls(**{**data, "experts": dict(experts)})


def chosen_tasks(zoo: Zoo, tasks: Sequence[str]) -> list[str]:
    """``tasks`` checked against ``zoo``'s experts (known, no repeats, at least two) and put in the zoo's order (so that
    a choice names one subset whatever order it was given in), else a ZooError saying what to choose."""
    names = list(tasks)
    unknown = [t for t in names if t not in zoo.experts]
    if unknown:
        raise ZooError(f"No expert for task(s) {', '.join(map(repr, unknown))}. Choose among: "
                       f"{', '.join(zoo.task_names)}.")
    if len(set(names)) < 2:
        raise ZooError(f"Choose at least two experts to merge (got {', '.join(names) or 'none'}); this zoo has "
                       f"{', '.join(zoo.task_names)}.")
    return [t for t in zoo.task_names if t in set(names)]
