"""Zero-shot classification heads from the CLIP text tower, cached on disk.

A head is a ``[classes, dim]`` matrix: for each class, the normalised text embeddings of its prompts (one per
template) are averaged, renormalised and scaled by the model's ``logit_scale``. Logits of an image are
``normalize(image_features) @ head.T``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from wemoe.tasks.registry import Task


def default_cache_dir() -> Path:
    """Where heads are cached: ``$WEMOE_CACHE`` or ``~/.cache/wemoe``."""
    return Path(os.environ.get("WEMOE_CACHE", Path.home() / ".cache" / "wemoe")) / "heads"


def text_fingerprint(clip: nn.Module) -> str:
    """A short hash of everything that shapes the text embeddings (every parameter outside the image tower)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(clip.state_dict().items()):
        if name.startswith("visual."):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _task_key(task: Task) -> str:
    digest = hashlib.sha256(repr((task.name, task.classnames, task.templates)).encode())
    return digest.hexdigest()[:16]


@torch.no_grad()
def build_head(clip: nn.Module, tokenizer, task: Task, device: str | torch.device = "cpu",
               batch: int = 256) -> torch.Tensor:
    """Compute the zero-shot head of ``task`` (no cache)."""
    clip = clip.to(device)
    rows = []
    for classname in task.classnames:
        prompts = task.prompts(classname)
        embeddings = torch.cat([clip.encode_text(tokenizer(prompts[i : i + batch]).to(device))
                                for i in range(0, len(prompts), batch)])
        rows.append(F.normalize(F.normalize(embeddings.float(), dim=-1).mean(0), dim=-1))
    return torch.stack(rows) * clip.logit_scale.exp().float()


class HeadCache:
    """Heads keyed by (text-tower fingerprint, task); memory first, then safetensors files on disk."""

    def __init__(self, clip: nn.Module, tokenizer, cache_dir: str | Path | None = None) -> None:
        self.clip = clip
        self.tokenizer = tokenizer
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.fingerprint = text_fingerprint(clip)
        self._memory: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def path(self, task: Task) -> Path:
        """The cache file of this task's head."""
        return self.cache_dir / f"{self.fingerprint}-{task.name}-{_task_key(task)}.safetensors"

    def get(self, task: Task, device: str | torch.device = "cpu") -> torch.Tensor:
        """The head of ``task``, computed once and then read from memory or disk."""
        path = self.path(task)
        key = path.name
        if key not in self._memory and path.is_file():
            self._memory[key] = load_file(str(path))["head"]
        if key in self._memory:
            self.hits += 1
        else:
            self.misses += 1
            head = build_head(self.clip, self.tokenizer, task).cpu()
            self._memory[key] = head
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                save_file({"head": head.contiguous()}, str(tmp))
                tmp.replace(path)
            except OSError:
                pass  # a read-only cache only costs recomputation
        return self._memory[key].to(device)
