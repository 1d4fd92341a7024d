"""Zero-shot classification heads from the CLIP text tower, cached on disk.

A head is a ``[classes, dim]`` matrix: for each class, the normalised text embeddings of its prompts (one per
template) are averaged, renormalised and scaled by the model's ``logit_scale``. Logits of an image are
``normalize(image_features) @ head.T``.

:class:`HeadCache` reads a head from memory, then its file in the heads folder, then a result store (the app's
persistent results, which survive a restart where the heads folder may not: on the ViT-B/32 zoo the eight tasks'
~3,700 prompts take minutes of CPU), and computes it only when none holds it, writing it to both.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Protocol

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


HEAD_FORMULA = "zero-shot head v2"
"""Names :func:`build_head`'s formula in store keys (the store adds its own version of every formula). v2: every
class's prompts in one batch of up to :data:`PROMPT_BATCH`, trimmed after their last end-of-text token (the same
head to float rounding; v1 encoded each class's few prompts apart, padded to 77 tokens)."""
PROMPT_BATCH = 256


class HeadStore(Protocol):
    """Where heads outlive the process (``wemoe.workbench.result_store.ResultStore`` is one): ``load`` gives back what
    ``save`` kept under a key, anything that is not a tensor counting as a miss."""

    def load(self, key: Hashable) -> Any:
        """The value kept under ``key`` (anything else than a tensor: none)."""

    def save(self, key: Hashable, value: Any) -> bool:
        """Keep ``value`` under ``key``; False when it was not kept."""


def _task_key(task: Task) -> str:
    digest = hashlib.sha256(repr((HEAD_FORMULA, task.name, task.classnames, task.templates)).encode())
    return digest.hexdigest()[:16]


@torch.no_grad()
def build_head(clip: nn.Module, tokenizer, task: Task, device: str | torch.device = "cpu",
               batch: int = PROMPT_BATCH) -> torch.Tensor:
    """Compute the zero-shot head of ``task`` (no cache).

    Every class's prompts go through the text tower together, ``batch`` at a time (a class has 1-18 prompts: batches
    that small left the CPU mostly idle), each batch cut after its last end-of-text token (:func:`encode_prompts`).
    """
    clip = clip.to(device)
    prompts = [task.prompts(classname) for classname in task.classnames]
    flat = [prompt for class_prompts in prompts for prompt in class_prompts]
    embeddings = torch.cat([encode_prompts(clip, tokenizer(flat[i : i + batch]).to(device))
                            for i in range(0, len(flat), batch)])
    per_class = F.normalize(embeddings.float(), dim=-1).split([len(p) for p in prompts])
    rows = [F.normalize(class_embeddings.mean(0), dim=-1) for class_embeddings in per_class]
    return torch.stack(rows) * clip.logit_scale.exp().float()


def encode_prompts(clip: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``clip.encode_text(tokens)``, over only the token columns up to the batch's last end-of-text token when
    ``clip`` is open_clip's ``CLIP`` with its causal mask and end-of-text pooling.

    The tokenizer pads every prompt to 77 tokens, and prompts are about 10: under a causal mask no token sees the
    padding after it, and the pooled token is the end-of-text one (the highest id, which ``argmax`` pooling finds), so
    the columns after the last one change nothing but the cost (~7x on ViT-B/32's prompts). Other towers (a custom
    text tower, another pooling) run whole.
    """
    from open_clip.model import CLIP
    from open_clip.transformer import text_global_pool

    trimmable = (type(clip).encode_text is CLIP.encode_text and getattr(clip, "text_pool_type", None) == "argmax"
                 and getattr(clip, "attn_mask", None) is not None and tokens.dim() == 2)
    if not trimmable:
        return clip.encode_text(tokens)
    length = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :length]
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens).to(cast_dtype) + clip.positional_embedding[:length].to(cast_dtype)
    x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask[:length, :length]))
    x = text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
    if clip.text_projection is not None:
        x = clip.text_projection(x) if isinstance(clip.text_projection, nn.Linear) else x @ clip.text_projection
    return x


class HeadCache:
    """Heads keyed by (text-tower fingerprint, task); memory first, then safetensors files on disk, then ``store``."""

    def __init__(self, clip: nn.Module, tokenizer, cache_dir: str | Path | None = None,
                 store: HeadStore | None = None) -> None:
        """``cache_dir``: the heads folder (default :func:`default_cache_dir`); ``store``: a result store asked
        when the folder lacks a head and handed every head computed (:meth:`store_key` is its key there)."""
        self.clip = clip
        self.tokenizer = tokenizer
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.fingerprint = text_fingerprint(clip)
        self.store = store
        self._memory: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def store_key(self, task: Task) -> tuple:
        """``task``'s head in the store: the formula, the text side's weights (every parameter outside the image
        tower, ``logit_scale`` included), the tokenizer's kind, the task's class names and templates."""
        return (HEAD_FORMULA, PROMPT_BATCH, self.fingerprint, type(self.tokenizer).__name__, task.name,
                tuple(task.classnames), tuple(task.templates))

    def _from_store(self, task: Task) -> torch.Tensor | None:
        """The head the store keeps for ``task``, or None."""
        if self.store is None:
            return None
        value = self.store.load(self.store_key(task))
        return value if isinstance(value, torch.Tensor) else None

    def path(self, task: Task) -> Path:
        """The cache file of this task's head."""
        return self.cache_dir / f"{self.fingerprint}-{task.name}-{_task_key(task)}.safetensors"

    def get(self, task: Task, device: str | torch.device = "cpu") -> torch.Tensor:
        """The head of ``task``, computed once and then read from memory or disk."""
        path = self.path(task)
        key = path.name
        if key not in self._memory and path.is_file():
            self._memory[key] = load_file(str(path))["head"]
        if key not in self._memory:
            stored = self._from_store(task)
            if stored is not None:
                self._memory[key] = stored
                self._write_file(path, stored)
        if key in self._memory:
            self.hits += 1
        else:
            self.misses += 1
            head = build_head(self.clip, self.tokenizer, task).cpu()
            self._memory[key] = head
            self._write_file(path, head)
            if self.store is not None:
                self.store.save(self.store_key(task), head)
        return self._memory[key].to(device)

    @staticmethod
    def _write_file(path: Path, head: torch.Tensor) -> None:
        """Keep ``head`` in the heads folder (written whole, then renamed); a folder that cannot be written only
        costs a recomputation later."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_file({"head": head.contiguous()}, str(tmp))
            tmp.replace(path)
        except OSError:
            pass
