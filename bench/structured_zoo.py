"""A ViT-B/32-shaped zoo whose task vectors look like fine-tuning's, not like noise (for methods_vs_fusionbench.py).

I.i.d. task vectors are the easy case for the SVD-based merges: every singular value about equal, tasks nearly
orthogonal. Fine-tuned task vectors have decaying spectra and share directions across tasks. Here every 2-D tensor's
task vector is ``tau_t = sqrt(shared) S + sqrt(1 - shared) P_t``: one shared part ``S`` and one part ``P_t`` of task
``t``, each a full-rank ``U diag(s) V^T`` with its own random orthonormal ``U``, ``V`` and the spectrum
``s_i ~ (i + 1)^-decay``, scaled to the Frobenius norm of i.i.d. entries of std ``tv_std``. Every other tensor
(biases, LayerNorms, the patch convolution, the class embedding) mixes a shared and a task's own i.i.d. Gaussian the
same way. Everything is drawn from one local ``torch.Generator``.
"""

from __future__ import annotations

import math

import wemoe  # noqa: F401  (before open_clip: the torchvision compatibility step)  # isort: skip
import open_clip
import torch

from wemoe.zoo.zoo import Zoo

TINY_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
BASE_STD = 0.02  # the random base weights' std
StateDict = dict[str, torch.Tensor]


def random_orthonormal(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """``[rows, cols]`` with orthonormal columns (``cols <= rows``), from the QR of a Gaussian matrix."""
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()  # signs fixed: Haar-distributed, not LAPACK's choice


def spectral_matrix(shape: tuple[int, int], decay: float, frobenius: float, generator: torch.Generator) -> torch.Tensor:
    """A full-rank ``[m, n]`` matrix with random singular vectors, singular values ``~ (i + 1)^-decay`` and the given
    Frobenius norm."""
    rows, cols = shape
    rank = min(rows, cols)
    spectrum = torch.arange(1, rank + 1, dtype=torch.float64).pow(-decay)
    spectrum = spectrum * (frobenius / float(spectrum.norm()))
    u = random_orthonormal(rows, rank, generator)
    v = random_orthonormal(cols, rank, generator)
    return (u * spectrum.float()) @ v.T


def _draw(like: torch.Tensor, tv_std: float, decay: float, generator: torch.Generator) -> torch.Tensor:
    """One part of a task vector shaped like ``like``: spectral for a matrix, i.i.d. Gaussian otherwise."""
    if like.ndim == 2:
        return spectral_matrix(tuple(like.shape), decay, tv_std * math.sqrt(like.numel()), generator)
    return torch.randn(like.shape, generator=generator) * tv_std


def structured_task_vectors(base: StateDict, experts: int, tv_std: float, shared: float, decay: float,
                            generator: torch.Generator) -> list[StateDict]:
    """``experts`` task vectors for the floating tensors of ``base``: shared and task-specific parts as the module
    says (``shared``: the shared part's share of the energy)."""
    vectors: list[StateDict] = [{} for _ in range(experts)]
    mix_shared, mix_own = math.sqrt(shared), math.sqrt(1.0 - shared)
    for key, value in base.items():
        if not torch.is_floating_point(value):
            continue
        common = _draw(value, tv_std, decay, generator)
        for vector in vectors:
            vector[key] = mix_shared * common + mix_own * _draw(value, tv_std, decay, generator)
    return vectors


def structured_zoo(blocks: int, width: int, patch_size: int, image_size: int, experts: int, tv_std: float,
                   shared: float = 0.5, decay: float = 1.0, seed: int = 0, iid: bool = False) -> Zoo:
    """An open_clip CLIP with random image-tower weights (std 0.02) and ``experts`` experts = base + structured task
    vectors (``iid``: plain i.i.d. Gaussian task vectors of std ``tv_std`` instead)."""
    vision = {"image_size": image_size, "layers": blocks, "width": width, "patch_size": patch_size, "head_width": 64}
    clip = open_clip.CLIP(embed_dim=512, vision_cfg=vision, text_cfg=TINY_TEXT).eval()
    generator = torch.Generator().manual_seed(seed)
    base = {k: torch.randn(v.shape, generator=generator) * BASE_STD if torch.is_floating_point(v) else v
            for k, v in clip.visual.state_dict().items()}
    clip.visual.load_state_dict(base)
    if iid:
        vectors = [{k: torch.randn(v.shape, generator=generator) * tv_std for k, v in base.items()
                    if torch.is_floating_point(v)} for _ in range(experts)]
    else:
        vectors = structured_task_vectors(base, experts, tv_std, shared, decay, generator)
    tasks = {f"task{t}": {k: v + vector[k] if k in vector else v.clone() for k, v in base.items()}
             for t, vector in enumerate(vectors)}
    return Zoo("methods-vs-fusionbench", clip, tasks, preprocess=lambda image: image, tokenizer=lambda texts: texts)
