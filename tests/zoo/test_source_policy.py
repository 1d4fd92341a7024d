"""A served app's visitors name uploads and hub ids, never server paths (wemoe.zoo.source_policy, app.inputs; #27)."""

from __future__ import annotations

import gradio as gr
import pytest

from app.inputs import custom_spec, read_tasks
from wemoe.zoo.checkpoints import HubId
from wemoe.zoo.source_policy import ALLOWED_PATHS_ENV, SourcePolicy, SourceRefused, is_hub_id

SERVED = SourcePolicy(served=True)
SERVER_PATHS = ["/", "../../", "/usr", "/etc", "/proc/self", "/etc/passwd", "/nonexistent/dir", "~", "~/x",
                "./assets", "assets/../..", "a/..", "C:\\Windows"]


@pytest.fixture
def image_folder(tmp_path):
    """An image folder task (two classes, two images each) under ``tmp_path/data/pets``."""
    from PIL import Image

    root = tmp_path / "data" / "pets"
    for k, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (40 * k + i, 0, 0)).save(root / name / f"{i}.png")
    return root


def test_hub_ids_are_told_from_paths():
    assert is_hub_id("tanganke/clip-vit-base-patch32_mnist")
    for text in ("a/..", "../x", "./x", "/etc", "x/.hidden", "a/b/c", "~/x", "etc"):
        assert not is_hub_id(text), text


@pytest.mark.parametrize("text", SERVER_PATHS)
def test_served_task_sources_refuse_every_server_path_without_reading_it(text, monkeypatch):
    import pathlib

    def no_disk(*args, **kwargs):
        raise AssertionError("the disk was read for a visitor's source")

    with monkeypatch.context() as patched:
        for name in ("exists", "is_dir", "is_file", "iterdir", "stat", "resolve"):
            patched.setattr(pathlib.Path, name, no_disk)
        try:
            SERVED.task_source(text, "Task 'x'")
        except SourceRefused as error:
            refused = str(error)
        else:
            refused = ""
    assert "serves others" in refused and "exist" not in refused.replace(repr(text), "")


def test_served_refusal_says_the_same_for_existing_and_missing_paths():
    def message(text):
        with pytest.raises(gr.Error) as refused:
            read_tasks(f"x: {text}", None, SERVED)
        return refused.value.message.replace(repr(text), "PATH")

    assert message("/etc/passwd") == message("/nonexistent/dir") == message("/etc")


@pytest.mark.parametrize("field", ["base_weights", "expert"])
def test_served_custom_zoo_refuses_server_paths_for_base_and_experts(field):
    weights, experts = ("/etc/passwd", "a: owner/expert") if field == "base_weights" else ("openai", "a: /etc/passwd")
    with pytest.raises(gr.Error, match="serves others"):
        custom_spec("ViT-B-32", weights, experts, None, SERVED)
    with pytest.raises(gr.Error, match="serves others"):
        custom_spec("local-dir:/etc", "", "a: owner/expert", None, SERVED)


def test_served_custom_zoo_takes_uploads_tags_and_hub_ids():
    spec = custom_spec("ViT-B-32", "openai", "mnist: tanganke/clip-vit-base-patch32_mnist\nsvhn: svhn.safetensors",
                       ["/tmp/gradio/abc/svhn.safetensors"], SERVED)
    assert spec["pretrained"] == "openai"
    assert isinstance(spec["experts"]["mnist"], HubId)
    assert spec["experts"]["svhn"] == "/tmp/gradio/abc/svhn.safetensors"
    hub_base = custom_spec("ViT-B-32", "owner/clip", "a: owner/x", None, SERVED)
    assert isinstance(hub_base["pretrained"], HubId)


def test_a_hub_id_is_never_read_as_a_local_folder(tmp_path, monkeypatch):
    """A folder named like a hub id under the working directory: locally it is the folder, served it is the hub."""
    import wemoe.zoo.sources

    (tmp_path / "owner" / "expert").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    asked = []
    monkeypatch.setattr(wemoe.zoo.sources, "download_hf", lambda repo: asked.append(repo) or (_ for _ in ()).throw(
        OSError("offline")))
    with pytest.raises(OSError, match="offline"):
        wemoe.zoo.sources.load_expert("a", HubId("owner/expert"), clip=None)
    assert asked == ["owner/expert"]


def test_operator_allows_paths_under_named_folders(image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv(ALLOWED_PATHS_ENV, str(tmp_path / "data"))
    lab = SourcePolicy.for_app(served=True)
    tasks, shown = read_tasks(f"pets: {image_folder}", None, lab)
    assert tasks["pets"].classnames == ("cat", "dog") and "pets" in shown
    with pytest.raises(gr.Error, match="a folder this server allows"):
        read_tasks(f"pets: {tmp_path}", None, lab)  # the allowed folder's parent
    with pytest.raises(gr.Error, match="a folder this server allows"):
        read_tasks(f"pets: {image_folder}/../../..", None, lab)


def test_a_symlink_out_of_an_allowed_folder_is_refused(image_folder, tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "pets").symlink_to(image_folder)
    with pytest.raises(SourceRefused):
        SourcePolicy(served=True, roots=(allowed.resolve(),)).path(str(allowed / "pets"), "Task 'pets'")


def test_locally_paths_stay_a_convenience(image_folder):
    tasks, _ = read_tasks(f"pets: {image_folder}", None, SourcePolicy(served=False))
    assert tasks["pets"].classnames == ("cat", "dog")


def test_the_app_serves_others_beyond_localhost(monkeypatch):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("app_main", Path(__file__).resolve().parents[2] / "app.py")
    app_main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app_main)
    monkeypatch.delenv("SPACE_ID", raising=False)
    args = app_main.parse_args([])
    assert not app_main.make_config(args, "127.0.0.1").sources.served
    assert app_main.make_config(args, "0.0.0.0").sources.served
    monkeypatch.setenv("SPACE_ID", "someone/space")
    assert app_main.make_config(args, "127.0.0.1").sources.served
