"""The app's event handlers as plain functions (no browser, no server), on a tiny random zoo."""

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from app import handlers
from app.session import AppConfig, Session
from tests.app_support import tiny_config, write_examples
from wemoe.export import load_wemoe
from wemoe.moe import moe_layers


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return tiny_config(write_examples(tmp_path_factory.mktemp("examples")))


@pytest.fixture
def session(config):
    session = Session()
    handlers.load_zoo(session, config, "tiny")
    yield session
    session.close()


@pytest.fixture
def merged(session):
    handlers.merge(session, ["task_arithmetic", "wemoe"], {"task_arithmetic": {"lambda": 0.4}}, per_task=3)
    return session


def _routers(session, name="wemoe"):
    return {k: v.clone() for k, v in session.bench.merges[name].model.state_dict().items() if ".router." in k}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# 1. Models ------------------------------------------------------------------------------------------------------


def test_load_describes_the_zoo(session):
    summary = handlers.zoo_summary(session)
    assert "Experts: 3 (task0, task1, task2)" in summary and "| task1 | 3 | 12 |" in summary
    assert handlers.task_choices(session) == [handlers.AUTO_TASK, "task0", "task1", "task2"]


def test_bad_zoo_choices_leave_the_session_as_it_was(session, config):
    bench = session.bench
    with pytest.raises(gr.Error, match="Unknown zoo 'nope'"):
        handlers.load_zoo(session, config, "nope")
    with pytest.raises(gr.Error, match="at least 1"):
        handlers.load_zoo(session, config, "tiny", samples=-3)
    with pytest.raises(gr.Error, match="at least one expert"):
        handlers.load_zoo(session, config, "custom", base_model="ViT-B-32")
    with pytest.raises(gr.Error, match="must look like 'task: source'"):
        handlers.load_zoo(session, config, "custom", base_model="ViT-B-32", experts_text="just-a-name")
    assert session.bench is bench


def test_unknown_hub_id_offline_is_a_clear_error(session, config):
    bench = session.bench
    with pytest.raises(gr.Error) as error:
        handlers.load_zoo(session, config, "custom", base_model="wemoe-tiny-test-app", experts_text="mnist: nobody/no-such-model")
    assert "nobody/no-such-model" in str(error.value) or "wemoe-tiny-test-app" in str(error.value)
    assert session.bench is bench


def test_mismatched_checkpoint_is_refused(session, config, tmp_path):
    from tests.helpers import TINY_CONFIG, TINY_MODEL, tiny_clip

    tiny_clip()  # registers the tiny architecture with open_clip
    wrong = tmp_path / "task0.safetensors"
    save_file({"conv1.weight": torch.zeros(8, 3, 4, 4)}, str(wrong))
    bench = session.bench
    with pytest.raises(gr.Error, match="does not match the base"):
        handlers.load_zoo(session, config, "custom", base_model=TINY_MODEL, expert_files=[str(wrong)])
    assert session.bench is bench and TINY_CONFIG


def test_custom_spec_maps_tasks_to_sources():
    spec = handlers.custom_spec("ViT-B-32", "openai", "mnist: owner/mnist\n# comment\nsvhn = svhn.safetensors",
                                ["/tmp/up/svhn.safetensors", "/tmp/up/gtsrb.pt"])
    assert spec["experts"] == {"mnist": "owner/mnist", "svhn": "/tmp/up/svhn.safetensors", "gtsrb": "/tmp/up/gtsrb.pt"}
    assert spec["model"] == "ViT-B-32" and spec["pretrained"] == "openai"


def test_examples_are_listed_per_task(config):
    names = [name for _, name in handlers.list_examples(config, ["task1"])]
    assert names == ["task1/example0.png", "task1/example1.png"]
    assert handlers.list_examples(AppConfig(examples_dir=config.examples_dir / "missing")) == []


# 2. Merge and adapt ---------------------------------------------------------------------------------------------


def test_merge_checks_every_parameter_before_merging(session):
    with pytest.raises(gr.Error, match="out of range"):
        handlers.merge(session, ["task_arithmetic", "wemoe"], {"wemoe": {"lambda": 5.0}})
    with pytest.raises(gr.Error, match="at least one"):
        handlers.merge(session, [], {})
    assert session.bench.merges == {}


