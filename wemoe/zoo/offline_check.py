"""Offline, before loading: which of a zoo's hub checkpoints are not in the local Hugging Face cache, all in one
message with the command that fetches them (instead of a failure at the first one, after the others loaded).

Only hub ids are checked (the base's open_clip tag, when it names a hub repo, and experts given as ``owner/name``);
local files and folders are left to the loaders. Online nothing is checked: the loaders download what is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

from wemoe.errors import ZooError
from wemoe.zoo.checkpoints import HF_WEIGHT_FILES, HUB_ID, looks_like_path
from wemoe.zoo.zoo import ZooSpec

OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
"""The files open_clip looks for in a pretrained tag's hub repo."""


def offline() -> bool:
    """Whether the Hugging Face hub is switched off (``HF_HUB_OFFLINE``)."""
    import huggingface_hub.constants

    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def _cached(repo: str, names: tuple[str, ...]) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo, name), str) for name in names)


def base_repo(spec: ZooSpec) -> tuple[str, tuple[str, ...]] | None:
    """The hub repo (and the files looked for) of the spec's open_clip pretrained tag, or None (no tag, a local
    checkpoint, or a tag downloaded from elsewhere)."""
    if not spec.pretrained or looks_like_path(spec.pretrained) or Path(spec.pretrained).expanduser().exists():
        return None
    import open_clip

    hub = (open_clip.get_pretrained_cfg(spec.model, spec.pretrained) or {}).get("hf_hub", "")
    if not hub:
        return None
    parts = hub.strip("/").split("/")
    repo, file = "/".join(parts[:2]), "/".join(parts[2:])
    return repo, (file,) if file else OPEN_CLIP_FILES


def missing_checkpoints(spec: ZooSpec) -> list[tuple[str, str]]:
    """``(what, hub id)`` (``the base`` or ``expert 'task'``) of every checkpoint the spec names on the hub that the
    local cache lacks."""
    missing = []
    base = base_repo(spec)
    if base is not None and not _cached(*base):
        missing.append(("the base", base[0]))
    for task, source in spec.experts.items():
        text = str(source)
        if not isinstance(source, str) or os.path.exists(os.path.expanduser(text)) or looks_like_path(text):
            continue
        if HUB_ID.match(text) and not (_cached(text, ("config.json",)) and _cached(text, HF_WEIGHT_FILES)):
            missing.append((f"expert {task!r}", text))
    return missing


def check_cached_offline(spec: ZooSpec) -> None:
    """Offline, raise one ZooError naming every hub checkpoint of ``spec`` missing from the cache and how to get them
    all; online, or with everything cached, do nothing."""
    if not offline():
        return
    missing = missing_checkpoints(spec)
    if not missing:
        return
    ids = [repo for _, repo in missing]
    experts = [what.removeprefix("expert ") for what, _ in missing if what != "the base"]
    if len(missing) <= 3:  # few: each with its id; many: the ids are in the command below
        shown = ", ".join(f"{what} {repo!r}" for what, repo in missing)
    else:
        parts = [f"the base {repo!r}" for what, repo in missing if what == "the base"]
        parts.append(f"{len(experts)} expert(s) ({', '.join(experts)})")
        shown = " and ".join(parts)
    fetch = f"hf download {ids[0]}" if len(ids) == 1 else f"for repo in {' '.join(ids)}; do hf download $repo; done"
    raise ZooError(
        f"Zoo {spec.name!r} needs {len(missing)} checkpoint(s) that are not in the local Hugging Face cache, and "
        f"the hub is switched off (HF_HUB_OFFLINE=1): {shown}. Fetch them where there is network: `{fetch}` (older "
        "clients: huggingface-cli download), copy the Hugging Face cache (~/.cache/huggingface, or $HF_HOME) to this "
        "machine if needed, then run again with HF_HUB_OFFLINE=1. Its tasks' datasets come from the hub too: each "
        "says how to fetch it when it is missing."
    )
