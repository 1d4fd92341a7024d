"""Creating the base CLIP: open_clip models by name and tag, from local checkpoints, or from Hugging Face CLIPModels.

A leaf of zoo loading: :func:`create_clip` gives a model, its image transform and its tokenizer, and nothing here
knows zoos or experts. open_clip keeps its architecture configs in one process-wide registry; every use of it here
goes through one lock, so several threads can create models at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import open_clip  # safe: importing any wemoe module first runs wemoe/__init__.py and its torchvision shim
from torch import nn

from wemoe.errors import ZooError
from wemoe.zoo.checkpoints import (
    HF_WEIGHT_FILES,
    HUB_ID,
    HubId,
    download_hf,
    looks_like_path,
    offline_hint,
    read_hf_config,
    read_hf_folder,
    read_weights,
)
from wemoe.zoo.hf_convert import hf_clip_to_open_clip, is_hf_clip_config, is_hf_clip_state, open_clip_config
from wemoe.zoo.zoo import StateDict

_CONFIG_DIR: tempfile.TemporaryDirectory | None = None
# open_clip keeps its model configs in one process-wide dict that ``add_model_config`` clears and re-reads: two
# threads creating models at once (two sessions loading a zoo) could find it empty. Every use goes through this lock.
_OPEN_CLIP_REGISTRY = threading.RLock()


def register_model_config(name: str, config: Mapping) -> None:
    """Make an open_clip architecture config known under ``name`` (through ``open_clip.add_model_config``).

    Registering the same config again is a no-op, so concurrent loads of one zoo do not rescan open_clip's registry.
    """
    global _CONFIG_DIR
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in config]
    if missing:
        raise ZooError(
            f"model_config for {name!r} lacks {missing}: an open_clip config has embed_dim, vision_cfg, text_cfg."
        )
    with _OPEN_CLIP_REGISTRY:
        if open_clip.get_model_config(name) == json.loads(json.dumps(dict(config))):
            return
        if _CONFIG_DIR is None:
            _CONFIG_DIR = tempfile.TemporaryDirectory(prefix="wemoe-model-configs-")
        path = Path(_CONFIG_DIR.name) / f"{name}.json"
        path.write_text(json.dumps(dict(config)))
        open_clip.add_model_config(path)


def visual_activation(clip: nn.Module) -> str | None:
    """``"quick_gelu"`` or ``"gelu"``: the MLP activation of a ViT image tower (None for other towers)."""
    blocks = getattr(getattr(clip.visual, "transformer", None), "resblocks", None)
    if not blocks:
        return None
    act = blocks[0].mlp.gelu
    return "quick_gelu" if type(act).__name__ == "QuickGELU" else "gelu"


ACTIVATION_SOURCE = "wemoe_activation_source"


def activation_source(clip: nn.Module) -> str | None:
    """Where the base's activation was stated (``"the pretrained tag 'openai'"``...), or None when it is only
    open_clip's default for the architecture (a local checkpoint or random weights without ``quick_gelu``)."""
    return getattr(clip, ACTIVATION_SOURCE, None)


def _stated_activation(model: str, pretrained: str | None, quick_gelu: bool | None, model_config: Mapping | None,
                       tag_cfg: Mapping) -> str | None:
    cfg = model_config if model_config is not None else (open_clip.get_model_config(model) or {})
    if cfg.get("quick_gelu"):  # force_quick_gelu=False cannot turn a config's QuickGELU off
        return f"quick_gelu in the model config of {model!r}"
    if quick_gelu is not None:
        return f"quick_gelu={bool(quick_gelu)} in the zoo spec"
    if tag_cfg:
        return f"the pretrained tag {pretrained!r}"
    if "quick_gelu" in cfg:
        return f"quick_gelu in the model config of {model!r}"
    return None


