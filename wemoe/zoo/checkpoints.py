"""Reading checkpoint files: state dicts from safetensors or plain-tensor pickles, Hugging Face folders, the hub.

A leaf of zoo loading: it knows files, folders and hub ids, not models or zoos (``wemoe.zoo.clip_models`` builds the
base CLIP, ``wemoe.zoo.sources`` the experts and the zoo).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from wemoe.errors import ZooError
from wemoe.zoo.mapped_weights import map_safetensors
from wemoe.zoo.zoo import StateDict

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
"""A Hugging Face hub id: ``owner/name``."""


class HubId(str):
    """A source that is a hub id and nothing else: loaders download it and never read it as a local path (a served
    app's visitor names no server path, ``wemoe.zoo.source_policy``)."""


def looks_like_path(text: str) -> bool:
    """Whether ``text`` reads as a file path (not a hub id, a model name or a pretrained tag)."""
    return text.startswith(("/", ".", "~")) or text.endswith(WEIGHT_SUFFIXES) or text.count("/") > 1 or "\\" in text


def read_weights(path: str | Path) -> StateDict:
    """A state dict from ``.safetensors`` or, through ``torch.load(weights_only=True)``, ``.pt/.pth/.bin/.ckpt``.

    A checkpoint wrapping its weights in ``{"state_dict": ...}`` is unwrapped and a ``module.`` prefix dropped.
    Files that need arbitrary unpickling are refused (they could run code): re-save them as safetensors.

    The tensors are memory-mapped, not copied: safetensors always (``wemoe.zoo.mapped_weights``: a tensor is read on
    first use, a part never used is never read), torch's zip checkpoints where ``torch.load(mmap=True)`` can.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ZooError(f"Checkpoint file {str(path)!r} does not exist. Check the path.")
    if path.suffix == ".safetensors":
        try:
            state = map_safetensors(path)
        except ZooError:
            raise
        except Exception as error:
            raise ZooError(f"Could not read safetensors file {str(path)!r}: {error}") from error
    elif path.suffix in WEIGHT_SUFFIXES:
        try:
            state = _torch_load(path)
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
    if not any(k.startswith("module.") for k in state):
        return state  # as read (a mapped safetensors state keeps its fused reads)
    return {k.removeprefix("module."): v for k, v in state.items()}


def _torch_load(path: Path) -> object:
    """``torch.load`` with ``weights_only=True``, memory-mapped when the file is a zip checkpoint (torch >= 1.6)."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error):  # only the legacy (pre-zip) format cannot be mapped
            raise
    return torch.load(str(path), map_location="cpu", weights_only=True)


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
