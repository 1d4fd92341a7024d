"""An image given to a tool as text: base64 (PNG, JPEG, ...; plain or a ``data:`` URI), an http(s) URL, or the path
of a file under a folder the toolbox allows (an app's uploads). Every way is bounded: bytes, pixels, and for a URL the
time it may take; a URL of a served toolbox must lead to a public address (no loopback, private or link-local host).
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image, ImageOps, UnidentifiedImageError

from wemoe.errors import WemoeError
from wemoe.zoo.source_policy import SourcePolicy

CHUNK = 64 * 1024


class ImageRefused(WemoeError):
    """An image that is missing, not an image, too large, too slow, or from a place the tools may not read."""


def _size(count: int) -> str:
    for unit, factor in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if count >= factor:
            return f"{count / factor:.1f} {unit}"
    return f"{count} bytes"


def read_image(text: object, max_bytes: int | None, max_pixels: int, url_seconds: float = 10.0,
               roots: tuple[Path, ...] = (), public_urls_only: bool = False) -> Image.Image:
    """The image ``text`` names, as 8-bit RGB (EXIF rotation applied); an :class:`ImageRefused` saying what was wrong
    (nothing given, not base64, not an image, over ``max_bytes`` or ``max_pixels``, a URL that fails or takes longer
    than ``url_seconds``, a path outside ``roots``)."""
    if not isinstance(text, str) or not text.strip():
        raise ImageRefused("Image: give a base64 PNG or JPEG (or a data: URI), or an http(s) URL.")
    text = text.strip()
    if text.startswith(("http://", "https://")):
        data = fetch(text, max_bytes, url_seconds, public_urls_only)
    elif text.startswith("data:") or not _looks_like_path(text):
        data = decode_base64(text, max_bytes)
    else:
        path = SourcePolicy(served=True, roots=roots).path(text, "Image", hub=False)
        if not path.is_file():
            raise ImageRefused(f"Image: there is no uploaded file {text!r}.")
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise ImageRefused(f"Image: the file is {_size(size)}, more than the {_size(max_bytes)} allowed.")
        data = path.read_bytes()
    return open_image(data, max_pixels)


def _looks_like_path(text: str) -> bool:
    """Whether ``text`` is written like a file path rather than base64 (which has no ``.`` or ``~``; it may start with
    ``/``, as JPEG's ``/9j/`` does)."""
    return "." in text or text.startswith("~")


def decode_base64(text: str, max_bytes: int | None) -> bytes:
    """The bytes of base64 ``text`` (plain, or a ``data:[type];base64,`` URI), refused over ``max_bytes``."""
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise ImageRefused("Image: a data: URI must be base64, like data:image/png;base64,iVBORw0...")
    text = "".join(text.split())
    if max_bytes is not None and len(text) * 3 // 4 > max_bytes + 3:
        raise ImageRefused(f"Image: it is about {_size(len(text) * 3 // 4)}, more than the {_size(max_bytes)} allowed.")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRefused("Image: this is not base64 (nor an http(s) URL). Send the PNG or JPEG file's bytes "
                           "base64-encoded.") from None


def _public(host: str) -> bool:
    """Whether every address ``host`` resolves to is public (global)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        raise ImageRefused(f"Image URL: the host {host!r} could not be found.") from None
    return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_global for info in infos)


def fetch(url: str, max_bytes: int | None, seconds: float, public_only: bool = False) -> bytes:
    """The body of ``url`` (http or https, redirects followed), refused when it fails, is over ``max_bytes`` (by its
    declared length, or while arriving) or takes more than ``seconds`` in all."""
    import httpx

    host = urlsplit(url).hostname or ""
    if public_only and not _public(host):
        raise ImageRefused(f"Image URL: {host!r} is not a public address; this server fetches images from the "
                           "internet only. Send the image as base64 instead.")
    deadline = time.monotonic() + seconds
    try:
        with httpx.stream("GET", url, timeout=seconds, follow_redirects=True) as response:
            if response.status_code != 200:
                raise ImageRefused(f"Image URL: the server answered {response.status_code}, not the image.")
            declared = response.headers.get("content-length")
            if max_bytes is not None and declared and declared.isdigit() and int(declared) > max_bytes:
                raise ImageRefused(f"Image URL: the image is {_size(int(declared))}, more than the {_size(max_bytes)} "
                                   "allowed.")
            data = bytearray()
            for chunk in response.iter_bytes(CHUNK):
                data += chunk
                if max_bytes is not None and len(data) > max_bytes:
                    raise ImageRefused(f"Image URL: the image is more than the {_size(max_bytes)} allowed.")
                if time.monotonic() > deadline:
                    raise ImageRefused(f"Image URL: it took more than {seconds:g} s to arrive.")
            return bytes(data)
    except httpx.TimeoutException:
        raise ImageRefused(f"Image URL: no answer within {seconds:g} s.") from None
    except httpx.HTTPError as error:
        raise ImageRefused(f"Image URL: it could not be fetched ({type(error).__name__}).") from None


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """``data`` as an RGB PIL image, refused when it is not an image or has more than ``max_pixels`` pixels."""
    if not data:
        raise ImageRefused("Image: it is empty.")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRefused(f"Image: {width} x {height} pixels, more than the {max_pixels / 1e6:.0f} megapixels "
                                   "allowed.")
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")
    except ImageRefused:
        raise
    except Image.DecompressionBombError:
        raise ImageRefused(f"Image: more than the {max_pixels / 1e6:.0f} megapixels allowed.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageRefused(f"Image: not an image this server can read ({type(error).__name__}); send a PNG or "
                           "JPEG.") from None
