"""The custom zoo in the app: upload limits (#14 item 16) and tasks given as data, not registry names (item 19)."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file

from app import handlers, inputs
from app.session import AppConfig, Session
from tests.helpers import TINY_MODEL, tiny_zoo

ROOT = Path(__file__).resolve().parents[2]


def _app_module():
    spec = importlib.util.spec_from_file_location("app_main", ROOT / "app.py")  # app.py, not the app package
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_images_and_checkpoints_have_separate_limits(monkeypatch, tmp_path):
    """Item 16: one 20mb limit for every upload refused a 350 MB ViT-B/32 expert even locally."""
    from app.session import parse_size

    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("WEMOE_MAX_CHECKPOINT_SIZE", raising=False)
    monkeypatch.delenv("WEMOE_MAX_IMAGE_SIZE", raising=False)
    local = AppConfig()
    assert parse_size(local.max_image_size) == 20 * 2**20
    assert parse_size(local.max_checkpoint_size) >= 2 * 2**30  # a ViT-L/14 expert (1.2 GB) fits locally
    assert local.max_file_size == parse_size(local.max_checkpoint_size)  # Gradio's one limit: the larger
    monkeypatch.setenv("SPACE_ID", "someone/merge-explorer")
    space = AppConfig()
    assert 400 * 2**20 <= parse_size(space.max_checkpoint_size) < parse_size(local.max_checkpoint_size)
    monkeypatch.setenv("WEMOE_MAX_CHECKPOINT_SIZE", "3gb")
    monkeypatch.setenv("WEMOE_MAX_IMAGE_SIZE", "5mb")
    assert (AppConfig().max_checkpoint_size, AppConfig().max_image_size) == ("3gb", "5mb")
    app_main = _app_module()
    flags = app_main.make_config(app_main.parse_args(["--max-image-size", "1kb", "--max-checkpoint-size", "none"]))
    assert parse_size(flags.max_image_size) == 1024 and flags.max_file_size is None
    with pytest.raises(ValueError, match="max_image_size '20 potatoes' is not a size"):
        AppConfig(max_image_size="20 potatoes")
    # the image handlers enforce the image limit themselves, with a message saying what to do
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "big.png")
    assert (tmp_path / "big.png").stat().st_size > 4096
    small = AppConfig(zoos={}, max_image_size="4kb")
    with pytest.raises(gr.Error, match=r"'big.png' is 12.\d KB, more than the 4.0 KB this app accepts for an image"):
        inputs.read_upload(str(tmp_path / "big.png"), small)
    assert inputs.read_upload(str(tmp_path / "big.png"), AppConfig(zoos={})).size == (64, 64)


def _zip_task(path: Path, classes, per_class=3, top="pets") -> Path:
    rng = np.random.default_rng(1)
    with zipfile.ZipFile(path, "w") as archive:
        for name in classes:
            for i in range(per_class):
                image = path.parent / f"{name}-{i}.png"
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
                archive.write(image, f"{top}/{name}/{i}.png")
        archive.writestr("__MACOSX/pets/._junk.png", b"not an image")
    return path


@pytest.fixture
def custom_files(tmp_path):
    """A tiny base checkpoint and two expert checkpoints named after tasks no registry knows."""
    zoo = tiny_zoo(n_experts=2, seed=0, tasks=["pets", "cars-of-mine"])
    save_file({k: v.contiguous() for k, v in zoo.clip.state_dict().items()}, str(tmp_path / "base.safetensors"))
    for task in zoo.task_names:
        save_file(zoo.experts[task], str(tmp_path / f"{task}.safetensors"))
    return tmp_path


def test_custom_zoo_tasks_come_from_image_zips_and_folders(custom_files):
    """Item 19: a custom zoo's experts had to be named after registered tasks; now each task can be given as data."""
    root = custom_files
    upload = _zip_task(root / "pets.zip", ["cat", "hot_dog"])
    folder = root / "cars"
    for name in ("sedan", "pick_up", "van"):
        (folder / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (32, 32), (40 * i, 80, 120)).save(folder / name / f"{i}.png")
    tasks_text = f"cars-of-mine: {folder}"
    tasks, shown = inputs.read_tasks(tasks_text, [str(upload)])  # what was read, before anything is merged
    assert tasks["pets"].classnames == ("cat", "hot dog")
    assert tasks["cars-of-mine"].classnames == ("pick up", "sedan", "van")
    assert "| pets | 2 | 6 | cat, hot dog | pets.zip |" in shown and "| cars-of-mine | 3 | 6 |" in shown
    session = Session()
    try:
        summary = handlers.load_zoo(
            session, AppConfig(zoos={}), "custom",
            base_model=TINY_MODEL, base_pretrained=str(root / "base.safetensors"),
            expert_files=[str(root / "pets.safetensors"), str(root / "cars-of-mine.safetensors")],
            tasks_text=tasks_text, task_files=[str(upload)],
        )
        assert session.bench.task_names == ["pets", "cars-of-mine"]
        assert "| pets | 2 | 6 | cat, hot dog |" in summary and "| cars-of-mine | 3 | 6 |" in summary
        assert set(session.bench.heads()) == {"pets", "cars-of-mine"}
    finally:
        session.close()


