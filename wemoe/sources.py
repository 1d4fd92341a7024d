"""Load a Zoo from where its weights live: open_clip tags, the Hugging Face hub, local folders and files.

:func:`load_zoo` is the one entry point (re-exported as ``wemoe.zoo.load_zoo``). It takes

- ``"pocket"``: the small offline zoo shipped under ``assets/`` (built by ``wemoe.pocket``);
- a preset name (``wemoe.presets``, e.g. the paper's ViT-B/32 + 8 experts);
- a custom spec, as a :class:`ZooSpec`, a mapping with its fields, or the path of a ``.json`` file holding one.

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

import hashlib
import inspect
import json
import math
import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import open_clip  # safe: importing any wemoe module first runs wemoe/__init__.py and its torchvision shim
import torch
from safetensors.torch import load_file
from torch import nn

from wemoe.errors import ZooError
from wemoe.hf_convert import (
    check_hf_config,
    hf_clip_to_open_clip,
    hf_vision_to_open_clip,
    is_hf_clip_config,
    is_hf_clip_state,
    is_hf_vision_state,
    open_clip_config,
)
from wemoe.zoo import StateDict, Zoo

ProgressFn = Callable[[float, str], None]
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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


def _noop(fraction: float, message: str) -> None:
    pass


# ---------------------------------------------------------------------------------------------------------------
# Reading checkpoint files


def read_weights(path: str | Path) -> StateDict:
    """A state dict from ``.safetensors`` or, through ``torch.load(weights_only=True)``, ``.pt/.pth/.bin/.ckpt``.

    A checkpoint wrapping its weights in ``{"state_dict": ...}`` is unwrapped and a ``module.`` prefix dropped.
    Files that need arbitrary unpickling are refused (they could run code): re-save them as safetensors.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ZooError(f"Checkpoint file {str(path)!r} does not exist. Check the path.")
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except Exception as error:
            raise ZooError(f"Could not read safetensors file {str(path)!r}: {error}") from error
    elif path.suffix in WEIGHT_SUFFIXES:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as error:
            raise ZooError(
                f"Could not read {str(path)!r} as plain tensors (torch.load with weights_only=True): {error}. "
                "Only state dicts of tensors are accepted; re-save it with safetensors.torch.save_file."
            ) from error
    else:
        raise ZooError(
            f"Unsupported checkpoint type {path.suffix!r} ({str(path)!r}): use one of {', '.join(WEIGHT_SUFFIXES)}."
        )
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ZooError(f"{str(path)!r} is not a state dict of tensors (a mapping from parameter name to tensor).")
    return {k.removeprefix("module."): v for k, v in state.items()}


def read_hf_config(folder: str | Path) -> dict:
    """A Hugging Face folder's ``config.json`` ({} when there is none)."""
    path = Path(folder).expanduser() / "config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ZooError(f"Could not read {str(path)!r} as JSON: {error}") from error
    if not isinstance(config, dict):
        raise ZooError(f"{str(path)!r} is not a Hugging Face config (a JSON object).")
    return config


def read_hf_folder(folder: str | Path) -> tuple[StateDict, dict]:
    """The weights and ``config.json`` of a Hugging Face model folder (as written by ``save_pretrained``)."""
    folder = Path(folder).expanduser()
    config = read_hf_config(folder)
    for name in HF_WEIGHT_FILES:
        if (folder / name).is_file():
            return read_weights(folder / name), config
    raise ZooError(
        f"Folder {str(folder)!r} holds no Hugging Face weights (looked for {', '.join(HF_WEIGHT_FILES)}). "
        "Give a folder written by save_pretrained, or an open_clip .safetensors file."
    )


def offline_hint(repo_id: str) -> str:
    """How to make a hub repository available offline."""
    return (
        f"Pre-download it where there is network: `hf download {repo_id}` (older clients: "
        f"`huggingface-cli download {repo_id}`), copy the Hugging Face cache (~/.cache/huggingface, or $HF_HOME) "
        "to this machine if needed, then run with HF_HUB_OFFLINE=1."
    )


