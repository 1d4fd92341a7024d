"""What a visitor enters (app/inputs.py): numbers checked with the field named, a custom zoo's spec, uploads,
sketches and examples."""

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from app import handlers, inputs
from app.session import AppConfig


def test_numbers_are_checked_with_the_field_named(merged, config):
    """#14 item 12: non-numeric values get a message naming the field and what to enter, not a crash."""
    for call, message in [
        (lambda: next(handlers.adapt(merged, "wemoe", 3, "x", 2)), "Learning rate: enter a number from 1e-07 to 1"),
        (lambda: next(handlers.adapt(merged, "wemoe", None, 1e-3, 2)), "Adaptation steps: enter a whole number"),
        (lambda: next(handlers.adapt(merged, "wemoe", "abc", 1e-3, 2)), "Adaptation steps: enter a whole number"),
        (lambda: next(handlers.adapt(merged, "wemoe", 3, 1e-3, 1.5)), "Images per task per step: enter a whole number"),
        (lambda: next(handlers.adapt_after_merge(merged, "wemoe", "x", 1e-3, 2)), "Adaptation steps: enter a whole"),
        (lambda: handlers.merge(merged, ["task_arithmetic"], {"task_arithmetic": {"lambda": "abc"}}),
         "task_arithmetic.lambda must be a float, got 'abc'"),
        (lambda: handlers.merge(merged, ["task_arithmetic"], {"task_arithmetic": {"lambda": None}}),
         "task_arithmetic.lambda must be a float, got None"),
        (lambda: handlers.merge(merged, ["task_arithmetic"], {}, per_task="x"), "Images per task per step: enter"),
        (lambda: handlers.load_zoo(merged, config, "tiny", samples="abc"),
         "Test images per task: enter a whole number"),
        (lambda: next(handlers.evaluate(merged, "abc")), "Also the WEMoE oracle: enter true or false"),
    ]:
        with pytest.raises(gr.Error, match=message) as error:
            call()
        assert error.value.print_exception is False  # a user mistake: no traceback on the console
    assert "enter a whole number" in handlers.estimate(merged, "wemoe", "abc", 3)
    assert merged.bench.merges["wemoe"].adapt_steps == 0
    assert merged.bench.merges["task_arithmetic"].params == {"lambda": 0.4}


def test_custom_spec_maps_tasks_to_sources():
    spec = inputs.custom_spec("ViT-B-32", "openai", "mnist: owner/mnist\n# comment\nsvhn = svhn.safetensors",
                                ["/tmp/up/svhn.safetensors", "/tmp/up/gtsrb.pt"])
    assert spec["experts"] == {"mnist": "owner/mnist", "svhn": "/tmp/up/svhn.safetensors", "gtsrb": "/tmp/up/gtsrb.pt"}
    assert spec["model"] == "ViT-B-32" and spec["pretrained"] == "openai"


def test_examples_are_listed_per_task(config):
    names = [name for _, name in inputs.list_examples(config, ["task1"])]
    assert names == ["task1/example0.png", "task1/example1.png"]
    assert inputs.list_examples(AppConfig(examples_dir=config.examples_dir / "missing")) == []


def test_uploads_that_are_not_images_are_refused(tmp_path, config):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    with pytest.raises(gr.Error, match="Upload an image first"):
        inputs.read_upload(None, config)
    with pytest.raises(gr.Error, match="empty"):
        inputs.read_upload(str(tmp_path / "empty.png"), config)
    for name in ("notes.txt", "corrupt.png"):
        with pytest.raises(gr.Error, match="not an image this app can read"):
            inputs.read_upload(str(tmp_path / name), config)


def test_huge_images_are_refused_or_downscaled(tmp_path, config):
    Image.new("RGB", (300, 200), "red").save(tmp_path / "big.png")
    small = AppConfig(examples_dir=config.examples_dir, max_pixels=10_000)
    with pytest.raises(gr.Error, match="megapixels"):
        inputs.read_upload(str(tmp_path / "big.png"), small)
    shrunk = inputs.read_upload(str(tmp_path / "big.png"), AppConfig(display_side=60))
    assert shrunk.size == (60, 40) and shrunk.mode == "RGB"


def test_a_png_too_large_for_pil_is_called_too_large(tmp_path, config):
    path = tmp_path / "huge.png"
    Image.new("1", (14_000, 14_000)).save(path)  # 196 megapixels: PIL refuses it on open (DecompressionBombError)
    assert path.stat().st_size < 2_000_000
    with pytest.raises(gr.Error, match=r"'huge.png' is too large \(196 megapixels\).*at most 40 megapixels.*Downscale"):
        inputs.read_upload(str(path), config)


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P", "LA"])
def test_other_image_modes_are_converted_to_rgb(tmp_path, config, mode):
    array = (np.arange(32 * 32).reshape(32, 32) * (60 if mode == "I;16" else 1) % (65535 if mode == "I;16" else 256))
    image = Image.fromarray(array.astype(np.uint16 if mode == "I;16" else np.uint8))
    image = image.convert(mode) if mode != "I;16" else image
    path = tmp_path / f"image-{mode.replace(';', '')}.png"
    image.save(path)
    converted = inputs.read_upload(str(path), config)
    assert converted.mode == "RGB" and converted.size == (32, 32)
    assert np.asarray(converted).std() > 0  # the picture survived the conversion


def test_sketches(config):
    blank = Image.new("RGB", (64, 64), "black")
    with pytest.raises(gr.Error, match="draw a digit first"):
        inputs.read_sketch({"background": blank, "layers": [], "composite": blank}, config)
    with pytest.raises(gr.Error, match="draw a digit first"):
        inputs.read_sketch(None, config)
    drawn = blank.copy()
    drawn.paste((255, 255, 255), (20, 10, 30, 50))
    assert inputs.read_sketch({"composite": drawn.convert("RGBA")}, config).mode == "RGB"


def test_examples_cannot_escape_their_folder(config):
    with pytest.raises(gr.Error, match="No example image"):
        inputs.read_example("../../etc/passwd", config)
    assert inputs.read_example("task0/example1.png", config).size == (32, 32)


def test_a_zoo_without_examples_of_its_own_offers_every_example(config):
    """The paper's zoos ship no images of their datasets: their gallery (and the warm-up, and a click's index) is
    every shipped example; a zoo with examples of its own offers only those."""
    own = inputs.gallery_examples(config, ["task1"])
    assert own == inputs.list_examples(config, ["task1"]) and own
    every = inputs.list_examples(config)
    assert inputs.gallery_examples(config, ["sun397", "mnist"]) == every and len(every) > len(own)
    assert inputs.gallery_examples(config, []) == every
