"""Upload limits by kind, enforced at the upload itself: images, checkpoints and task archives each have their own.

Gradio has one upload limit for every file (``launch(max_file_size=...)``), which must be the largest (a checkpoint),
and stores a file before any handler can refuse it. :class:`UploadLimits` is an ASGI middleware in front of gradio's
upload route: it reads the first part's file name from the start of the request, takes that kind's limit
(:func:`upload_kind`), and answers 413 before the body is read when the declared length is over it, or stops reading
as soon as the bytes received pass it (a request without a length). So a 25 MB "image" is refused before a byte of
it is stored, while a checkpoint may still be large. The handlers check the kind again when they read a file.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
ARCHIVE_SUFFIXES = (".zip", ".parquet")
_FILENAME = re.compile(rb'filename="([^"\r\n]*)"')
HEAD_BYTES = 64 * 1024  # the first part's headers are at the very start of a multipart body

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def upload_kind(file_name: str) -> str:
    """``checkpoint``, ``archive`` or ``image`` (anything else is held to the image limit) by the file's suffix."""
    suffix = Path(file_name).suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if suffix in ARCHIVE_SUFFIXES:
        return "archive"
    return "image"


class TooLarge(Exception):
    """The upload passed its kind's limit while being received."""


class UploadLimits:
    """ASGI middleware: requests to a path ending in ``/upload`` are held to ``limits[upload_kind(first file)]`` bytes
    (a kind missing from ``limits``, or None: no limit of ours)."""

    def __init__(self, app: Callable, limits: Mapping[str, int | None]) -> None:
        self.app, self.limits = app, dict(limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope["path"].endswith("/upload"):
            await self.app(scope, receive, send)
            return
        head, messages, more = b"", [], True
        while more and len(head) < HEAD_BYTES and not _FILENAME.search(head):
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            head += message.get("body", b"")
            more = message.get("more_body", False)
        found = _FILENAME.search(head)
        name = found.group(1).decode("utf-8", "replace") if found else ""
        kind = upload_kind(name)
        limit = self.limits.get(kind)
        declared = _content_length(scope)
        if limit is not None and declared is not None and declared > limit:
            await _refuse(send, name, kind, declared, limit)
            return
        received = sum(len(m.get("body", b"")) for m in messages)

        async def replay() -> dict:
            nonlocal received
            if messages:
                return messages.pop(0)
            message = await receive()
            received += len(message.get("body", b""))
            if limit is not None and received > limit:
                raise TooLarge(name)
            return message

        try:
            await self.app(scope, replay, send)
        except TooLarge:
            log.warning("upload refused while receiving: %r (%s) over %d bytes", name, kind, limit)
            await _refuse(send, name, kind, received, limit)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, name: str, kind: str, size: int, limit: int) -> None:
    from app.session import format_size

    log.warning("upload refused: %r (%s, %d bytes) over the %d-byte limit", name, kind, size, limit)
    what = {"image": "an image", "checkpoint": "a checkpoint", "archive": "a task archive"}[kind]
    text = (f"{Path(name).name or 'The upload'} is {format_size(size)}, more than the {format_size(limit)} this app "
            f"accepts for {what}. Upload a smaller file (images: downscale them; the models see 32-224 px).")
    try:
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
        await send({"type": "http.response.body", "body": text.encode()})
    except Exception:  # noqa: BLE001 - the response had already started: the connection is closed instead
        log.debug("could not send the 413 for %r", name)
