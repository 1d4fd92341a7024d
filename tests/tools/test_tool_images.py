"""An image given to a tool: base64 or a data: URI, a URL (bounded by size and time; public only when served), a file
under an allowed folder; everything else refused with what was wrong."""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import threading
import time

import pytest
from PIL import Image

from wemoe.tools.images import ImageRefused, read_image
from wemoe.zoo.source_policy import SourceRefused

MB = 2**20


def png(side: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def read(text, max_bytes=MB, max_pixels=10_000, seconds=2.0, roots=(), public=False):
    return read_image(text, max_bytes, max_pixels, seconds, roots, public)


@pytest.fixture
def server():
    """A local HTTP server: /ok.png an image, /big.png 3 MB, /slow.png answers after 3 s, /text.png not an image."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path == "/slow.png":
                time.sleep(3)
            body = {"/ok.png": png(), "/big.png": b"x" * (3 * MB), "/text.png": b"hello"}.get(self.path, png())
            if self.path == "/missing.png":
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the reader may hang up first (too large, too slow)
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_base64_plain_and_as_a_data_uri():
    text = base64.b64encode(png()).decode()
    assert read(text).size == (8, 8)
    assert read("data:image/png;base64," + text).mode == "RGB"


@pytest.mark.parametrize(("text", "message"), [
    ("", "give a base64 PNG"),
    (None, "give a base64 PNG"),
    ("bm90IGFuIGltYWdl", "not an image"),  # base64 of "not an image"
    ("!!!", "not base64"),
    ("data:image/png,abc", "must be base64"),
    ("/etc/passwd", "not base64"),  # written like base64 (no dot): decoded, never read
])
def test_what_is_not_an_image_is_refused(text, message):
    with pytest.raises(ImageRefused, match=message):
        read(text)


def test_too_large_in_bytes_or_pixels():
    with pytest.raises(ImageRefused, match="more than the"):
        read(base64.b64encode(png()).decode(), max_bytes=10)
    with pytest.raises(ImageRefused, match="megapixels"):
        read(base64.b64encode(png(200)).decode(), max_pixels=1000)


def test_a_file_only_under_an_allowed_folder(tmp_path):
    inside = tmp_path / "uploads" / "photo.png"
    inside.parent.mkdir()
    inside.write_bytes(png())
    assert read(str(inside), roots=(inside.parent.resolve(),)).size == (8, 8)
    outside = tmp_path / "secret.png"
    outside.write_bytes(png())
    for text in (str(outside), str(inside.parent / ".." / "secret.png"), "photo.png", "~/photo.png"):
        with pytest.raises(SourceRefused):
            read(text, roots=(inside.parent.resolve(),))
    with pytest.raises(SourceRefused):
        read(str(inside))  # no allowed folder: no file at all


def test_a_url_bounded_by_size_and_time(server):
    assert read(f"{server}/ok.png").size == (8, 8)
    with pytest.raises(ImageRefused, match="more than the"):
        read(f"{server}/big.png")
    with pytest.raises(ImageRefused, match="answered 404"):
        read(f"{server}/missing.png")
    with pytest.raises(ImageRefused, match="not an image"):
        read(f"{server}/text.png")
    start = time.monotonic()
    with pytest.raises(ImageRefused, match="within 0.5 s"):
        read(f"{server}/slow.png", seconds=0.5)
    assert time.monotonic() - start < 2.5
    with pytest.raises(ImageRefused, match="not a public address"):
        read(f"{server}/ok.png", public=True)  # a served toolbox fetches from the internet only
