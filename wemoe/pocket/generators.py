"""Seeded image generators of the pocket benchmark: 32x32 RGB images (uint8 arrays) and integer labels.

Every generator has the signature ``generate(rng, n) -> (images [n, 32, 32, 3] uint8, labels [n] int64)``, draws
balanced classes in a shuffled order and depends on nothing but ``rng``, so a seed fixes the data. The tasks are
made to *look* different from each other (grey strokes on black, shapes on navy, pastel patterns, satellite
greens and blues, road signs against the sky, saturated flags, dark letters on pale paper, garment silhouettes on
light grey), as MNIST, EuroSAT, GTSRB and the paper's other tasks do.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 32
Generator = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]


def _labels(rng: np.random.Generator, n: int, classes: int) -> np.ndarray:
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    return labels.astype(np.int64)


def _noise(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    noisy = image.astype(np.float32) + rng.normal(0, sigma, image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _jitter(rng: np.random.Generator, colour, amount: int = 25) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


# ---------------------------------------------------------------------------------------------------------------
# digits: real handwritten digits (scikit-learn's 8x8 set), scaled up, shifted and thickened at random


@lru_cache(maxsize=1)
def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images.astype(np.float32) / 16.0, data.target.astype(np.int64)


def digit_indices(split: str) -> np.ndarray:
    """Which of scikit-learn's 1797 digits a split uses: a fixed permutation, the last 497 for the test split."""
    order = np.random.default_rng(1234).permutation(len(_sklearn_digits()[1]))
    return order[1300:] if split == "test" else order[:1300]


def digits(rng: np.random.Generator, n: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Real 8x8 digits (train and test use disjoint originals), upscaled to 24-28 px and centred within 2 px, as
    MNIST."""
    images, targets = _sklearn_digits()
    pool = digit_indices(split)
    picks = pool[np.arange(n) % len(pool)] if split == "test" else rng.choice(pool, n)
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    for i, index in enumerate(picks):
        size = int(rng.integers(24, 29))
        glyph = Image.fromarray((images[index] * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
        canvas = Image.new("L", (SIZE, SIZE), 0)
        x, y = (SIZE - size) // 2 + rng.integers(-2, 3, 2)
        canvas.paste(glyph, (int(np.clip(x, 0, SIZE - size)), int(np.clip(y, 0, SIZE - size))))
        grey = np.asarray(canvas, np.float32) * rng.uniform(0.8, 1.0)
        out[i] = _noise(rng, np.repeat(grey[..., None], 3, axis=2), 8)
    return out, targets[picks]


# ---------------------------------------------------------------------------------------------------------------
# shapes: one bright filled shape on a dark navy background


def _polygon(cx: float, cy: float, r: float, sides: int, rotation: float,
             star: bool = False) -> list[tuple[float, float]]:
    points = []
    count = sides * 2 if star else sides
    for k in range(count):
        radius = r * (0.45 if star and k % 2 else 1.0)
        angle = rotation + 2 * np.pi * k / count
        points.append((cx + radius * np.cos(angle), cy + radius * np.sin(angle)))
    return points


SHAPES = ("circle", "square", "triangle", "star", "cross", "crescent")


def shapes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A circle, square, triangle, star, cross or crescent in a random bright colour on navy."""
    labels = _labels(rng, n, len(SHAPES))
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    for i, label in enumerate(labels):
        background = _jitter(rng, (20, 24, 70), 12)
        image = Image.new("RGB", (SIZE, SIZE), background)
        draw = ImageDraw.Draw(image)
        colour = tuple(int(c) for c in rng.integers(150, 256, 3))
        r = rng.uniform(8, 13)
        cx, cy = rng.uniform(r + 1, SIZE - r - 1, 2)
        name = SHAPES[label]
        if name == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        elif name == "square":
            draw.polygon(_polygon(cx, cy, r * 1.15, 4, np.pi / 4 + rng.uniform(-0.2, 0.2)), fill=colour)
        elif name == "triangle":
            draw.polygon(_polygon(cx, cy, r * 1.1, 3, -np.pi / 2 + rng.uniform(-0.2, 0.2)), fill=colour)
        elif name == "star":
            draw.polygon(_polygon(cx, cy, r * 1.15, 5, -np.pi / 2 + rng.uniform(-0.2, 0.2), star=True), fill=colour)
        elif name == "cross":
            w = r * 0.38
            draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
            draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)
        else:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
            shift = r * 0.55
            draw.ellipse([cx - r + shift, cy - r - shift * 0.3, cx + r + shift, cy + r - shift * 0.3], fill=background)
        out[i] = _noise(rng, np.asarray(image), 6)
    return out, labels


# ---------------------------------------------------------------------------------------------------------------
# textures: a full-frame pattern in two pastel colours


