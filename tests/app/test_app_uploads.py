"""Uploads capped by kind at the upload itself, gradio's cache cleaned, served files written whole (#27 items 3, 13)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from app import build_demo
from app.files import atomic_path, own_gradio_folder
from app.upload_limits import upload_kind
from tests.app_support import tiny_config, write_examples

MB = 2**20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = tiny_config(write_examples(tmp_path_factory.mktemp("examples")), max_image_size="1mb",
                         max_checkpoint_size="8mb", max_archive_size="2mb")
    demo = build_demo(config)
    demo.queue()
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", **config.launch_options())
    yield demo
    demo.close()


def _stored(demo) -> int:
    """Files in gradio's upload folder (and anywhere under its cache)."""
    return sum(len(files) for _, _, files in os.walk(demo.GRADIO_CACHE))


def _upload(demo, name: str, size: int, chunked: bool = False) -> httpx.Response:
    url = demo.local_url.rstrip("/") + "/gradio_api/upload"
    if not chunked:
        return httpx.post(url, files={"files": (name, b"\0" * size)}, timeout=60)
    boundary = "x-merge-explorer-test"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()

    def body():
        yield head
        for _ in range(size // MB):
            yield b"\0" * MB
        yield f"\r\n--{boundary}--\r\n".encode()

    return httpx.post(url, content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"},
                      timeout=60)


def test_kinds_by_suffix():
    assert upload_kind("expert.SafeTensors") == "checkpoint" and upload_kind("pets.zip") == "archive"
    assert upload_kind("photo.jpg") == upload_kind("notes.txt") == upload_kind("") == "image"


def test_an_image_over_its_limit_is_refused_before_it_is_stored(server):
    before = _stored(server)
    refused = _upload(server, "huge.jpg", 3 * MB // 2)  # under the 8 MB checkpoint limit gradio alone would apply
    assert refused.status_code == 413 and "more than the 1.0 MB this app accepts for an image" in refused.text
    assert _stored(server) == before


def test_each_kind_has_its_own_limit(server):
    assert _upload(server, "expert.safetensors", 3 * MB // 2).status_code == 200  # a checkpoint may be larger
    archive = _upload(server, "pets.zip", 3 * MB)
    assert archive.status_code == 413 and "a task archive" in archive.text
    assert _upload(server, "small.png", MB // 2).status_code == 200


def test_an_upload_without_a_length_is_cut_off_at_its_limit(server):
    refused = _upload(server, "huge.png", 4 * MB, chunked=True)
    assert refused.status_code == 413 and "an image" in refused.text


def test_gradio_cleans_its_cache(server):
    assert server.delete_cache == (600, 3600)


def test_files_are_moved_into_place_whole(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as partial:
        partial.write_text("half")
        assert target.read_text() == "old"  # readers see the old file while the new one is written
        raise RuntimeError("failed halfway")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    with atomic_path(target) as whole:
        whole.write_text("new")
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]


def test_each_process_serves_from_a_folder_of_its_own(monkeypatch):
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    folder = own_gradio_folder()
    assert Path(folder).is_dir() and "merge-explorer-gradio-" in folder and os.environ["GRADIO_TEMP_DIR"] == folder
    monkeypatch.setenv("GRADIO_TEMP_DIR", "/operator/choice")
    assert own_gradio_folder() == "/operator/choice"
    Path(folder).rmdir()


def test_reading_custom_tasks_never_holds_the_slots_of_classifications(server):
    """Unpacking a task archive runs in the models queue (2 at a time); classifications keep their own light queue, so
    eight sessions reading archives at once do not keep a student's classification waiting."""
    queues = {fn.api_name: (fn.concurrency_id, fn.concurrency_limit) for fn in server.fns.values()}
    assert queues["read_tasks"] == queues["load_zoo"] == ("models", 2)
    assert queues["classify_upload"][0] == "light" and queues["classify_upload"][0] != queues["read_tasks"][0]