def test_merge_measures_a_step_without_changing_the_routers(merged):
    assert set(merged.bench.merges) == {"task_arithmetic", "wemoe"}
    assert merged.bench.merges["task_arithmetic"].params == {"lambda": 0.4}
    assert merged.step_seconds[("wemoe", 3)] > 0
    before = _routers(merged)
    handlers.measure_step(merged, "wemoe", 3)
    assert _same(before, _routers(merged))
    assert "Estimated time" in handlers.estimate(merged, "wemoe", 100, 3)
    assert "measured at its first step" in handlers.estimate(merged, "wemoe", 100, 7)


def test_adapt_needs_an_adaptive_merge(session):
    with pytest.raises(gr.Error, match="Merge with WEMoE first"):
        next(handlers.adapt(session, "wemoe", 3, 1e-3, 2))
    handlers.merge(session, ["task_arithmetic"], {})
    with pytest.raises(gr.Error, match="nothing to adapt"):
        next(handlers.adapt(session, "task_arithmetic", 3, 1e-3, 2))
    empty = Session()
    with pytest.raises(gr.Error, match="Load a zoo first"):
        next(handlers.adapt(empty, "wemoe", 3, 1e-3, 2))


def test_bad_adaptation_settings(merged):
    for steps, lr, per_task, message in [(0, 1e-3, 2, "between 1"), (3, 0.0, 2, "positive"), (3, float("nan"), 2, "positive"),
                                         (3, 1e-3, 0, "at least 1")]:
        with pytest.raises(gr.Error, match=message):
            next(handlers.adapt(merged, "wemoe", steps, lr, per_task))
    assert merged.bench.merges["wemoe"].adapt_steps == 0


def test_adaptation_loss_choice(merged):
    with pytest.raises(gr.Error, match="Unknown adaptation loss 'magic'"):
        next(handlers.adapt(merged, "wemoe", 2, 1e-3, 2, loss="magic"))
    before = merged.bench.merges["wemoe"].adapt_steps
    *_, (done, _) = handlers.adapt(merged, "wemoe", 2, 1e-3, 2, loss="im")
    assert merged.bench.merges["wemoe"].adapt_steps == before + 2 and "Adapted wemoe" in done


def test_stopping_adaptation_keeps_the_routers_of_the_last_step(merged):
    run = handlers.adapt(merged, "wemoe", 6, 5e-2, 3, update_every=0)  # a status after every step
    estimate, _ = next(run)  # measured when merging: said before the first step
    assert estimate.startswith("Adapting wemoe: 6 steps, about") and merged.bench.merges["wemoe"].adapt_steps == 0
    status, figure = next(run)
    assert "step 1/6" in status and "estimated total" in status and figure is not None
    next(run)
    after_two = _routers(merged)
    run.close()  # what Cancel does: the generator stops between steps
    result = merged.bench.merges["wemoe"]
    assert result.adapt_steps == 2 and len(result.history) == 2
    assert _same(after_two, _routers(merged))
    assert "after step 2" in handlers.cancelled(merged, "wemoe")
    *_, (done, _) = handlers.adapt(merged, "wemoe", 2, 5e-2, 3)
    assert "2 steps" in done and result.adapt_steps == 4
    assert not _same(after_two, _routers(merged))


# 3. Try images --------------------------------------------------------------------------------------------------


def test_uploads_that_are_not_images_are_refused(tmp_path, config):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    with pytest.raises(gr.Error, match="Upload an image first"):
        handlers.read_upload(None, config)
    with pytest.raises(gr.Error, match="empty"):
        handlers.read_upload(str(tmp_path / "empty.png"), config)
    for name in ("notes.txt", "corrupt.png"):
        with pytest.raises(gr.Error, match="not an image this app can read"):
            handlers.read_upload(str(tmp_path / name), config)


