"""Training the pocket zoo: the tiny CLIP (contrastive pretraining on captioned pocket images) and one expert per task.

Pretraining pairs every training image with a caption naming its class (drawn from the task's templates and a few
generic ones); images of the same class count as positives of each other's captions. Experts fine-tune a copy of
the image tower with cross-entropy against the task's frozen zero-shot head (the task-vectors recipe); the
parameters outside the MLPs learn at ``non_mlp_lr_scale`` times the learning rate (0 freezes them), which decides
how much of each task vector lives where WEMoE can route it.

Why the defaults (measurements in research/pocket/FINDINGS.md):
- Pretraining sees nearly all its images *restyled* (``original_fraction``: 3% keep the tasks' own look; colours
  rotated, half inverted, most shrunk onto a grey canvas): a domain shift like CLIP's web photos vs MNIST, so
  zero-shot stays modest (71.1% on the shipped zoo, README) and task arithmetic falls well below the experts.
  Pretraining on the tasks' own look gave zero-shot 91% and no merging gap.
- Digits are restyled without shrinking, and no task has mirror-image classes: otherwise the tiny image tower
  cannot tell those classes apart in pretraining and their class names get the same text embedding (cosine 1.00),
  which caps how confident an expert can be.
- The logit scale is fixed at 14.3 while pretraining and set to 30 afterwards: the heads are 30 x cosine, so experts
  fine-tuned against them become confident (near-zero entropy on their task), which entropy adaptation needs.
- Non-MLP parameters are frozen during expert fine-tuning: every task vector lives in the MLPs, so WEMoE's oracle
  routing equals the experts exactly.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wemoe.pocket.generators import SIZE
from wemoe.pocket.loader import MODEL_NAME
from wemoe.pocket.tasks import POCKET_TASKS, TASK_NAMES, arrays, get_spec
from wemoe.tasks.heads import build_head
from wemoe.zoo.clip_models import create_clip

CONFIG_PATH = Path(__file__).with_name("pocket_clip.json")
MEAN = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
STD = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
GENERIC_TEMPLATES = ("a photo of {c}.", "{c}.", "an image of {c}.")
Progress = Callable[[str], None]


@dataclass
class PretrainSettings:
    """Contrastive pretraining of the tiny CLIP."""

    steps: int = 2400
    batch: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    logit_scale: float = 1 / 0.07
    # the temperature the finished model carries (its zero-shot heads, the experts' loss)
    head_logit_scale: float = 30.0
    seed: int = 0
    restyle: bool = True  # pretrain on restyled images (a domain shift), as CLIP saw web photos, not the benchmarks
    original_fraction: float = 0.03  # share of pretraining images left in the tasks' own style
    shrink: bool = True  # restyled images are also shrunk onto a grey canvas (else: colours only)
    task_original_fraction: tuple[tuple[str, float], ...] = (  # per-task overrides
        ("pocket_digits", 0.06), ("pocket_shapes", 0.10), ("pocket_textures", 0.05), ("pocket_terrain", 0.0),
        ("pocket_flags", 0.0),
    )
    # tasks restyled without shrinking (fine detail: shrunk digits blur together)
    keep_size: tuple[str, ...] = ("pocket_digits",)


@dataclass
class ExpertSettings:
    """Fine-tuning of one expert image tower against its task's frozen zero-shot head."""

    steps: int = 600
    batch: int = 64
    lr: float = 2e-3
    non_mlp_lr_scale: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0


def load_config(path: str | Path = CONFIG_PATH) -> dict:
    """The tiny CLIP's open_clip config (embed_dim, vision_cfg, text_cfg)."""
    return json.loads(Path(path).read_text())


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's global generator seeded with ``seed`` inside the block and put back as it was after.

    open_clip's initialisers draw from the global generator; seeding it inside ``fork_rng`` keeps the shipped zoo's
    random stream (the same weights as before) without leaving a process-wide seed behind for other callers."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def create_pocket_clip(config: dict | None = None, seed: int = 0):
    """A randomly initialised tiny CLIP (seeded locally), its eval transform and its tokenizer."""
    with seeded(seed):
        return create_clip(MODEL_NAME, None, False, config or load_config())


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[n, 32, 32, 3]`` -> normalised ``[n, 3, 32, 32]``, the same as the model's eval transform does."""
    x = torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).float() / 255.0
    return (x - MEAN) / STD


