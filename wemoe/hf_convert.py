"""Hugging Face ``CLIPVisionModel`` weights -> an open_clip image-tower state dict.

The two layouts hold the same numbers under different names; only attention differs in shape: Hugging Face keeps
separate q/k/v projections, open_clip one fused ``in_proj`` (rows q, then k, then v), which is what
``nn.MultiheadAttention`` expects. The image projection is not part of a ``CLIPVisionModel``: it comes from the
base model (``proj`` in open_clip is the transpose of Hugging Face's ``visual_projection.weight``).

Checkpoints saved by transformers 4.x prefix every key with ``vision_model.``; transformers 5 saves them bare. Both
are read, and so is a full ``CLIPModel`` checkpoint (its text tower and projection are ignored).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from wemoe.errors import ZooError

StateDict = dict[str, torch.Tensor]

# Hugging Face name (after the vision_model. prefix) -> open_clip name, for everything but q/k/v.
_RENAMES = {
    "embeddings.class_embedding": "class_embedding",
    "embeddings.patch_embedding.weight": "conv1.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "pre_layrnorm.weight": "ln_pre.weight",  # sic: transformers spells it "layrnorm"
    "pre_layrnorm.bias": "ln_pre.bias",
    "post_layernorm.weight": "ln_post.weight",
    "post_layernorm.bias": "ln_post.bias",
}
_LAYER_RENAMES = {
    "self_attn.out_proj.weight": "attn.out_proj.weight",
    "self_attn.out_proj.bias": "attn.out_proj.bias",
    "layer_norm1.weight": "ln_1.weight",
    "layer_norm1.bias": "ln_1.bias",
    "layer_norm2.weight": "ln_2.weight",
    "layer_norm2.bias": "ln_2.bias",
    "mlp.fc1.weight": "mlp.c_fc.weight",
    "mlp.fc1.bias": "mlp.c_fc.bias",
    "mlp.fc2.weight": "mlp.c_proj.weight",
    "mlp.fc2.bias": "mlp.c_proj.bias",
}
_LAYER_KEY = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
# Keys a CLIPModel / older checkpoint carries that have no place in an image tower.
_IGNORED_PREFIXES = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")
_IGNORED_SUFFIXES = ("position_ids",)


def is_hf_vision_state(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict is in Hugging Face CLIP layout (``vision_model.`` prefixed or bare ``encoder.layers``)."""
    return any(k.startswith(("vision_model.", "encoder.layers.")) for k in state)


def hf_vision_to_open_clip(state: Mapping[str, torch.Tensor], proj: torch.Tensor) -> StateDict:
    """Convert a Hugging Face CLIP vision state dict to open_clip's image-tower layout.

    ``proj`` is the base model's image projection (open_clip ``visual.proj``, shape ``[width, embed_dim]``); it is
    copied into the result because a ``CLIPVisionModel`` has none. Unknown keys raise a ZooError naming them.
    """
    vision: StateDict = {}
    for key, value in state.items():
        if key.startswith(_IGNORED_PREFIXES) or key.endswith(_IGNORED_SUFFIXES):
            continue
        vision[key.removeprefix("vision_model.")] = value

    out: StateDict = {"proj": proj.detach().clone()}
    qkv: dict[int, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in vision.items():
        if key in _RENAMES:
            out[_RENAMES[key]] = value
            continue
        match = _LAYER_KEY.match(key)
        if match is None:
            unknown.append(key)
            continue
        layer, rest = int(match.group(1)), match.group(2)
        prefix = f"transformer.resblocks.{layer}."
        if rest in _LAYER_RENAMES:
            out[prefix + _LAYER_RENAMES[rest]] = value
        elif rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
            qkv.setdefault(layer, {})[rest.removeprefix("self_attn.")] = value
        else:
            unknown.append(key)
    if unknown:
        raise ZooError(
            f"Unrecognised keys in a Hugging Face CLIP vision checkpoint: {unknown[:5]} ({len(unknown)} in all). "
            "Only CLIPVisionModel / CLIPModel checkpoints can be converted."
        )
    for layer, parts in sorted(qkv.items()):
        for kind in ("weight", "bias"):
            names = [f"{p}_proj.{kind}" for p in "qkv"]
            missing = [n for n in names if n not in parts]
            if missing:
                raise ZooError(f"Layer {layer} of the Hugging Face checkpoint lacks self_attn.{missing[0]}.")
            out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts[n] for n in names], dim=0)
    return out


def check_hf_config(name: str, config: Mapping, activation: str, layer_norm_eps: float) -> None:
    """Raise a ZooError when a Hugging Face config needs another activation or norm epsilon than the base has.

    ``activation`` is the base tower's (``"quick_gelu"`` or ``"gelu"``); a mismatch would not show up in the shapes
    but would silently change every output.
    """
    vision = config.get("vision_config", config)
    hidden_act = vision.get("hidden_act")
    if hidden_act is not None and hidden_act != activation:
        hint = "a -quickgelu model name or quick_gelu=True" if hidden_act == "quick_gelu" else "quick_gelu=False"
        raise ZooError(
            f"Expert {name!r} was trained with activation {hidden_act!r} but the base uses {activation!r}: "
            f"load the base with {hint}."
        )
    eps = vision.get("layer_norm_eps")
    if eps is not None and abs(float(eps) - layer_norm_eps) > 1e-12:
        raise ZooError(f"Expert {name!r} uses layer_norm_eps={eps} but the base uses {layer_norm_eps}.")