TEXTURES = ("striped", "checkered", "dotted", "zigzagged", "gridded", "marbled")


def textures(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Stripes, checks, dots, zigzags, grid lines or marbling, in pastel colours, with random scale and phase."""
    labels = _labels(rng, n, len(TEXTURES))
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    for i, label in enumerate(labels):
        a = rng.integers(170, 256, 3).astype(np.float32)
        b = a * rng.uniform(0.45, 0.65)
        period = rng.uniform(5, 9)
        phase = rng.uniform(0, period)
        name = TEXTURES[label]
        if name == "striped":
            angle = rng.uniform(0, np.pi)
            u = xx * np.cos(angle) + yy * np.sin(angle)
            mask = ((u + phase) % period) < period / 2
        elif name == "checkered":
            mask = (((xx + phase) // (period / 1.5)) + ((yy + phase) // (period / 1.5))) % 2 == 0
        elif name == "dotted":
            cx = ((xx + phase) % period) - period / 2
            cy = ((yy + phase) % period) - period / 2
            mask = cx**2 + cy**2 < (period * 0.28) ** 2
        elif name == "zigzagged":
            tri = np.abs(((xx + phase) % period) - period / 2) * 1.6
            mask = ((yy + tri) % period) < period / 2
        elif name == "gridded":
            mask = (((xx + phase) % period) < 1.5) | (((yy + phase) % period) < 1.5)
        else:
            coarse = rng.normal(0, 1, (5, 5))
            field = np.asarray(Image.fromarray(coarse.astype(np.float32)).resize((SIZE, SIZE), Image.BICUBIC))
            mask = np.sin(field * 3 + xx / period) > 0
        image = np.where(mask[..., None], a, b)
        out[i] = _noise(rng, image, 6)
    return out, labels


# ---------------------------------------------------------------------------------------------------------------
# terrain: satellite-like land cover, as EuroSAT


TERRAIN = ("forest", "sea", "desert", "farmland", "river", "highway")


def _smooth_noise(rng: np.random.Generator, cells: int, scale: float) -> np.ndarray:
    coarse = rng.normal(0, scale, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((SIZE, SIZE), Image.BICUBIC))


def terrain(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Forest, sea, desert, farmland, a river or a highway, seen from above."""
    labels = _labels(rng, n, len(TERRAIN))
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    grass = np.array([90, 130, 60], np.float32)
    for i, label in enumerate(labels):
        name = TERRAIN[label]
        if name == "forest":
            base = np.array([30, 75, 35], np.float32) + rng.uniform(-10, 10, 3)
            image = base + _smooth_noise(rng, 12, 18)[..., None] * np.array([0.5, 1.0, 0.5])
        elif name == "sea":
            base = np.array([25, 70, 140], np.float32) + rng.uniform(-15, 15, 3)
            image = base + _smooth_noise(rng, 4, 6)[..., None]
        elif name == "desert":
            base = np.array([210, 180, 120], np.float32) + rng.uniform(-15, 15, 3)
            yy, xx = np.mgrid[0:SIZE, 0:SIZE]
            dunes = np.sin((xx * rng.uniform(0.2, 0.5) + yy * rng.uniform(-0.3, 0.3)) + _smooth_noise(rng, 3, 1.0)) * 14
            image = base + dunes[..., None]
        elif name == "farmland":
            image = np.zeros((SIZE, SIZE, 3), np.float32)
            cuts_x = np.sort(rng.integers(4, 28, 2))
            cuts_y = np.sort(rng.integers(4, 28, 2))
            xs, ys = [0, *cuts_x, SIZE], [0, *cuts_y, SIZE]
            for x0, x1 in zip(xs[:-1], xs[1:], strict=True):
                for y0, y1 in zip(ys[:-1], ys[1:], strict=True):
                    fields = [np.array([170, 160, 70]), np.array([110, 150, 50]), np.array([140, 100, 60])]
                    field = fields[rng.integers(3)]
                    image[y0:y1, x0:x1] = field + rng.uniform(-15, 15, 3)
        else:
            image = grass + rng.uniform(-10, 10, 3) + _smooth_noise(rng, 8, 8)[..., None]
            canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
            draw = ImageDraw.Draw(canvas)
            if name == "river":
                points = [(x, 16 + 7 * np.sin(x / rng.uniform(4, 7) + rng.uniform(0, 6))) for x in range(-2, 35, 3)]
                draw.line(points, fill=_jitter(rng, (40, 80, 160)), width=int(rng.integers(4, 7)))
            else:
                angle = rng.uniform(0, np.pi)
                c, s = np.cos(angle) * 30, np.sin(angle) * 30
                cx, cy = rng.uniform(10, 22, 2)
                draw.line([(cx - c, cy - s), (cx + c, cy + s)], fill=_jitter(rng, (150, 150, 150), 10), width=4)
            image = np.asarray(canvas, np.float32)
            if name == "river":
                image = np.asarray(Image.fromarray(image.astype(np.uint8)).filter(ImageFilter.SMOOTH), np.float32)
            if rng.random() < 0.5:
                image = image[:, ::-1] if name == "highway" else image[::-1]
            if name == "river" and rng.random() < 0.5:
                image = image.transpose(1, 0, 2)
        out[i] = _noise(rng, np.clip(image, 0, 255), 5)
    return out, labels


# ---------------------------------------------------------------------------------------------------------------
# signs: road signs against a sky-and-road background, as GTSRB


SIGNS = ("stop", "yield", "no entry", "turn left", "priority road", "roundabout")


def signs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Stop, yield, no entry, turn left, priority road and roundabout signs at random positions and sizes.

    No two classes are mirror images of each other (a tiny pretrained tower cannot tell left from right arrows,
    and their class names then get the same text embedding)."""
    labels = _labels(rng, n, len(SIGNS))
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    red, blue, white = (200, 30, 35), (30, 70, 190), (240, 240, 240)
    for i, label in enumerate(labels):
        sky = np.array(_jitter(rng, (150, 185, 215), 20), np.float32)
        ground = np.array(_jitter(rng, (110, 110, 105), 15), np.float32)
        horizon = int(rng.integers(16, 26))
        background = np.empty((SIZE, SIZE, 3), np.float32)
        background[:horizon] = sky
        background[horizon:] = ground
        image = Image.fromarray(background.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        r = rng.uniform(10, 14)
        cx, cy = rng.uniform(r, SIZE - r, 2)
        draw.line([(cx, cy), (cx, SIZE)], fill=(90, 90, 90), width=2)
        name = SIGNS[label]
        if name == "stop":
            draw.polygon(_polygon(cx, cy, r, 8, np.pi / 8), fill=_jitter(rng, red, 15))
            draw.rectangle([cx - r * 0.6, cy - 1, cx + r * 0.6, cy + 1], fill=white)
        elif name == "yield":
            draw.polygon(_polygon(cx, cy, r, 3, np.pi / 2), fill=_jitter(rng, red, 15))
            draw.polygon(_polygon(cx, cy, r * 0.5, 3, np.pi / 2), fill=white)
        elif name == "no entry":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_jitter(rng, red, 15))
            draw.rectangle([cx - r * 0.65, cy - r * 0.2, cx + r * 0.65, cy + r * 0.2], fill=white)
        elif name == "priority road":  # a yellow diamond with a white border
            draw.polygon(_polygon(cx, cy, r, 4, 0.0), fill=white)
            draw.polygon(_polygon(cx, cy, r * 0.7, 4, 0.0), fill=_jitter(rng, (245, 200, 20), 15))
        else:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_jitter(rng, blue, 15))
            if name == "roundabout":
                draw.ellipse([cx - r * 0.6, cy - r * 0.6, cx + r * 0.6, cy + r * 0.6], outline=white, width=3)
            else:
                sign = -1 if name == "turn left" else 1
                tip = cx + sign * r * 0.7
                draw.rectangle([min(cx - sign * r * 0.5, tip), cy - r * 0.14, max(cx - sign * r * 0.5, tip),
                                cy + r * 0.14], fill=white)
                draw.polygon([(tip, cy), (cx + sign * r * 0.1, cy - r * 0.5), (cx + sign * r * 0.1, cy + r * 0.5)],
                             fill=white)
        out[i] = _noise(rng, np.asarray(image), 7)
    return out, labels


# ---------------------------------------------------------------------------------------------------------------
# flags: three-band national flags, slightly shifted, shaded and waved


FLAGS = ("france", "italy", "germany", "ireland", "netherlands", "belgium")
_FLAG_BANDS = {
    "france": ("vertical", [(0, 85, 164), (255, 255, 255), (239, 65, 53)]),
    "italy": ("vertical", [(0, 146, 70), (255, 255, 255), (206, 43, 55)]),
    "germany": ("horizontal", [(0, 0, 0), (221, 0, 0), (255, 206, 0)]),
    "ireland": ("vertical", [(22, 155, 98), (255, 255, 255), (255, 136, 62)]),
    "netherlands": ("horizontal", [(174, 28, 40), (255, 255, 255), (33, 70, 139)]),
    "belgium": ("vertical", [(0, 0, 0), (253, 218, 36), (239, 51, 64)]),
}


def flags(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The flags of France, Italy, Germany, Ireland, the Netherlands and Belgium, filling most of the frame."""
    labels = _labels(rng, n, len(FLAGS))
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    for i, label in enumerate(labels):
        orientation, bands = _FLAG_BANDS[FLAGS[label]]
        wave = np.sin(xx / rng.uniform(4, 8) + rng.uniform(0, 6)) * rng.uniform(0, 1.5)
        offset = rng.uniform(-3, 3)
        u = (xx + offset) if orientation == "vertical" else (yy + wave + offset)
        index = np.clip(((u + 1) / (SIZE / 3)).astype(int), 0, 2)
        palette = np.array([_jitter(rng, c, 20) for c in bands], np.float32)
        image = palette[index] * (1 + 0.12 * np.sin(xx / 5 + rng.uniform(0, 6)))[..., None]
        out[i] = _noise(rng, np.clip(image, 0, 255), 6)
    return out, labels


# ---------------------------------------------------------------------------------------------------------------
# letters: one printed capital letter in dark ink on pale paper, slightly rotated


LETTERS = ("A", "E", "H", "K", "M", "R", "S", "Z")


@lru_cache(maxsize=8)
def _font(size: int):
    # Pillow's bundled scalable font (needs FreeType, which Pillow's wheels carry); the glyphs, and so this task's
    # images, follow the Pillow version pinned in requirements.txt.
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def letters(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A, E, H, K, M, R, S or Z printed in dark ink on pale coloured paper, with random size, shift and tilt."""
    labels = _labels(rng, n, len(LETTERS))
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    for i, label in enumerate(labels):
        paper = _jitter(rng, (235, 215, 160), 25)
        canvas = Image.new("RGB", (48, 48), paper)
        draw = ImageDraw.Draw(canvas)
        ink = _jitter(rng, (40, 30, 60), 25)
        font = _font(int(rng.integers(26, 34)))
        draw.text((24 + rng.uniform(-3, 3), 24 + rng.uniform(-3, 3)), LETTERS[label], fill=ink, font=font, anchor="mm")
        canvas = canvas.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR, fillcolor=paper)
        image = canvas.crop((8, 8, 40, 40))
        out[i] = _noise(rng, np.asarray(image), 6)
    return out, labels


# ---------------------------------------------------------------------------------------------------------------
# clothing: a garment silhouette in a muted colour on a light background, as Fashion-MNIST


CLOTHING = ("t-shirt", "trousers", "dress", "sneaker", "handbag", "hat")


def clothing(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A t-shirt, trousers, dress, sneaker, handbag or hat silhouette in a muted colour on a light background."""
    labels = _labels(rng, n, len(CLOTHING))
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    for i, label in enumerate(labels):
        background = _jitter(rng, (215, 215, 210), 15)
        image = Image.new("RGB", (SIZE, SIZE), background)
        draw = ImageDraw.Draw(image)
        colour = tuple(int(c) for c in rng.integers(30, 140, 3))
        s = rng.uniform(0.8, 1.05)
        cx, cy = 16 + rng.uniform(-2.5, 2.5), 16 + rng.uniform(-2.5, 2.5)

        def pts(points, cx=cx, cy=cy, s=s):
            return [(cx + s * x, cy + s * y) for x, y in points]

        name = CLOTHING[label]
        if name == "t-shirt":
            draw.polygon(pts([(-5, -11), (-13, -6), (-10, 0), (-7, -3), (-7, 11), (7, 11), (7, -3), (10, 0), (13, -6),
                              (5, -11), (0, -8)]), fill=colour)
        elif name == "trousers":
            draw.polygon(pts([(-8, -12), (8, -12), (9, 12), (3, 12), (0, -3), (-3, 12), (-9, 12)]), fill=colour)
        elif name == "dress":
            draw.polygon(pts([(-4, -12), (4, -12), (5, -4), (12, 12), (-12, 12), (-5, -4)]), fill=colour)
        elif name == "sneaker":
            draw.polygon(pts([(-13, 2), (-12, -5), (-5, -6), (0, 0), (10, 2), (13, 6), (13, 8), (-13, 8)]), fill=colour)
            draw.line(pts([(-13, 8), (13, 8)]), fill=(240, 240, 240), width=2)
        elif name == "handbag":
            draw.rectangle(pts([(-11, -3), (11, 11)]), fill=colour)
            draw.arc([cx - 7 * s, cy - 12 * s, cx + 7 * s, cy + 3 * s], 180, 360, fill=colour, width=2)
        else:
            draw.ellipse([cx - 8 * s, cy - 9 * s, cx + 8 * s, cy + 5 * s], fill=colour)
            draw.rectangle(pts([(-14, 1), (14, 5)]), fill=colour)
        out[i] = _noise(rng, np.asarray(image.filter(ImageFilter.SMOOTH)), 6)
    return out, labels