def _cosine_lr(optimizer: torch.optim.Optimizer, base_lrs: list[float], step: int, steps: int, warmup: int) -> None:
    factor = ((step + 1) / warmup if step < warmup
              else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))))
    for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
        group["lr"] = lr * factor


def captions(tasks: tuple[str, ...] = TASK_NAMES) -> tuple[list[str], dict[tuple[str, int], list[int]]]:
    """Every pretraining caption of ``tasks``, and for each (task, class) the indices of its captions."""
    texts: list[str] = []
    index: dict[tuple[str, int], list[int]] = {}
    for spec in map(get_spec, tasks):
        for label, name in enumerate(spec.classnames):
            ids = []
            for template in spec.templates + GENERIC_TEMPLATES:
                ids.append(len(texts))
                texts.append(template.format(c=name))
            index[(spec.name, label)] = ids
    return texts, index


def restyle(images: np.ndarray, seed: int, original_fraction: float = 0.0, shrink: bool = True) -> np.ndarray:
    """The pretraining look of task images: colours rotated (R,G,B -> G,B,R), half of them inverted, shrunk to
    14-24 px and pasted at random on a noisy grey canvas. Zero-shot accuracy on the tasks' own look then stays modest
    while the class names still get well-separated text embeddings."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    n = len(images)
    out = np.empty_like(images)
    keep = rng.random(n) < original_fraction
    invert = rng.random(n) < 0.5
    for i in range(n):
        if keep[i]:
            out[i] = images[i]
            continue
        x = images[i][..., [1, 2, 0]]
        if invert[i]:
            x = 255 - x
        if not shrink:
            out[i] = x
            continue
        size = int(rng.integers(14, 25))
        canvas = np.clip(rng.normal(int(rng.integers(90, 166)), 10, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
        small = np.asarray(Image.fromarray(x).resize((size, size), Image.BILINEAR))
        top, left = rng.integers(0, SIZE - size + 1, 2)
        canvas[top : top + size, left : left + size] = small
        out[i] = canvas
    return out


def pretrain(clip: nn.Module, tokenizer, settings: PretrainSettings, train_size: int | None = None,
             log: Progress | None = None, tasks: tuple[str, ...] = TASK_NAMES) -> list[float]:
    """Contrastive pretraining in place on ``tasks``' images (logit scale fixed at ``settings.logit_scale``);
    returns the loss per step."""
    generator = torch.Generator().manual_seed(settings.seed)
    images, classes = [], []
    texts, caption_index = captions(tasks)
    specs = [get_spec(task) for task in tasks]
    for t, spec in enumerate(specs):
        x, y = arrays(spec.name, "train", train_size)
        if settings.restyle:
            shrink = settings.shrink and spec.name not in settings.keep_size
            fraction = dict(settings.task_original_fraction).get(spec.name, settings.original_fraction)
            x = restyle(x, settings.seed + 17 * t, fraction, shrink)
        images.append(to_tensor(x))
        classes.append(torch.tensor(y) + 100 * t)
    images_t, classes_t = torch.cat(images), torch.cat(classes)
    class_captions = {100 * t + label: caption_index[(spec.name, label)]
                      for t, spec in enumerate(specs) for label in range(len(spec.classnames))}
    tokens = tokenizer(texts)
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(settings.logit_scale))
    clip.logit_scale.requires_grad_(False)
    clip.train()
    params = [p for p in clip.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    other = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                   {"params": other, "weight_decay": 0.0}], lr=settings.lr)
    base_lrs = [settings.lr, settings.lr]
    losses = []
    for step in range(settings.steps):
        _cosine_lr(optimizer, base_lrs, step, settings.steps, max(1, settings.steps // 20))
        pick = torch.randint(len(images_t), (settings.batch,), generator=generator)
        batch_classes = classes_t[pick]
        caption_ids = torch.tensor([
            class_captions[int(c)][int(torch.randint(len(class_captions[int(c)]), (1,), generator=generator))]
            for c in batch_classes])
        image_features = F.normalize(clip.encode_image(images_t[pick]), dim=-1)
        text_features = F.normalize(clip.encode_text(tokens[caption_ids]), dim=-1)
        logits = clip.logit_scale.exp() * image_features @ text_features.T
        positives = (batch_classes[:, None] == batch_classes[None, :]).float()
        targets = positives / positives.sum(1, keepdim=True)
        loss = 0.5 * (torch.sum(-targets * logits.log_softmax(1), 1).mean()
                      + torch.sum(-targets * logits.T.log_softmax(1), 1).mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if log is not None and (step + 1) % max(1, settings.steps // 8) == 0:
            log(f"pretrain step {step + 1}/{settings.steps}: loss {np.mean(losses[-20:]):.3f}")
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(settings.head_logit_scale))
    clip.eval()
    return losses


def is_mlp(name: str) -> bool:
    """Whether an image-tower parameter belongs to a transformer block's MLP (what WEMoE routes)."""
    return ".mlp." in name