class _DropRandomInit(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init() -> Iterator[None]:
    """open_clip warns "Model initialized randomly" (on the root logger) when a model is made to be loaded after."""
    drop = _DropRandomInit()
    logging.getLogger().addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(drop)


def create_clip(
    model: str,
    pretrained: str | None = None,
    quick_gelu: bool | None = None,
    model_config: Mapping | None = None,
) -> tuple[nn.Module, Callable, Callable]:
    """An open_clip CLIP model (eval mode), its eval image transform and its tokenizer.

    ``pretrained`` is an open_clip tag (downloaded through the hub, cached), a local full-CLIP checkpoint path, or
    None (random weights). ``model`` may also be ``hf-hub:org/name`` or ``local-dir:/path`` (open_clip's own
    schemas, which carry their config and weights; ``pretrained`` is then ignored). ``quick_gelu=None`` follows the
    tag (OpenAI weights were trained with QuickGELU; open_clip 3.x only uses it with a ``-quickgelu`` model name or
    ``force_quick_gelu``). Safe to call from several threads at once (open_clip's registry is used under a lock).

    A Hugging Face ``CLIPModel`` is a base too, converted to open_clip with its architecture and activation from its
    ``config.json``: ``model`` as ``local-dir:PATH`` or a folder path, or ``pretrained`` as its folder, its hub id
    (``owner/name``) or its weights file (without a config.json next to it, ``model`` names the open_clip
    architecture and the activation must be stated, e.g. ``quick_gelu``). The clip records where its activation was
    stated (:func:`activation_source`), which decides whether experts without a config can be trusted.
    """
    with _OPEN_CLIP_REGISTRY:
        return _create_clip(model, pretrained, quick_gelu, model_config)


def _create_clip(
    model: str,
    pretrained: str | None = None,
    quick_gelu: bool | None = None,
    model_config: Mapping | None = None,
) -> tuple[nn.Module, Callable, Callable]:
    """The body of :func:`create_clip` (called under the registry lock)."""
    hf_folder = _hf_base_folder(model, pretrained)
    if hf_folder is not None:
        return _create_hf_clip(hf_folder, quick_gelu, model_config)
    if model.startswith(("hf-hub:", "local-dir:")):  # open_clip reads config and weights from there itself
        try:
            clip, _, preprocess = open_clip.create_model_and_transforms(
                model, force_quick_gelu=bool(quick_gelu), weights_only=True
            )
        except Exception as error:
            hint = offline_hint(model.removeprefix("hf-hub:")) if model.startswith("hf-hub:") else "Check the folder."
            raise ZooError(f"Could not load open_clip model {model!r}: {error}. {hint}") from error
        setattr(clip, ACTIVATION_SOURCE, f"the open_clip config of {model!r}")
        return clip.eval(), preprocess, open_clip.get_tokenizer(model)
    if model_config is not None:
        register_model_config(model, model_config)
    elif model not in open_clip.list_models():
        raise ZooError(
            f"Unknown open_clip model {model!r}. Known ViT models include: "
            f"{', '.join(m for m in open_clip.list_models() if m.startswith(('ViT-B', 'ViT-L')))}."
        )
    tag_cfg = open_clip.get_pretrained_cfg(model, pretrained) if pretrained else {}
    if pretrained and not tag_cfg and not Path(pretrained).expanduser().is_file():
        if looks_like_path(pretrained):
            raise ZooError(f"Base checkpoint {pretrained!r} does not exist. Check the path.")
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise ZooError(
            f"Unknown pretrained tag {pretrained!r} for {model!r}. Known tags: {', '.join(tags) or 'none'}; "
            "or give the path of a local checkpoint."
        )
    stated = _stated_activation(model, pretrained, quick_gelu, model_config, tag_cfg)
    if quick_gelu is None:
        quick_gelu = bool(tag_cfg.get("quick_gelu", False)) or bool((model_config or {}).get("quick_gelu", False))
    if tag_cfg:
        try:
            clip, _, preprocess = open_clip.create_model_and_transforms(
                model, pretrained=pretrained, force_quick_gelu=quick_gelu, weights_only=True
            )
        except Exception as error:
            repo = os.path.split(tag_cfg.get("hf_hub", ""))[0]  # "org/name/" or "org/name/file" -> "org/name"
            hint = offline_hint(repo) if repo else "Check the network connection."
            raise ZooError(
                f"Could not load open_clip {model!r} with pretrained {pretrained!r}"
                f"{f' (hub id {repo!r})' if repo else ''}: {error}. {hint}"
            ) from error
    else:
        state = read_weights(pretrained) if pretrained else None
        if state is not None and is_hf_clip_state(state):  # a CLIPModel's weights file without its config.json
            if stated is None:
                raise ZooError(
                    f"Base checkpoint {pretrained!r} is a Hugging Face CLIPModel without its config.json, so the "
                    "activation it was trained with (hidden_act: quick_gelu or gelu) is unknown. Give the folder "
                    'holding config.json and the weights, or state it in the spec: "quick_gelu": true for OpenAI '
                    'CLIP, "quick_gelu": false for GELU models.'
                )
            state = hf_clip_to_open_clip(state)
        with _quiet_random_init():  # the weights are loaded just below: "initialized randomly" would mislead
            clip, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=None,
                                                                        force_quick_gelu=quick_gelu)
        if state is not None:
            _load_base_state(clip, state, pretrained)
    setattr(clip, ACTIVATION_SOURCE, stated)
    return clip.eval(), preprocess, open_clip.get_tokenizer(model)


