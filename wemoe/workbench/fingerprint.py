"""A content hash of what a loaded zoo's results depend on, for the keys of results kept on disk.

A zoo's name says where its weights came from, not what they are: a re-exported expert, a rebuilt pocket zoo or
another hub revision keeps the name and changes every result. :func:`loaded_fingerprint` hashes the weights themselves
(the base CLIP model, text tower included, and every expert), the zero-shot heads (class names, prompts, tokenizer),
the scored test images and labels, and how they were drawn (images per task, seed, adaptation split), once per loaded
zoo: sha256 runs at about 1.8 GB/s on an AMD EPYC core, about 2 s for the eight ViT-B/32 experts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch


def update_with_tensors(digest: hashlib._Hash, tensors: Mapping[str, torch.Tensor]) -> None:
    """Feed ``tensors`` (names, dtypes, shapes and bytes, in the mapping's order) into ``digest``."""
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())


def loaded_fingerprint(loaded: Any) -> str:
    """The sha256 (hex) of a :class:`~wemoe.workbench.loaded_zoo.LoadedZoo`'s weights, heads, scored images and how
    they were drawn (loads the images and heads when not loaded yet)."""
    digest = hashlib.sha256()
    setting = {"tasks": [[t.name, list(t.classnames)] for t in loaded.tasks], "samples": loaded.samples,
               "seed": loaded.seed, "adapt_split": loaded.adapt_split}
    digest.update(json.dumps(setting, sort_keys=True).encode())
    update_with_tensors(digest, loaded.zoo.clip.state_dict())
    for task, state in loaded.zoo.experts.items():
        digest.update(f"expert {task}|".encode())
        update_with_tensors(digest, state)
    update_with_tensors(digest, loaded.heads())
    for task, images in loaded.data().items():
        update_with_tensors(digest, {f"{task} images": images.images, f"{task} labels": images.labels})
    return digest.hexdigest()