def download_hf(repo_id: str) -> Path:
    """Fetch (or find in the local cache) a Hugging Face model's ``config.json`` and weights; return their folder."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        config = Path(hf_hub_download(repo_id, "config.json"))
        unreachable = False
        for name in HF_WEIGHT_FILES:
            try:
                hf_hub_download(repo_id, name)
                return config.parent
            except LocalEntryNotFoundError:  # subclass of EntryNotFoundError: offline, not "absent"
                unreachable = True
            except EntryNotFoundError:
                continue
        if unreachable:
            raise LocalEntryNotFoundError(f"no weights of {repo_id} in the local cache")
        raise ZooError(
            f"Hub repository {repo_id!r} has no {' or '.join(HF_WEIGHT_FILES)}: it is not a Hugging Face CLIP model."
        )
    except LocalEntryNotFoundError as error:
        raise ZooError(
            f"Could not fetch {repo_id!r} from the Hugging Face hub: no network (or HF_HUB_OFFLINE=1) and it is not "
            f"in the local cache. {offline_hint(repo_id)}"
        ) from error
    except RepositoryNotFoundError as error:
        raise ZooError(f"Hub repository {repo_id!r} does not exist or is private. Check the id.") from error
    except ZooError:
        raise
    except Exception as error:  # HTTP errors, gated repos, disk full: say which id, keep the cause
        raise ZooError(
            f"Could not download {repo_id!r} from the Hugging Face hub: {error}. {offline_hint(repo_id)}"
        ) from error


# ---------------------------------------------------------------------------------------------------------------
# The base model


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


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", ".", "~")) or text.endswith(WEIGHT_SUFFIXES) or text.count("/") > 1 or "\\" in text


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
        if _looks_like_path(pretrained):
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
        clip, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=None, force_quick_gelu=quick_gelu)
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
    elif pretrained:
        path = Path(pretrained).expanduser()
        if path.is_dir():
            folder = path
        elif path.is_file():
            if path.name in HF_WEIGHT_FILES and is_hf_clip_config(read_hf_config(path.parent)):
                folder = path.parent
        elif _HUB_ID.match(pretrained) and not _looks_like_path(pretrained):
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


def to_image_tower(task: str, state: Mapping[str, torch.Tensor], config: Mapping, clip: nn.Module) -> StateDict:
    """An expert's weights in open_clip image-tower layout, whatever layout they came in.

    Hugging Face layout is converted (projection from the base). Its activation is checked against ``config``; with
    no config it is the base's when the base's activation was stated and the expert is a fine-tune of the base (its
    weights within :data:`FINE_TUNED_DISTANCE` of the base tower's), else the expert is refused, naming what is
    missing. A full open_clip CLIP state dict gives its ``visual.`` part; anything else is taken as an image tower as
    is (the Zoo checks it against the base).
    """
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


def load_expert(task: str, source: str | Path | Mapping[str, torch.Tensor], clip: nn.Module) -> StateDict:
    """One expert's image-tower state dict from a hub id, a local folder or file, or an in-memory state dict."""
    if isinstance(source, Mapping):
        return to_image_tower(task, source, {}, clip)
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        state, config = read_hf_folder(path)
    elif path.is_file():  # a save_pretrained folder's weights file given alone: its config.json still applies
        state, config = read_weights(path), read_hf_config(path.parent) if path.name in HF_WEIGHT_FILES else {}
    elif _looks_like_path(text) or not _HUB_ID.match(text):
        raise ZooError(
            f"Expert {task!r}: {text!r} does not exist. Give an existing file or folder, or a hub id (owner/name)."
        )
    else:
        state, config = read_hf_folder(download_hf(text))
    return to_image_tower(task, state, config, clip)


# ---------------------------------------------------------------------------------------------------------------
# The entry point


def _load_pocket(progress: ProgressFn | None) -> Zoo:
    try:
        from wemoe.pocket import load_pocket_zoo
    except ImportError as error:
        raise ZooError(f"The pocket zoo is not available in this install ({error}).") from error
    if progress is not None and "progress" in inspect.signature(load_pocket_zoo).parameters:
        return load_pocket_zoo(progress=progress)
    return load_pocket_zoo()


def resolve_spec(spec: str | Path | Mapping | ZooSpec) -> ZooSpec | str:
    """The ZooSpec a preset name, JSON file or mapping stands for (``"pocket"`` is returned as is)."""
    from wemoe.presets import get_preset

    if isinstance(spec, ZooSpec):
        return spec
    if isinstance(spec, Mapping):
        return ZooSpec.from_mapping(spec)
    text = str(spec)
    if text == "pocket":
        return text
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


def load_zoo(spec: str | Path | Mapping | ZooSpec, progress: ProgressFn | None = None) -> Zoo:
    """Load a Zoo: ``"pocket"``, a preset name, a ``.json`` spec file, a mapping of ZooSpec fields or a ZooSpec.

    ``progress(fraction, message)`` is called as the base and each expert load (fraction in [0, 1]).
    """
    resolved = resolve_spec(spec)
    if resolved == "pocket":
        return _load_pocket(progress)
    assert isinstance(resolved, ZooSpec)
    report = progress or _noop
    steps = len(resolved.experts) + 1
    report(0.0, f"Loading base {resolved.model} ({resolved.pretrained or 'random weights'})")
    clip, preprocess, tokenizer = create_clip(
        resolved.model, resolved.pretrained, resolved.quick_gelu, resolved.model_config
    )
    experts: dict[str, StateDict] = {}
    for i, (task, source) in enumerate(resolved.experts.items(), start=1):
        report(
            i / steps,
            f"Loading expert {task!r} ({i}/{steps - 1}) from {source if isinstance(source, (str, Path)) else 'memory'}",
        )
        experts[task] = load_expert(task, source, clip)
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
        },
    )
    report(1.0, f"Loaded zoo {resolved.name!r}: base {resolved.model} and {len(experts)} experts")
    return zoo