def _hf_base_folder(model: str, pretrained: str | None) -> Path | None:
    """The folder of a Hugging Face ``CLIPModel`` base (downloaded for a hub id), or None for an open_clip base.

    It is ``model`` as ``local-dir:PATH`` (without open_clip's ``open_clip_config.json``) or as a folder path, or
    ``pretrained`` as a folder, a hub id (``owner/name``, not an open_clip tag) or a weights file whose folder holds a
    CLIPModel ``config.json``.
    """
    folder = None
    if model.startswith("local-dir:"):
        path = Path(model.removeprefix("local-dir:")).expanduser()
        if (path / "config.json").is_file() and not (path / "open_clip_config.json").is_file():
            folder = path
    elif not model.startswith("hf-hub:") and (Path(model).expanduser() / "config.json").is_file():
        folder = Path(model).expanduser()
    elif isinstance(pretrained, HubId):  # a visitor's hub id: never a local path
        if model in open_clip.list_models() and open_clip.get_pretrained_cfg(model, pretrained):
            return None
        folder = download_hf(pretrained)
    elif pretrained:
        path = Path(pretrained).expanduser()
        if path.is_dir():
            folder = path
        elif path.is_file():
            if path.name in HF_WEIGHT_FILES and is_hf_clip_config(read_hf_config(path.parent)):
                folder = path.parent
        elif HUB_ID.match(pretrained) and not looks_like_path(pretrained):
            if model in open_clip.list_models() and open_clip.get_pretrained_cfg(model, pretrained):
                return None
            folder = download_hf(pretrained)
    return folder


def _create_hf_clip(
    folder: Path, quick_gelu: bool | None, model_config: Mapping | None
) -> tuple[nn.Module, Callable, Callable]:
    """An open_clip CLIP holding a Hugging Face ``CLIPModel``'s weights, its architecture from its config.json."""
    where = str(folder / "config.json")
    config = read_hf_config(folder)
    if not config:
        raise ZooError(
            f"Base folder {str(folder)!r} has no config.json: give the folder of a Hugging Face CLIPModel "
            "(written by save_pretrained), or an open_clip model name with a checkpoint."
        )
    if not is_hf_clip_config(config):
        kind = config.get("model_type") or ", ".join(config.get("architectures", [])) or "not CLIP"
        raise ZooError(
            f"{where} is not a CLIPModel config ({kind}): a base needs both towers (a CLIPModel); "
            "a CLIPVisionModel can only be an expert."
        )
    cfg = open_clip_config(config, where)
    if model_config is not None:
        raise ZooError(f"The base {str(folder)!r} brings its architecture in {where}: drop model_config from the spec.")
    if quick_gelu is not None and bool(quick_gelu) != cfg["quick_gelu"]:
        raise ZooError(
            f"{where} says the base was trained with {'quick_gelu' if cfg['quick_gelu'] else 'gelu'}, but the spec "
            f"asks quick_gelu={bool(quick_gelu)}: drop quick_gelu from the spec (the config says how it was trained)."
        )
    state, _ = read_hf_folder(folder)
    converted = hf_clip_to_open_clip(state)
    name = "hf-clip-" + hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
    register_model_config(name, cfg)
    processor = _preprocessor(folder)
    clip, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=None, force_quick_gelu=cfg["quick_gelu"], **processor
    )
    _load_base_state(clip, converted, str(folder))
    setattr(clip, ACTIVATION_SOURCE, f"hidden_act in {where}")
    return clip.eval(), preprocess, open_clip.get_tokenizer(name)


def _preprocessor(folder: Path) -> dict:
    """``image_mean``/``image_std`` from a Hugging Face ``preprocessor_config.json`` (open_clip's defaults are
    OpenAI CLIP's, as Hugging Face's)."""
    path = folder / "preprocessor_config.json"
    try:
        processor = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}
    out = {}
    for key in ("image_mean", "image_std"):
        value = processor.get(key)
        if isinstance(value, list) and len(value) == 3:
            out[key] = tuple(float(v) for v in value)
    return out


def _load_base_state(clip: nn.Module, state: StateDict, source: str) -> None:
    expected = clip.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ZooError(
            f"Base checkpoint {source!r} does not fit this open_clip model: {len(missing)} missing parameters "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}. It must be a full CLIP state dict "
            "(image and text towers) of the same architecture."
        )
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise ZooError(
                f"Base checkpoint {source!r}: parameter {key!r} has shape {tuple(state[key].shape)} "
                f"but the model {tuple(value.shape)} expects. Pick the matching model name."
            )
    clip.load_state_dict(state)
