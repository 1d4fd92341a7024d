"""The seven image corruptions FusionBench uses for its robustness claim, at severity 1-5, in numpy/PIL/torch.

Motion blur, impulse noise, Gaussian noise, pixelate, spatter, contrast and JPEG compression, with the severity
constants of Hendrycks & Dietterich's ImageNet-C (``imagecorruptions``, which FusionBench calls). Sizes given there
in pixels of a 224 px image (the motion blur's length, the spatter's blur) are scaled to the image's size, so a 32 px
pocket image is blurred as much, relative to its size, as a 224 px one. Spatter is a simplified form of ImageNet-C's
(a thresholded blurred noise layer of water for severity 1-3, mud for 4-5, without the water's reflections).

Randomness comes only from a local ``np.random.Generator`` seeded per image (``seed`` and the image's index): the same
seed gives the same corrupted images, whatever else runs. :func:`corrupt` takes one PIL image;
:func:`corrupt_tensor` a preprocessed batch (undone to pixels, corrupted, preprocessed again).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from wemoe.errors import WemoeError

SEVERITIES = (1, 2, 3, 4, 5)
REFERENCE_SIZE = 224  # the image size ImageNet-C's pixel constants were set for
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]  # float [H, W, 3] in [0, 1] -> same


def _gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
    return x + rng.normal(size=x.shape, scale=c)


def _impulse_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    amount = (0.03, 0.06, 0.09, 0.17, 0.27)[severity - 1]
    out = x.copy()
    hit = rng.random(x.shape) < amount  # salt and pepper, per channel value (as skimage's random_noise)
    out[hit] = (rng.random(int(hit.sum())) < 0.5).astype(x.dtype)
    return out


def _contrast(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
    means = x.mean(axis=(0, 1), keepdims=True)
    return (x - means) * c + means


def _pixelate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.6, 0.5, 0.4, 0.3, 0.25)[severity - 1]
    h, w = x.shape[:2]
    image = Image.fromarray(_to_uint8(x))
    small = image.resize((max(1, int(w * c)), max(1, int(h * c))), Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.NEAREST), dtype=np.float64) / 255.0


def _jpeg(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    quality = (25, 18, 15, 10, 7)[severity - 1]
    buffer = io.BytesIO()
    Image.fromarray(_to_uint8(x)).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=np.float64) / 255.0


def _motion_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    radius, sigma = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))[severity - 1]
    scale = max(x.shape[:2]) / REFERENCE_SIZE
    length, sigma = max(2, int(round(radius * scale))), max(0.5, sigma * scale)
    angle = np.deg2rad(rng.uniform(-45, 45))
    steps = np.arange(length)
    weights = np.exp(-(steps**2) / (2 * sigma**2))
    weights /= weights.sum()
    out = np.zeros_like(x)
    h, w = x.shape[:2]
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    # one-sided: the image smeared along one direction, edges repeated
    for k, weight in zip(steps, weights, strict=True):
        dy, dx = int(round(k * np.sin(angle))), int(round(k * np.cos(angle)))
        out += weight * x[np.clip(rows - dy, 0, h - 1), np.clip(cols - dx, 0, w - 1)]
    return out


def _blur(layer: np.ndarray, sigma: float) -> np.ndarray:
    """A 2-D Gaussian blur (reflect padding) of ``layer`` ``[H, W]``."""
    radius = max(1, int(round(3 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    t = torch.from_numpy(layer)[None, None]
    pad = min(radius, layer.shape[0] - 1, layer.shape[1] - 1)
    t = F.pad(t, (pad, pad, pad, pad), mode="reflect") if pad > 0 else t
    t = F.conv2d(t, kernel.view(1, 1, 1, -1), padding=(0, radius - pad))
    t = F.conv2d(t, kernel.view(1, 1, -1, 1), padding=(radius - pad, 0))
    return t[0, 0].numpy()


def _spatter(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    loc, scale, sigma, threshold, intensity, mud = (
        (0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
        (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1),
    )[severity - 1]
    sigma = max(0.5, sigma * max(x.shape[:2]) / REFERENCE_SIZE * 4)  # drops a few pixels wide on small images
    liquid = _blur(rng.normal(size=x.shape[:2], loc=loc, scale=scale), sigma)
    liquid[liquid < threshold] = 0
    if mud:
        mask = (liquid >= threshold).astype(np.float64)[..., None] * min(1.0, intensity * 0.5)
        color = np.array([63, 42, 20]) / 255.0
    else:
        mask = np.clip(liquid * intensity, 0, 1)[..., None]
        color = np.array([175, 238, 238]) / 255.0
    return x * (1 - mask) + color * mask


CORRUPTIONS: dict[str, Corruption] = {
    "motion_blur": _motion_blur,
    "impulse_noise": _impulse_noise,
    "gaussian_noise": _gaussian_noise,
    "pixelate": _pixelate,
    "spatter": _spatter,
    "contrast": _contrast,
    "jpeg_compression": _jpeg,
}
"""The seven corruptions, by name, in FusionBench's order."""


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def check(name: str, severity: int) -> None:
    """A WemoeError unless ``name`` is a known corruption and ``severity`` is 1..5."""
    if name not in CORRUPTIONS:
        raise WemoeError(f"Unknown corruption {name!r}. Corruptions: {', '.join(CORRUPTIONS)}.")
    if severity not in SEVERITIES:
        raise WemoeError(f"Severity must be 1..5, got {severity!r}.")


