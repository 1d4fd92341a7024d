"""Hugging Face CLIP weights -> open_clip: a ``CLIPVisionModel`` as an image tower, a ``CLIPModel`` as a whole CLIP.

The two layouts hold the same numbers under different names; only attention differs in shape: Hugging Face keeps
separate q/k/v projections, open_clip one fused ``in_proj`` (rows q, then k, then v), which is what
``nn.MultiheadAttention`` expects. The image projection is not part of a ``CLIPVisionModel``: it comes from the
base model (``proj`` in open_clip is the transpose of Hugging Face's ``visual_projection.weight``).

Checkpoints saved by transformers 4.x prefix every key with ``vision_model.``; transformers 5 saves them bare. Both
are read, and so is a full ``CLIPModel`` checkpoint (its text tower and projection are ignored for an expert).

A ``CLIPModel`` base converts whole (:func:`hf_clip_to_open_clip`: both towers, both projections, the logit scale),
its architecture read from its ``config.json`` (:func:`open_clip_config`). Neither the activation nor the layer-norm
epsilon is in the weights: only a config says them (:func:`check_hf_config`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

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
_TEXT_RENAMES = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}
_LAYER_KEY = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
# Keys a CLIPModel / older checkpoint carries that have no place in an image tower.
_IGNORED_PREFIXES = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")
_IGNORED_SUFFIXES = ("position_ids",)


def is_hf_vision_state(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict is in Hugging Face CLIP layout (``vision_model.`` prefixed or bare ``encoder.layers``)."""
    return any(k.startswith(("vision_model.", "encoder.layers.")) for k in state)