def test_huge_images_are_refused_or_downscaled(tmp_path, config):
    Image.new("RGB", (300, 200), "red").save(tmp_path / "big.png")
    small = AppConfig(examples_dir=config.examples_dir, max_pixels=10_000)
    with pytest.raises(gr.Error, match="megapixels"):
        handlers.read_upload(str(tmp_path / "big.png"), small)
    shrunk = handlers.read_upload(str(tmp_path / "big.png"), AppConfig(display_side=60))
    assert shrunk.size == (60, 40) and shrunk.mode == "RGB"


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P", "LA"])
def test_other_image_modes_are_converted_to_rgb(tmp_path, config, mode):
    array = (np.arange(32 * 32).reshape(32, 32) * (60 if mode == "I;16" else 1) % (65535 if mode == "I;16" else 256))
    image = Image.fromarray(array.astype(np.uint16 if mode == "I;16" else np.uint8))
    image = image.convert(mode) if mode != "I;16" else image
    path = tmp_path / f"image-{mode.replace(';', '')}.png"
    image.save(path)
    converted = handlers.read_upload(str(path), config)
    assert converted.mode == "RGB" and converted.size == (32, 32)
    assert np.asarray(converted).std() > 0  # the picture survived the conversion


def test_sketches(config):
    blank = Image.new("RGB", (64, 64), "black")
    with pytest.raises(gr.Error, match="draw a digit first"):
        handlers.read_sketch({"background": blank, "layers": [], "composite": blank}, config)
    with pytest.raises(gr.Error, match="draw a digit first"):
        handlers.read_sketch(None, config)
    drawn = blank.copy()
    drawn.paste((255, 255, 255), (20, 10, 30, 50))
    assert handlers.read_sketch({"composite": drawn.convert("RGBA")}, config).mode == "RGB"


def test_examples_cannot_escape_their_folder(config):
    with pytest.raises(gr.Error, match="No example image"):
        handlers.read_example("../../etc/passwd", config)
    assert handlers.read_example("task0/example1.png", config).size == (32, 32)


def test_predictions_before_and_after_wemoe(session, config):
    image = handlers.read_example("task1/example0.png", config)
    shown, table, guess, heatmap = handlers.predict(session, image, handlers.AUTO_TASK, config)
    assert shown.size == (192, 192)
    assert list(table.columns) == ["rank", "pretrained", "expert task0", "expert task1", "expert task2"]
    assert "Merge with WEMoE" in guess and "head of **task0**" in guess
    handlers.merge(session, ["task_arithmetic", "wemoe"], {}, per_task=2)
    shown, table, guess, heatmap = handlers.predict(session, image, "task2", config)
    assert list(table.columns)[1:4] == ["pretrained", "task_arithmetic", "wemoe"] and len(table) == 3  # 3 classes
    assert "head of **task2** (chosen by you)" in guess and "routers think this image is from" in guess
    z = np.asarray(heatmap.data[0].z)
    assert z.shape == (3, 3) and np.allclose(z, 0.3, atol=1e-5)  # untrained routers: lambda everywhere
    assert session.image is image and shown.size == (192, 192)  # 32 px shown 6x larger, pixels kept sharp
    with pytest.raises(gr.Error, match="Unknown task"):
        handlers.predict(session, image, "nope", config)


def test_predicted_probabilities_match_the_library(merged, config):
    from wemoe.routing import top_k
    from wemoe.task_images import encode_images

    image = handlers.read_example("task0/example0.png", config)
    _, table, _, _ = handlers.predict(merged, image, "task0", config)
    bench = merged.bench
    expected = top_k(bench.merges["wemoe"].model, encode_images([image], bench.zoo.preprocess), bench.heads()["task0"],
                     bench.tasks[0].classnames)[0]
    assert list(table["wemoe"]) == [f"{c} ({100 * p:.1f}%)" for c, p in expected]


# 4. Accuracy, 5. Routing, 6. Export -----------------------------------------------------------------------------