def corrupt_array(pixels: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``pixels`` (uint8 ``[H, W, 3]``) corrupted, as uint8 ``[H, W, 3]``."""
    check(name, severity)
    return _to_uint8(CORRUPTIONS[name](pixels.astype(np.float64) / 255.0, severity, rng))


def corrupt(image: Image.Image, name: str, severity: int = 3, seed: int = 0) -> Image.Image:
    """One image corrupted (as RGB), deterministic in ``seed``."""
    pixels = np.asarray(image.convert("RGB"))
    return Image.fromarray(corrupt_array(pixels, name, severity, np.random.default_rng([seed, 0])))


def normalization(preprocess: Callable) -> tuple[Sequence[float], Sequence[float]]:
    """The mean and std of the ``Normalize`` step in a torchvision ``Compose`` (CLIP's when there is none)."""
    for step in getattr(preprocess, "transforms", []):
        if hasattr(step, "mean") and hasattr(step, "std"):
            return tuple(step.mean), tuple(step.std)
    return CLIP_MEAN, CLIP_STD


def corrupt_tensor(
    images: torch.Tensor,
    name: str,
    severity: int = 3,
    seed: int = 0,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> torch.Tensor:
    """A preprocessed batch ``[N, 3, H, W]`` (normalized with ``mean``/``std``) corrupted image by image in pixel space
    (8-bit, as a saved image would be) and normalized again; image ``i`` draws from ``default_rng([seed, i])``."""
    check(name, severity)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    pixels = ((images.float() * s + m).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = np.stack([corrupt_array(p, name, severity, np.random.default_rng([seed, i])) for i, p in enumerate(pixels)])
    return ((torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0 - m) / s).to(images.dtype)


def corrupt_as_seen(
    image: Image.Image,
    preprocess: Callable,
    name: str,
    severity: int = 3,
    seed: int = 0,
) -> Image.Image:
    """``image`` as the model sees it (``preprocess``'s resize and crop) corrupted like :func:`corrupt_tensor` corrupts
    a test image: ``preprocess`` of the result equals ``corrupt_tensor(preprocess(image)[None], ...)[0]``, so an upload
    is corrupted exactly as the robustness table's images are (an RGB image at the model's input size)."""
    mean, std = normalization(preprocess)
    batch = corrupt_tensor(preprocess(image.convert("RGB"))[None], name, severity, seed, mean, std)
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    pixels = ((batch[0] * s + m) * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(pixels)