def is_hf_clip_state(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict is a whole Hugging Face ``CLIPModel`` (``text_model.`` and ``vision_model.`` keys)."""
    return any(k.startswith("text_model.") for k in state) and any(k.startswith("vision_model.") for k in state)


Fuse = Callable[[list[str]], torch.Tensor]
"""``fuse(keys)``: the tensors ``keys`` concatenated along dim 0 (``torch.cat``, or read fused from a file)."""


def _fuser(state: Mapping[str, torch.Tensor], prefix: str) -> Fuse:
    """How to fuse tensors of ``state`` named without ``prefix``: read straight from the file when ``state`` is a
    mapped checkpoint (``wemoe.zoo.mapped_weights.MappedState.read_concat``: the parts' pages are never touched, so
    they cost no memory), else ``torch.cat``."""
    read = getattr(state, "read_concat", None)
    if read is None:
        return lambda keys: torch.cat([state[prefix + k] for k in keys], dim=0)
    return lambda keys: read([prefix + k for k in keys])


def _convert_tower(
    tower: Mapping[str, torch.Tensor], renames: Mapping[str, str], what: str, fuse: Fuse | None = None
) -> StateDict:
    """One transformer tower (keys without their ``vision_model.``/``text_model.`` prefix) in open_clip names.

    ``fuse`` builds each layer's ``in_proj`` from its q/k/v keys (default: ``torch.cat`` of ``tower``'s tensors).
    """
    fuse = fuse or (lambda keys: torch.cat([tower[k] for k in keys], dim=0))
    out: StateDict = {}
    qkv: dict[int, dict[str, str]] = {}
    unknown = []
    for key, value in tower.items():
        if key.endswith(_IGNORED_SUFFIXES):
            continue
        if key in renames:
            out[renames[key]] = value
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
            qkv.setdefault(layer, {})[rest.removeprefix("self_attn.")] = key
        else:
            unknown.append(key)
    if unknown:
        raise ZooError(
            f"Unrecognised keys in a Hugging Face CLIP {what} checkpoint: {unknown[:5]} ({len(unknown)} in all). "
            "Only CLIPVisionModel / CLIPModel checkpoints can be converted."
        )
    for layer, parts in sorted(qkv.items()):
        for kind in ("weight", "bias"):
            names = [f"{p}_proj.{kind}" for p in "qkv"]
            missing = [n for n in names if n not in parts]
            if missing:
                raise ZooError(f"Layer {layer} of the Hugging Face {what} checkpoint lacks self_attn.{missing[0]}.")
            out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = fuse([parts[n] for n in names])
    return out


def hf_vision_to_open_clip(
    state: Mapping[str, torch.Tensor], proj: torch.Tensor, fuse: Fuse | None = None
) -> StateDict:
    """Convert a Hugging Face CLIP vision state dict to open_clip's image-tower layout.

    ``proj`` is the base model's image projection (open_clip ``visual.proj``, shape ``[width, embed_dim]``); it is
    copied into the result because a ``CLIPVisionModel`` has none. Unknown keys raise a ZooError naming them. The
    result holds ``state``'s own tensors (renamed, not copied) but for the fused q/k/v projections, built by
    ``fuse`` (given the keys without ``vision_model.``; default: read fused from the file when ``state`` is a mapped
    checkpoint, else ``torch.cat``). A full ``CLIPModel``'s text tower is left alone (never read).
    """
    prefixed = any(key.startswith("vision_model.") for key in state)
    vision = {
        key.removeprefix("vision_model."): value
        for key, value in state.items()
        if not key.startswith(_IGNORED_PREFIXES)
    }
    fuse = fuse or _fuser(state, "vision_model." if prefixed else "")
    return {"proj": proj.detach().clone(), **_convert_tower(vision, _RENAMES, "vision", fuse)}


def hf_clip_to_open_clip(state: Mapping[str, torch.Tensor]) -> StateDict:
    """A whole Hugging Face ``CLIPModel`` state dict as an open_clip ``CLIP`` state dict.

    Image tower under ``visual.`` (its projection ``visual.proj`` from ``visual_projection``), text tower at the top
    level (``token_embedding``, ``positional_embedding``, ``transformer``, ``ln_final``), ``text_projection`` (the
    transpose of Hugging Face's bias-free linear layer) and ``logit_scale``. A missing part raises a ZooError naming it.
    """
    missing = [k for k in ("visual_projection.weight", "text_projection.weight", "logit_scale") if k not in state]
    if missing or not is_hf_clip_state(state):
        parts = missing + ([] if is_hf_clip_state(state) else ["text_model.* / vision_model.* weights"])
        raise ZooError(
            f"Not a whole Hugging Face CLIPModel checkpoint: it lacks {', '.join(parts)}. A base needs both towers, "
            "both projections and the logit scale (a CLIPVisionModel can only be an expert)."
        )
    vision = {k: v for k, v in state.items() if k.startswith("vision_model.")}
    text = {k.removeprefix("text_model."): v for k, v in state.items() if k.startswith("text_model.")}
    others = [
        k for k in state
        if not k.startswith(("vision_model.", "text_model.", "visual_projection.", "text_projection.", "logit_scale"))
        and not k.endswith(_IGNORED_SUFFIXES)
    ]
    if others:
        raise ZooError(
            f"Unrecognised keys in a Hugging Face CLIPModel checkpoint: {others[:5]} ({len(others)} in all)."
        )
    projection = state["visual_projection.weight"].T
    vision_tower = hf_vision_to_open_clip(vision, projection, _fuser(state, "vision_model."))
    out = {f"visual.{k}": v for k, v in vision_tower.items()}
    out.update(_convert_tower(text, _TEXT_RENAMES, "text", _fuser(state, "text_model.")))
    out["text_projection"] = state["text_projection.weight"].detach().T.contiguous()
    out["logit_scale"] = state["logit_scale"].detach().clone().reshape(())
    out["visual.proj"] = out["visual.proj"].contiguous()
    return out


# transformers' defaults for what a config.json written with `use_diff` (transformers 4.x) may leave out.
HF_DEFAULT_ACT = "quick_gelu"
HF_DEFAULT_EPS = 1e-5
_VISION_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                    "num_attention_heads": 12, "image_size": 224, "patch_size": 32, "num_channels": 3}
_TEXT_DEFAULTS = {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8,
                  "max_position_embeddings": 77, "vocab_size": 49408, "eos_token_id": 49407}
OPEN_CLIP_VOCAB = 49408  # open_clip's CLIP tokenizer (the OpenAI BPE, as Hugging Face's CLIPTokenizer)


def is_hf_clip_config(config: Mapping) -> bool:
    """Whether a ``config.json`` is a Hugging Face ``CLIPModel``'s (both tower configs)."""
    return isinstance(config.get("vision_config"), Mapping) and isinstance(config.get("text_config"), Mapping)


def open_clip_config(config: Mapping, where: str = "config.json") -> dict:
    """The open_clip architecture config (``embed_dim``, ``vision_cfg``, ``text_cfg``, ``quick_gelu``) of a Hugging
    Face ``CLIPModel`` config. What open_clip's CLIP cannot express (two activations, another layer-norm epsilon or
    vocabulary) raises a ZooError saying so."""
    if not is_hf_clip_config(config):
        raise ZooError(f"{where} is not a Hugging Face CLIPModel config (it has no vision_config and text_config).")
    vision = {**_VISION_DEFAULTS, **config["vision_config"]}
    text = {**_TEXT_DEFAULTS, **config["text_config"]}
    acts = {tower: cfg.get("hidden_act", HF_DEFAULT_ACT) for tower, cfg in (("vision", vision), ("text", text))}
    if len(set(acts.values())) > 1 or acts["vision"] not in ("quick_gelu", "gelu"):
        raise ZooError(
            f"{where}: activations {acts} cannot be converted: open_clip's CLIP uses one activation, quick_gelu or "
            "gelu, in both towers."
        )
    for tower, cfg in (("vision", vision), ("text", text)):
        eps = float(cfg.get("layer_norm_eps", HF_DEFAULT_EPS))
        if abs(eps - HF_DEFAULT_EPS) > 1e-12:
            raise ZooError(f"{where}: the {tower} tower uses layer_norm_eps={eps}; open_clip's CLIP uses 1e-5.")
        if cfg["hidden_size"] % cfg["num_attention_heads"]:
            raise ZooError(f"{where}: {tower} hidden_size is not a multiple of num_attention_heads.")
    if int(vision["num_channels"]) != 3:
        raise ZooError(f"{where}: the image tower takes {vision['num_channels']} channels; open_clip's CLIP takes 3.")
    if int(text["vocab_size"]) != OPEN_CLIP_VOCAB:
        raise ZooError(
            f"{where}: the text tower has a vocabulary of {text['vocab_size']} tokens; open_clip's CLIP tokenizer has "
            f"{OPEN_CLIP_VOCAB}, so its prompts would not be the ones this model was trained on."
        )
    if int(text["eos_token_id"]) not in (2, OPEN_CLIP_VOCAB - 1):  # 2: transformers' legacy argmax pooling
        raise ZooError(
            f"{where}: eos_token_id {text['eos_token_id']} is not the CLIP tokenizer's end token "
            f"({OPEN_CLIP_VOCAB - 1}): the text features would be pooled at another token."
        )
    return {
        "embed_dim": int(config.get("projection_dim", 512)),
        "quick_gelu": acts["vision"] == "quick_gelu",
        "vision_cfg": {
            "image_size": int(vision["image_size"]),
            "patch_size": int(vision["patch_size"]),
            "width": int(vision["hidden_size"]),
            "layers": int(vision["num_hidden_layers"]),
            "head_width": int(vision["hidden_size"]) // int(vision["num_attention_heads"]),
            "mlp_ratio": int(vision["intermediate_size"]) / int(vision["hidden_size"]),
        },
        "text_cfg": {
            "context_length": int(text["max_position_embeddings"]),
            "vocab_size": int(text["vocab_size"]),
            "width": int(text["hidden_size"]),
            "heads": int(text["num_attention_heads"]),
            "layers": int(text["num_hidden_layers"]),
            "mlp_ratio": int(text["intermediate_size"]) / int(text["hidden_size"]),
        },
    }


def check_hf_config(name: str, config: Mapping, activation: str, layer_norm_eps: float) -> None:
    """Raise a ZooError when a Hugging Face config needs another activation or norm epsilon than the base has.

    ``activation`` is the base tower's (``"quick_gelu"`` or ``"gelu"``); a mismatch would not show up in the shapes
    but would silently change every output.
    """
    vision = config.get("vision_config", config)
    if not vision:
        return
    hidden_act = vision.get("hidden_act", HF_DEFAULT_ACT)  # a diff-saved config leaves out transformers' default
    if hidden_act != activation:
        hint = "a -quickgelu model name or quick_gelu=True" if hidden_act == "quick_gelu" else "quick_gelu=False"
        raise ZooError(
            f"Expert {name!r} was trained with activation {hidden_act!r} but the base uses {activation!r}: "
            f"load the base with {hint}."
        )
    eps = vision.get("layer_norm_eps")
    if eps is not None and abs(float(eps) - layer_norm_eps) > 1e-12:
        raise ZooError(f"Expert {name!r} uses layer_norm_eps={eps} but the base uses {layer_norm_eps}.")
