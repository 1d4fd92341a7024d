"""A drawing (light strokes on a dark canvas, e.g. the app's sketchpad) made to look like the pocket digits task.

The task's images are scikit-learn's 8x8 digits (:func:`wemoe.pocket.generators.digits`): each one is a 32x32
binary bitmap of a handwritten digit, scaled so the digit's *height fills the frame* and centred horizontally on its
bounding box, whose 4x4 blocks were counted into 8x8 grey levels (0-16). Their ink covers about 30% of the frame
(mean grey level 0.305 over the 1797 digits, the same for every class), so strokes are thick: about a tenth of the
digit's height. The generator upscales the 8x8 glyph (bicubic) to 24-28 px, pastes it centred on a black 32x32
canvas and dims it to 80-100% grey.

A sketch is far from that: a 224x224 canvas, a sharp 16 px brush, the digit anywhere and at any size. So
:func:`drawing_like_digits` redoes the task's pipeline on the drawing: crop to the ink, scale the digit's larger
side to the frame, set the stroke thickness so the ink covers the task's share of the frame, count blocks into an
8x8 glyph, then render it as the generator does (mid-range size and grey, no noise).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from wemoe.pocket.generators import SIZE

GLYPH = 8  # side of scikit-learn's digits
BITMAP = 64  # working resolution: 8x8 blocks per glyph pixel (the original bitmaps were 32x32, 4x4 blocks)
INK_FRACTION = 0.305  # mean grey level of scikit-learn's 8x8 digits = the share of the bitmap covered by ink
GLYPH_SIDE = 26  # the generator upscales glyphs to 24-28 px
GREY = 0.9  # and dims them to 80-100%
INK_THRESHOLD = 0.5  # grey level (0-1) above which a drawing's pixel is ink
MAX_GROWTH = 0.08  # strokes are thickened by at most this share of the frame (a lone stroke stays a stroke)


def _ink(image: Image.Image) -> np.ndarray:
    """The drawing as grey levels in [0, 1], ink bright: a canvas whose border is mostly light is inverted."""
    grey = np.asarray(image.convert("L"), np.float32) / 255.0
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return 1.0 - grey if np.median(border) > 0.5 else grey


def _fit_frame(ink: np.ndarray) -> np.ndarray:
    """The ink cropped to its bounding box, its larger side scaled to ``BITMAP`` and centred on a square frame."""
    rows, cols = np.nonzero(ink > INK_THRESHOLD)
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = crop.shape
    scale = BITMAP / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    scaled = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize(size, Image.LANCZOS), np.float32) / 255
    frame = np.zeros((BITMAP, BITMAP), np.float32)
    top, left = (BITMAP - size[1]) // 2, (BITMAP - size[0]) // 2
    frame[top : top + size[1], left : left + size[0]] = np.clip(scaled, 0, 1)
    return frame


def _bitmap_with_task_thickness(frame: np.ndarray) -> np.ndarray:
    """A binary bitmap of the frame whose ink covers ``INK_FRACTION`` of it (strokes thinned or thickened evenly).

    Ink is the pixels of highest signed distance to the stroke edges (inside positive; slightly smoothed so the
    share can be met without ties), so strokes keep their centre lines; growth is capped at ``MAX_GROWTH``.
    """
    mask = frame > INK_THRESHOLD
    depth = ndimage.distance_transform_edt(mask) - ndimage.distance_transform_edt(~mask)
    depth = ndimage.gaussian_filter(depth, 1.0)
    level = np.sort(depth, axis=None)[::-1][round(INK_FRACTION * depth.size) - 1]
    return depth >= max(level, -MAX_GROWTH * BITMAP)


def glyph_like_digits(image: Image.Image) -> np.ndarray:
    """The drawing as an 8x8 glyph in scikit-learn's style (grey levels 0-1 in steps of 1/16, ink bright)."""
    ink = _ink(image)
    if not (ink > INK_THRESHOLD).any():
        raise ValueError("The drawing has no ink: draw a digit with light strokes on a dark canvas (or the reverse).")
    bitmap = _bitmap_with_task_thickness(_fit_frame(ink))
    block = BITMAP // GLYPH
    counts = bitmap.reshape(GLYPH, block, GLYPH, block).mean(axis=(1, 3))
    return np.round(counts * 16) / 16


def drawing_like_digits(image: Image.Image) -> Image.Image:
    """A drawing of a digit (any size, light ink on dark or the reverse) rendered like the pocket digits task's images.

    Crop to the ink, scale its larger side to the frame, match the task's stroke thickness, count it into an 8x8
    glyph like scikit-learn's digits, then upscale, centre and dim it as :func:`wemoe.pocket.generators.digits`
    does. Returns a ``SIZE`` x ``SIZE`` RGB image; raises ``ValueError`` on a drawing without ink.
    """
    glyph = Image.fromarray((glyph_like_digits(image) * 255).astype(np.uint8))
    canvas = Image.new("L", (SIZE, SIZE), 0)
    offset = (SIZE - GLYPH_SIDE) // 2
    canvas.paste(glyph.resize((GLYPH_SIDE, GLYPH_SIDE), Image.BICUBIC), (offset, offset))
    grey = np.asarray(canvas, np.float32) * GREY
    return Image.fromarray(np.repeat(grey.round().astype(np.uint8)[..., None], 3, axis=2), "RGB")