def test_custom_zoo_task_mistakes_are_named(custom_files):
    root = custom_files
    config = AppConfig(zoos={})
    base = {"base_model": TINY_MODEL, "base_pretrained": str(root / "base.safetensors"),
            "expert_files": [str(root / "pets.safetensors")]}
    session = Session()
    with pytest.raises(gr.Error, match=r"expert\(s\) \['pets'\] have no task.*registered task \(.*mnist"):
        handlers.load_zoo(session, config, "custom", **base)
    with pytest.raises(gr.Error, match=r"task\(s\) \['dogs'\] have no expert"):
        dogs = _zip_task(root / "d.zip", ["a", "b"])
        handlers.load_zoo(session, config, "custom", **base, tasks_text=f"dogs: {dogs}")
    with pytest.raises(gr.Error, match="'nowhere' does not exist.*hf:owner/name"):
        inputs.read_tasks("pets: nowhere")
    with pytest.raises(gr.Error, match="must look like 'task: source'"):
        inputs.read_tasks("just words")
    assert session.bench is None


def test_custom_zoo_with_a_zip_task_through_the_api(custom_files, tmp_path):
    """The launched app: /read_tasks shows a zip's classes, /load_zoo takes experts and the task as uploads, and an
    upload larger than the image limit still passes Gradio's (checkpoint-sized) limit."""
    from gradio_client import Client, handle_file

    from app import build_demo
    from tests.app_support import tiny_config, write_examples

    root = custom_files
    upload = _zip_task(root / "pets.zip", ["cat", "hot_dog"])
    config = tiny_config(write_examples(tmp_path / "examples"), max_image_size="1kb", max_checkpoint_size="64mb")
    demo = build_demo(config)
    demo.queue()
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", max_file_size=config.max_file_size)
    try:
        client = Client(demo.local_url, verbose=False)
        shown = client.predict(tasks="", task_files=[handle_file(str(upload))], api_name="/read_tasks")
        assert "| pets | 2 | 6 | cat, hot dog | pets.zip |" in shown
        assert (root / "pets.safetensors").stat().st_size > 1024  # over the image limit, under the checkpoint limit
        info, *_ = client.predict(
            zoo="custom", base_model=TINY_MODEL, base_weights=str(root / "base.safetensors"),
            expert_files=[handle_file(str(root / "pets.safetensors"))], tasks="pets: pets.zip",
            task_files=[handle_file(str(upload))], api_name="/load_zoo",
        )
        assert "Experts: 1 (pets)" in info and "| pets | 2 | 6 | cat, hot dog |" in info
    finally:
        demo.close()

