"""Load a Zoo from where its weights live: open_clip tags, the Hugging Face hub, local folders and files.

:func:`load_zoo` is the one entry point (re-exported as ``wemoe.zoo.load_zoo``). It takes

- ``"pocket"``: the small offline zoo shipped under ``assets/`` (built by ``wemoe.pocket``);
- a preset name (``wemoe.presets``, e.g. the paper's ViT-B/32 + 8 experts);
- a custom spec, as a :class:`ZooSpec`, a mapping with its fields, or the path of a ``.json`` file holding one.

A spec names the base (an open_clip model name plus a pretrained tag or a local checkpoint) and, per task, an
expert source: a hub id (``owner/name``, a Hugging Face CLIPVisionModel), a local Hugging Face folder, or a local
open_clip state dict (``.safetensors``; ``.pt/.pth/.bin`` only through ``torch.load(weights_only=True)``), either a
full CLIP state dict or the image tower alone.
"""

from __future__ import annotations

import inspect
import json
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
from wemoe.hf_convert import check_hf_config, hf_vision_to_open_clip, is_hf_vision_state
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


def read_hf_folder(folder: str | Path) -> tuple[StateDict, dict]:
    """The weights and ``config.json`` of a Hugging Face model folder (as written by ``save_pretrained``)."""
    folder = Path(folder).expanduser()
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
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
    if model.startswith(("hf-hub:", "local-dir:")):  # open_clip reads config and weights from there itself
        try:
            clip, _, preprocess = open_clip.create_model_and_transforms(
                model, force_quick_gelu=bool(quick_gelu), weights_only=True
            )
        except Exception as error:
            hint = offline_hint(model.removeprefix("hf-hub:")) if model.startswith("hf-hub:") else "Check the folder."
            raise ZooError(f"Could not load open_clip model {model!r}: {error}. {hint}") from error
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
        clip, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=None, force_quick_gelu=quick_gelu)
        if pretrained:
            _load_base_state(clip, read_weights(pretrained), pretrained)
    return clip.eval(), preprocess, open_clip.get_tokenizer(model)


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


def to_image_tower(task: str, state: Mapping[str, torch.Tensor], config: Mapping, clip: nn.Module) -> StateDict:
    """An expert's weights in open_clip image-tower layout, whatever layout they came in.

    Hugging Face layout is converted (projection from the base, activation checked against ``config``); a full
    open_clip CLIP state dict gives its ``visual.`` part; anything else is taken as an image tower as is (the Zoo
    checks it against the base).
    """
    if is_hf_vision_state(state):
        activation = visual_activation(clip)
        if activation is not None:
            check_hf_config(task, config, activation, float(clip.visual.ln_pre.eps))
        return hf_vision_to_open_clip(state, clip.visual.proj)
    if any(k.startswith("visual.") for k in state):
        return {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    return dict(state)


def load_expert(task: str, source: str | Path | Mapping[str, torch.Tensor], clip: nn.Module) -> StateDict:
    """One expert's image-tower state dict from a hub id, a local folder or file, or an in-memory state dict."""
    if isinstance(source, Mapping):
        return to_image_tower(task, source, {}, clip)
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        state, config = read_hf_folder(path)
    elif path.is_file():
        state, config = read_weights(path), {}
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
