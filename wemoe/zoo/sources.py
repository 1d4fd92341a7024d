"""Load a Zoo from where its weights live: open_clip tags, the Hugging Face hub, local folders and files.

:func:`load_spec` loads the zoo a spec describes; ``wemoe.loading.load_zoo`` (also ``wemoe.load_zoo``) is the one
entry point, which sends here everything but its named loaders (``"pocket"``). A spec is

- a preset name (``wemoe.zoo.presets``, e.g. the paper's ViT-B/32 + 8 experts);
- a custom spec, as a :class:`ZooSpec`, a mapping with its fields, or the path of a ``.json`` file holding one.

The base CLIP is made by ``wemoe.zoo.clip_models``, checkpoint files are read by ``wemoe.zoo.checkpoints``; this module
turns experts into image towers and puts the zoo together.

A spec names the base (an open_clip model name plus a pretrained tag or a local checkpoint, or a Hugging Face
``CLIPModel``: its folder, hub id or weights file, converted to open_clip) and, per task, an expert source: a hub id
(``owner/name``, a Hugging Face CLIPVisionModel), a local Hugging Face folder, or a local state dict
(``.safetensors``; ``.pt/.pth/.bin`` only through ``torch.load(weights_only=True)``): open_clip's full CLIP or image
tower, or Hugging Face's.

Neither layout stores the activation (QuickGELU or GELU) in its weights; a wrong one changes every feature without
any error. So a Hugging Face checkpoint's ``config.json`` is checked against the base, and one without a config is
taken only when the base's activation was stated (an open_clip tag, ``quick_gelu`` in the spec, a model or Hugging
Face config) and its weights are a fine-tune of the base's (:func:`to_image_tower`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from wemoe.errors import ZooError
from wemoe.zoo.checkpoints import (
    HF_WEIGHT_FILES,
    HUB_ID,
    HubId,
    download_hf,
    looks_like_path,
    read_hf_config,
    read_hf_folder,
    read_weights,
)
from wemoe.zoo.clip_models import activation_source, create_clip, visual_activation
from wemoe.zoo.hf_convert import check_hf_config, hf_vision_to_open_clip, is_hf_vision_state
from wemoe.zoo.offline_check import check_cached_offline
from wemoe.zoo.presets import get_preset
from wemoe.zoo.zoo import StateDict, Zoo, ZooSpec

ProgressFn = Callable[[float, str], None]


def _noop(fraction: float, message: str) -> None:
    pass


# ---------------------------------------------------------------------------------------------------------------
# Experts


# An expert fine-tuned from the base stays within a few percent of its weights (ViT-B/32 task vectors: 1-3%); an
# unrelated model of the same shape is about sqrt(2) away.
FINE_TUNED_DISTANCE = 0.5


def relative_distance(state: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> float:
    """``|state - base| / |base|`` over the parameters both hold with the same shape (the whole-tower norm)."""
    diff = total = 0.0
    for key, value in base.items():
        other = state.get(key)
        if other is None or tuple(other.shape) != tuple(value.shape) or not value.is_floating_point():
            continue
        diff += float((other.double() - value.double()).pow(2).sum())
        total += float(value.double().pow(2).sum())
    return math.sqrt(diff / total) if total > 0 else math.inf


def to_image_tower(task: str, state: Mapping[str, torch.Tensor], config: Mapping, clip: nn.Module,
                   layouts: dict[str, str] | None = None) -> StateDict:
    """An expert's weights in open_clip image-tower layout, whatever layout they came in.

    Hugging Face layout is converted (projection from the base). Its activation is checked against ``config``; with
    no config it is the base's when the base's activation was stated and the expert is a fine-tune of the base (its
    weights within :data:`FINE_TUNED_DISTANCE` of the base tower's), else the expert is refused, naming what is
    missing. A full open_clip CLIP state dict gives its ``visual.`` part; anything else is taken as an image tower as
    is (the Zoo checks it against the base). ``layouts`` (when given) records which it was: ``hf`` or ``open_clip``.
    """
    if layouts is not None:
        layouts[task] = "hf" if is_hf_vision_state(state) else "open_clip"
    if is_hf_vision_state(state):
        tower = hf_vision_to_open_clip(state, clip.visual.proj)
        activation = visual_activation(clip)
        if activation is not None and config:
            check_hf_config(task, config, activation, float(clip.visual.ln_pre.eps))
        elif activation is not None:
            _check_activation_without_config(task, tower, clip, activation)
        return tower
    if any(k.startswith("visual.") for k in state):
        return {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    return dict(state)


def _check_activation_without_config(task: str, tower: StateDict, clip: nn.Module, activation: str) -> None:
    stated = activation_source(clip)
    distance = relative_distance({k: v for k, v in tower.items() if k != "proj"}, clip.visual.state_dict())
    if stated is not None and distance <= FINE_TUNED_DISTANCE:
        return  # fine-tuned from this base: trained with the base's activation
    if stated is None:
        why = (f"and the base's activation ({activation}) is only open_clip's default for this architecture, not "
               "stated anywhere")
        fix = ('state the base\'s activation in the spec ("quick_gelu": true for OpenAI CLIP and its fine-tunes, '
               'false for GELU models)')
    else:
        why = (f"and its weights are not a fine-tune of this base (relative distance {distance:.2f} from the base "
               f"tower, more than {FINE_TUNED_DISTANCE}), so the base's {activation} ({stated}) says nothing about it")
        fix = "use an expert fine-tuned from this base"
    raise ZooError(
        f"Expert {task!r} is a Hugging Face CLIP checkpoint without its config.json, so the activation it was trained "
        f"with (hidden_act: quick_gelu or gelu) is unknown, {why}. Give the folder holding config.json and the "
        f"weights (or put config.json next to the weights file), or {fix}."
    )


def load_expert(task: str, source: str | Path | Mapping[str, torch.Tensor], clip: nn.Module,
                layouts: dict[str, str] | None = None) -> StateDict:
    """One expert's image-tower state dict from a hub id, a local folder or file, or an in-memory state dict (the
    layout it came in recorded in ``layouts``, when given)."""
    if isinstance(source, Mapping):
        return to_image_tower(task, source, {}, clip, layouts)
    text = str(source)
    path = Path(text).expanduser()
    if isinstance(source, HubId):  # a visitor's hub id: never a local path
        state, config = read_hf_folder(download_hf(text))
    elif path.is_dir():
        state, config = read_hf_folder(path)
    elif path.is_file():  # a save_pretrained folder's weights file given alone: its config.json still applies
        state, config = read_weights(path), read_hf_config(path.parent) if path.name in HF_WEIGHT_FILES else {}
    elif looks_like_path(text) or not HUB_ID.match(text):
        raise ZooError(
            f"Expert {task!r}: {text!r} does not exist. Give an existing file or folder, or a hub id (owner/name)."
        )
    else:
        state, config = read_hf_folder(download_hf(text))
    return to_image_tower(task, state, config, clip, layouts)


# ---------------------------------------------------------------------------------------------------------------
# The entry point


def resolve_spec(spec: str | Path | Mapping | ZooSpec) -> ZooSpec:
    """The ZooSpec a preset name, JSON file or mapping stands for."""
    if isinstance(spec, ZooSpec):
        return spec
    if isinstance(spec, Mapping):
        return ZooSpec.from_mapping(spec)
    text = str(spec)
    if text.endswith(".json"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise ZooError(f"Zoo spec file {text!r} does not exist.")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ZooError(f"Zoo spec file {text!r} is not valid JSON: {error}") from error
        return ZooSpec.from_mapping(data)
    return get_preset(text)


def load_spec(spec: str | Path | Mapping | ZooSpec, progress: ProgressFn | None = None) -> Zoo:
    """Load the Zoo of a preset name, a ``.json`` spec file, a mapping of ZooSpec fields or a ZooSpec.

    ``progress(fraction, message)`` is called as the base and each expert load (fraction in [0, 1]).
    """
    resolved = resolve_spec(spec)
    check_cached_offline(resolved)  # offline: every missing hub checkpoint named at once, before any is loaded
    report = progress or _noop
    steps = len(resolved.experts) + 1
    report(0.0, f"Loading base {resolved.model} ({resolved.pretrained or 'random weights'})")
    clip, preprocess, tokenizer = create_clip(
        resolved.model, resolved.pretrained, resolved.quick_gelu, resolved.model_config
    )
    experts: dict[str, StateDict] = {}
    layouts: dict[str, str] = {}
    for i, (task, source) in enumerate(resolved.experts.items(), start=1):
        report(
            i / steps,
            f"Loading expert {task!r} ({i}/{steps - 1}) from {source if isinstance(source, (str, Path)) else 'memory'}",
        )
        experts[task] = load_expert(task, source, clip, layouts)
    zoo = Zoo(
        name=resolved.name,
        clip=clip,
        experts=experts,
        preprocess=preprocess,
        tokenizer=tokenizer,
        description=resolved.description,
        info={
            "model": resolved.model,
            "pretrained": resolved.pretrained,
            "quick_gelu": visual_activation(clip) == "quick_gelu",
            "experts": {t: str(s) if isinstance(s, (str, Path)) else "in memory" for t, s in resolved.experts.items()},
            "expert_layouts": layouts,  # hf or open_clip per expert: Zoo.source_layout
        },
    )
    report(1.0, f"Loaded zoo {resolved.name!r}: base {resolved.model} and {len(experts)} experts")
    return zoo