def in_blocks(name: str, blocks: tuple[int, ...] | None) -> bool:
    """Whether an image-tower parameter lies in one of the transformer ``blocks`` (None: every parameter does)."""
    return blocks is None or any(f"resblocks.{b}." in name for b in blocks)


def finetune_expert(
    clip: nn.Module, tokenizer, task: str, settings: ExpertSettings, train_size: int | None = None,
    log: Progress | None = None, blocks: tuple[int, ...] | None = None,
) -> dict[str, torch.Tensor]:
    """Fine-tune a copy of the image tower on ``task`` against its frozen zero-shot head; returns its state dict.

    ``blocks``: only the MLPs of these transformer blocks learn (None: every block's; the other parameters as
    ``settings.non_mlp_lr_scale`` says)."""
    with seeded(settings.seed):
        return _finetune(clip, tokenizer, task, settings, train_size, log, blocks)


def _finetune(
    clip: nn.Module, tokenizer, task: str, settings: ExpertSettings, train_size: int | None, log: Progress | None,
    blocks: tuple[int, ...] | None = None,
) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(settings.seed)
    head = build_head(clip, tokenizer, POCKET_TASKS[task]).detach()
    tower = copy.deepcopy(clip.visual).train()
    x, y = arrays(task, "train", train_size)
    images, labels = to_tensor(x), torch.tensor(y)
    mlp = [p for n, p in tower.named_parameters() if is_mlp(n) and in_blocks(n, blocks)]
    rest = [p for n, p in tower.named_parameters() if not is_mlp(n)]
    for n, p in tower.named_parameters():
        if is_mlp(n) and not in_blocks(n, blocks):
            p.requires_grad_(False)
    groups = [{"params": mlp, "lr": settings.lr}]
    if settings.non_mlp_lr_scale > 0:
        groups.append({"params": rest, "lr": settings.lr * settings.non_mlp_lr_scale})
    else:
        for p in rest:
            p.requires_grad_(False)
    optimizer = torch.optim.AdamW(groups, weight_decay=settings.weight_decay)
    base_lrs = [g["lr"] for g in groups]
    losses = []
    for step in range(settings.steps):
        _cosine_lr(optimizer, base_lrs, step, settings.steps, max(1, settings.steps // 20))
        pick = torch.randint(len(images), (settings.batch,), generator=generator)
        logits = F.normalize(tower(images[pick]), dim=-1) @ head.T
        loss = F.cross_entropy(logits, labels[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    if log is not None:
        log(f"expert {task}: final loss {np.mean(losses[-20:]):.3f}")
    tower.eval().requires_grad_(False)
    return {k: v.detach().clone() for k, v in tower.state_dict().items()}


@torch.no_grad()
def accuracy(tower: nn.Module, head: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
             batch: int = 512) -> float:
    """Top-1 accuracy (percent)."""
    correct = 0
    for i in range(0, len(images), batch):
        logits = F.normalize(tower(images[i : i + batch]), dim=-1) @ head.T
        correct += int((logits.argmax(-1) == labels[i : i + batch]).sum())
    return 100.0 * correct / len(images)


def settings_dict(*settings) -> dict:
    """Dataclass settings as one JSON-ready dict, keyed by class name."""
    return {type(s).__name__: asdict(s) for s in settings}


__all__ = ["PretrainSettings", "ExpertSettings", "create_pocket_clip", "pretrain", "finetune_expert", "get_spec"]
