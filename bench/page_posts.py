"""What an open page sends for its instant events, as the page sends it: a board button, a timer's tick (events
without the queue) are one POST each to ``/gradio_api/run/<api_name>`` with the tab's session id, answered with the
outputs, over the tab's own kept-alive connection. ``gradio_client`` sends every call through the queue instead (a
join, then a stream of messages) and costs the bench's process several milliseconds of CPU per call; on the server's
own two cores that CPU is taken from the server, which a class's browsers, on their own machines, never do.

``PagePoster`` (blocking, ``http.client``) is one tab's connection for a thread; ``AsyncPagePoster`` (asyncio streams,
a few lines of HTTP/1.1) is one tab's connection for an event loop that ticks every tab.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import urllib.parse
from typing import Any

RUN_PATH = "/gradio_api/run/"
# what a kept-alive connection the server closed while idle (uvicorn: after 5 s) raises at the next request
STALE = (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected, asyncio.IncompleteReadError)


class PageCallFailed(RuntimeError):
    """An instant event answered with an error (the message the page would show) or not as JSON."""


def _request(url: str, endpoint: str, data: list, session_hash: str) -> tuple[str, bytes]:
    """(the path, the JSON body) of ``endpoint``'s POST (``endpoint``: ``/name`` or ``name``)."""
    base = urllib.parse.urlparse(url).path.rstrip("/")
    body = json.dumps({"data": data, "session_hash": session_hash}).encode()
    return f"{base}{RUN_PATH}{endpoint.lstrip('/')}", body


def _outputs(status: int, payload: bytes) -> list:
    """The event's outputs from its answer; a :class:`PageCallFailed` for an error."""
    try:
        answer = json.loads(payload) if payload else {}
    except ValueError:
        raise PageCallFailed(f"HTTP {status}: not JSON ({payload[:120]!r})") from None
    if status != 200 or not isinstance(answer, dict) or answer.get("error") is not None:
        detail = (answer.get("error") or answer.get("detail")) if isinstance(answer, dict) else answer
        raise PageCallFailed(f"HTTP {status}: {str(detail)[:300]}")
    return answer.get("data") or []


class PagePoster:
    """One tab's connection (kept alive, reopened after a failure) for blocking calls from one thread."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        parsed = urllib.parse.urlparse(url)
        self.url, self.timeout = url, timeout
        self._address = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._connection: http.client.HTTPConnection | None = None

    def post(self, endpoint: str, data: list, session_hash: str) -> list:
        """Send the event ``endpoint`` with ``data`` (every input in order, None for a ``gr.State``) for the tab
        ``session_hash``; its outputs, or :class:`PageCallFailed`."""
        path, body = _request(self.url, endpoint, data, session_hash)
        reused = self._connection is not None
        if self._connection is None:
            self._connection = http.client.HTTPConnection(*self._address, timeout=self.timeout)
        try:
            self._connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = self._connection.getresponse()
            return _outputs(response.status, response.read())
        except STALE:
            self.close()
            if not reused:
                raise
            return self.post(endpoint, data, session_hash)  # the server closed an idle connection: a browser reopens
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def close(self) -> None:
        """Close the connection (the next post opens another)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class AsyncPagePoster:
    """One tab's connection (kept alive, reopened after a failure) for an event loop: HTTP/1.1 written and read
    directly (a request line, three headers, the answer's status and Content-Length)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parsed = urllib.parse.urlparse(url)
        self.url, self.timeout = url, timeout
        self._host, self._port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, endpoint: str, data: list, session_hash: str) -> list:
        """As :meth:`PagePoster.post`, awaited."""
        reused = self._streams is not None
        try:
            return await asyncio.wait_for(self._post(endpoint, data, session_hash), self.timeout)
        except STALE:
            self.close()
            if not reused:
                raise
            return await self.post(endpoint, data, session_hash)  # closed while idle: reopened, as a browser does
        except BaseException:
            self.close()
            raise

    async def _post(self, endpoint: str, data: list, session_hash: str) -> list:
        path, body = _request(self.url, endpoint, data, session_hash)
        if self._streams is None:
            self._streams = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._streams
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in head[1:])}
        if "content-length" not in headers:  # uvicorn answers these with a length; anything else: a fresh connection
            self.close()
            raise PageCallFailed(f"HTTP {status}: an answer without Content-Length")
        payload = await reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return _outputs(status, payload)

    def close(self) -> None:
        """Close the connection (the next post opens another)."""
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


def output_rows(output: Any) -> int | None:
    """The rows of a Dataframe output (None: the output was skipped, or is no table)."""
    if isinstance(output, dict) and isinstance(output.get("value"), dict):
        output = output["value"]
    if isinstance(output, dict) and isinstance(output.get("data"), list):
        return len(output["data"])
    return None