def test_evaluation_fills_the_table_and_writes_the_downloads(merged):
    updates = list(handlers.evaluate(merged, include_oracle=True))
    assert len(updates) == 5 * 3 + 1  # one update per cell (5 models x 3 tasks), then the final one with the files
    styled, bars, note, csv_path, json_path = updates[-1]
    assert updates[0][3] is None and csv_path.endswith(".csv") and json_path.endswith(".json")
    expected = merged.bench.evaluate(["pretrained", "experts", "task_arithmetic", "wemoe", "wemoe_oracle"])
    csv = pd.read_csv(csv_path, index_col="model")
    assert np.allclose(csv.values, expected.round(2).values)
    report = json.loads(Path(json_path).read_text())
    assert report["tasks"] == ["task0", "task1", "task2"] and report["samples_per_task"] == {"task0": 12, "task1": 12, "task2": 12}
    assert list(report["methods"]) == ["pretrained", "experts", "task_arithmetic", "wemoe", "wemoe_oracle"]
    assert report["methods"]["task_arithmetic"]["params"] == {"lambda": 0.4}
    assert report["methods"]["wemoe"]["average"] == round(float(expected.loc["wemoe", "average"]), 2)
    assert "task0 12" in note and len(bars.data) == 5
    html = styled.to_html()
    best = expected["average"].round(1).max()
    assert html.count("font-weight: bold") >= 1 and f"{best:.1f}" in html


def test_table_style_bolds_each_columns_best():
    table = pd.DataFrame({"a": [10.0, 90.0], "b": [70.0, 20.0], "average": [40.0, 55.0]}, index=pd.Index(["x", "y"], name="model"))
    styles = handlers.style_table(table)._compute().ctx
    bold = {(r, c) for (r, c), props in styles.items() if ("font-weight", "bold") in props}
    assert bold == {(1, 1), (0, 2), (1, 3)}  # column 0 is the model name


def test_routing_panel(session, config):
    with pytest.raises(gr.Error, match="Merge with WEMoE first"):
        next(handlers.routing(session, "pca", config))
    handlers.merge(session, ["wemoe"], {}, per_task=2)
    list(handlers.adapt(session, "wemoe", 2, 1e-2, 2))
    (heat, curve, _, feature_map, note), = list(handlers.routing(session, "pca", config))
    assert len(heat.data) == 3 and np.asarray(heat.data[0].z).shape == (3, 3)
    assert [len(t.x) for t in curve.data] == [2]
    assert sum(len(t.x) for t in feature_map.data) == 2 * 18  # 6 images per task, in both panels
    assert "18 test images of 3 tasks" in note and "after 2 adaptation steps" in note
    with pytest.raises(gr.Error, match="umap or pca"):
        next(handlers.routing(session, "tsne", config))


def test_exports_reload(merged, config):
    with pytest.raises(gr.Error, match="Choose a merge"):
        handlers.export(merged, "ties")
    images = torch.randn(2, 3, 32, 32)
    model = merged.bench.merges["wemoe"].model
    reloaded = load_wemoe(handlers.export(merged, "wemoe"), merged.bench.zoo.visual)
    with torch.no_grad():
        assert torch.allclose(reloaded(images), model(images), atol=1e-5)
    assert moe_layers(reloaded)
    from safetensors.torch import load_file

    static = load_file(handlers.export(merged, "task_arithmetic"))
    ta = merged.bench.merges["task_arithmetic"].model.state_dict()
    assert all(torch.equal(static[f"visual.{k}"], v) for k, v in ta.items())


def test_two_sessions_do_not_share_models(config):
    a, b = Session(), Session()
    handlers.load_zoo(a, config, "tiny")
    handlers.load_zoo(b, config, "tiny2")
    handlers.merge(a, ["task_arithmetic"], {})
    assert b.bench.merges == {} and a.bench.zoo is not b.bench.zoo
    assert a.workdir != b.workdir
    folder = a.workdir
    a.close()
    assert not folder.exists() and a.bench is None


def test_the_paper_preset_offline_says_how_to_get_it(session, config):
    bench = session.bench
    with pytest.raises(gr.Error, match="Loading the vit-b-32-8tasks zoo:.*(hub|download|offline|network)"):
        handlers.load_zoo(session, AppConfig(), "vit-b-32-8tasks")  # conftest sets HF_HUB_OFFLINE=1
    assert session.bench is bench
