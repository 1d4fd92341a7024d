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

from app import handlers, inputs, jobs, messages, views
from app.session import AppConfig, Session
from tests.app_support import tiny_config, write_examples
from wemoe.evaluation.export import load_wemoe
from wemoe.moe.layer import moe_layers


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
    summary = messages.zoo_summary(session.bench)
    assert "Experts: 3 (task0, task1, task2)" in summary and "| task1 | 3 | 12 |" in summary
    assert views.task_choices(session) == [inputs.AUTO_TASK, "task0", "task1", "task2"]


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
        handlers.load_zoo(session, config, "custom", base_model="wemoe-tiny-test-app",
                          experts_text="mnist: nobody/no-such-model")
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
    spec = inputs.custom_spec("ViT-B-32", "openai", "mnist: owner/mnist\n# comment\nsvhn = svhn.safetensors",
                                ["/tmp/up/svhn.safetensors", "/tmp/up/gtsrb.pt"])
    assert spec["experts"] == {"mnist": "owner/mnist", "svhn": "/tmp/up/svhn.safetensors", "gtsrb": "/tmp/up/gtsrb.pt"}
    assert spec["model"] == "ViT-B-32" and spec["pretrained"] == "openai"


def test_examples_are_listed_per_task(config):
    names = [name for _, name in inputs.list_examples(config, ["task1"])]
    assert names == ["task1/example0.png", "task1/example1.png"]
    assert inputs.list_examples(AppConfig(examples_dir=config.examples_dir / "missing")) == []


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
    assert jobs.step_estimate(merged, "wemoe", 3) > 0
    before = _routers(merged)
    jobs.measure_step(merged, "wemoe", 3)
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
    for steps, lr, per_task, message in [(0, 1e-3, 2, "Adaptation steps: enter a whole number from 1 to 5000"),
                                         (3, 0.0, 2, "Learning rate: enter a number from 1e-07 to 1"),
                                         (3, float("nan"), 2, "Learning rate"),
                                         (3, 1e-3, 0, "Images per task per step: enter a whole number from 1")]:
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


def test_adaptation_refines_the_step_time_leaving_the_first_step_out(merged, monkeypatch):
    from wemoe.adaptation.adapt import AdaptStep

    result = merged.bench.merges["wemoe"]

    clock = iter([100.0, 105.0, 106.0, 107.0])  # each step's record arrives as late as the step took

    def fake_adapt(name, steps, **_):  # step 1 pays 4 s of warm-up, every later step takes 1 s
        for step, elapsed in enumerate([5.0, 6.0, 7.0][:steps], start=1):
            record = AdaptStep(step, 1.0, {"task0": 0.5}, elapsed)
            result.history.append(record)
            result.adapt_steps += 1
            yield record

    monkeypatch.setattr(merged.bench, "adapt", fake_adapt)
    monkeypatch.setattr(jobs, "step_clock", lambda: next(clock))
    updates = [status for status, _ in handlers.adapt(merged, "wemoe", 3, 1e-3, 3, update_every=0)]
    assert jobs.step_estimate(merged, "wemoe", 3) == pytest.approx(1.0)
    assert "step 2/3" in updates[2] and "about 1 s left" in updates[2] and "estimated total 7 s" in updates[2]
    assert "Estimated time: **100 s** for 100 steps" in handlers.estimate(merged, "wemoe", 100, 3)


def test_the_pocket_label_counts_its_experts(tmp_path):
    from app.session import default_zoos, pocket_label
    from wemoe.pocket.loader import DEFAULT_PATH, read_manifest

    if (DEFAULT_PATH / "manifest.json").is_file():
        count = len(read_manifest()["tasks"])
        assert f"tiny CLIP + {count} experts" in default_zoos()["pocket"][0]
    (tmp_path / "manifest.json").write_text(json.dumps({"tasks": ["a", "b", "c"]}))
    assert "tiny CLIP + 3 experts" in pocket_label(tmp_path)
    assert "one expert per pocket task" in pocket_label(tmp_path / "missing")


def test_cancel_stops_a_running_adaptation_at_the_step_it_names(merged):
    """#14 item 4: Cancel (handlers.cancelled, what /cancel runs) stops the adaptation itself, between steps, and the
    step it names is the one the routers stay at, also when it comes in the middle of a step."""
    import threading
    import time

    updates: list = []
    worker = threading.Thread(
        target=lambda: updates.extend(handlers.adapt(merged, "wemoe", 2000, 1e-3, 3, update_every=0)))
    worker.start()
    result = merged.bench.merges["wemoe"]
    deadline = time.monotonic() + 60
    while result.adapt_steps < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    message = handlers.cancelled(merged, "wemoe")
    worker.join(timeout=60)
    assert not worker.is_alive(), "the adaptation went on after Cancel"
    kept = int(message.split("after step ")[1].rstrip("."))
    assert 2 <= kept == result.adapt_steps == len(result.history) < 2000
    assert updates[-1][0].startswith("Stopped after") and f"after step {kept}." in updates[-1][0]
    assert merged.job is None and "Nothing is running" in handlers.cancelled(merged, "wemoe")
    *_, (done, _) = handlers.adapt(merged, "wemoe", 2, 1e-3, 3)  # the next run is not stopped by the old Cancel
    assert done.startswith("Adapted wemoe: 2 steps") and result.adapt_steps == kept + 2


def test_a_cancelled_merge_changes_nothing(merged):
    """#14 item 5: Cancel during a merge keeps every merge (an adapted WEMoE keeps its steps), the chained
    adaptation does not run, and merging an adapted merge again says that its adaptation is replaced."""
    list(handlers.adapt(merged, "wemoe", 3, 1e-2, 3))
    before = dict(merged.bench.merges)
    routers = _routers(merged)

    def press_cancel_during_wemoe(fraction, desc=""):
        if "wemoe" in desc:
            assert handlers.cancelled(merged, "wemoe").startswith("Cancelled the merge")

    with pytest.raises(gr.Error, match="Merge cancelled: the session's merges are as they were"):
        handlers.merge(merged, ["task_arithmetic", "wemoe"], {"task_arithmetic": {"lambda": 0.9}}, per_task=3,
                       progress=press_cancel_during_wemoe)
    assert merged.bench.merges == before and merged.bench.merges["wemoe"].adapt_steps == 3
    assert merged.bench.merges["task_arithmetic"].params == {"lambda": 0.4} and _same(routers, _routers(merged))
    assert list(handlers.adapt_after_merge(merged, "wemoe", 5, 1e-2, 3)) == [(gr.skip(), gr.skip())]
    assert merged.bench.merges["wemoe"].adapt_steps == 3  # the adaptation chained to the merge did not start
    assert "Pressing Merge again replaces wemoe and its 3 adaptation steps" in handlers.estimate(merged, "wemoe", 10, 3)
    with pytest.warns(UserWarning, match="Replaced the adapted wemoe"):
        message = handlers.merge(merged, ["wemoe"], {}, per_task=3)
    assert "Replaced the adapted wemoe: its 3 adaptation steps are gone" in message
    assert merged.bench.merges["wemoe"].adapt_steps == 0
    assert merged.bench.merges["task_arithmetic"] is before["task_arithmetic"]
    *_, (done, _) = handlers.adapt_after_merge(merged, "wemoe", 2, 1e-2, 3)  # a merge that went through chains on
    assert done.startswith("Adapted wemoe: 2 steps")


def test_the_loss_plot_names_its_loss_and_continues_the_steps(merged, config):
    """#14 item 8: the curve is titled by the loss used (IM values are not an entropy) and "Adapt more" continues
    the step axis instead of drawing over the first run."""
    *_, (_, first) = handlers.adapt(merged, "wemoe", 2, 1e-3, 2, loss="im")
    assert first.layout.title.text == "Adaptation: IM loss per step" and "IM loss" in first.layout.yaxis.title.text
    *_, (_, more) = handlers.adapt(merged, "wemoe", 3, 1e-3, 2, loss="im")
    assert [list(t.x) for t in more.data] == [[1, 2, 3, 4, 5]]
    assert list(more.data[0].y) == [r.loss for r in merged.bench.merges["wemoe"].history]
    *_, (_, mixed) = handlers.adapt(merged, "wemoe", 2, 1e-3, 2, loss="entropy")
    assert [list(t.x) for t in mixed.data] == [[1, 2, 3, 4, 5], [6, 7]]
    assert [t.name for t in mixed.data] == ["wemoe (IM loss)", "wemoe (entropy (the paper's))"]
    (_, curve, tasks, _, _), = list(handlers.routing(merged, "pca", config))
    assert [list(t.x) for t in curve.data] == [[1, 2, 3, 4, 5], [6, 7]] and list(tasks.data[0].x) == list(range(1, 8))


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


# 3. Try images --------------------------------------------------------------------------------------------------


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


def test_predictions_before_and_after_wemoe(session, config):
    image = inputs.read_example("task1/example0.png", config)
    shown, table, guess, heatmap = handlers.predict(session, image, inputs.AUTO_TASK, config)
    assert shown.size == (192, 192)
    assert list(table.columns) == ["pretrained"]  # nothing merged, no task: the pretrained model alone
    assert "merge with WEMoE" in guess and "all tasks together" in guess
    handlers.merge(session, ["task_arithmetic"], {})
    _, table, _, _ = handlers.predict(session, image, "task2", config)
    assert list(table.columns) == ["task_arithmetic", "expert task2"]  # no WEMoE: the latest merge
    handlers.merge(session, ["task_arithmetic", "wemoe"], {}, per_task=2)
    shown, table, guess, heatmap = handlers.predict(session, image, "task2", config)
    assert list(table.columns) == ["wemoe", "expert task2"] and len(table) == 3  # 3 classes
    assert "head of **task2** (chosen by you)" in guess
    z = np.asarray(heatmap.data[0].z)
    assert z.shape == (3, 3) and np.allclose(z, 0.3, atol=1e-5)  # untrained routers: lambda everywhere
    assert session.image is image and shown.size == (192, 192)  # 32 px shown 6x larger, pixels kept sharp
    assert handlers.predict(session, image, "task2", config)[3] is heatmap  # the figure of this routing, made once
    with pytest.raises(gr.Error, match="Unknown task"):
        handlers.predict(session, image, "nope", config)


def test_predictions_are_compact_with_every_model_on_demand(merged, config):
    image = inputs.read_example("task0/example1.png", config)
    _, compact, _, _ = handlers.predict(merged, image, "task1", config)
    assert list(compact.columns) == ["wemoe", "expert task1"]  # what fits a phone: the merge vs its expert
    every = ["rank", "pretrained", "task_arithmetic", "wemoe", "expert task0", "expert task1", "expert task2"]
    full = handlers.prediction_view(merged, True)
    assert list(full.columns) == every and full["wemoe"].tolist() == compact["wemoe"].tolist()
    assert list(handlers.predict(merged, image, "task1", config)[1].columns) == every  # the choice is kept
    assert list(handlers.prediction_view(merged, False).columns) == ["wemoe", "expert task1"]
    assert list(handlers.prediction_view(Session(), True).columns) == ["rank"]  # nothing classified yet


def test_unadapted_or_nan_routing_makes_no_guess(merged, config):
    image = inputs.read_example("task1/example0.png", config)
    _, table, guess, _ = handlers.predict(merged, image, inputs.AUTO_TASK, config)  # routers: 0.3 everywhere
    assert guess.startswith("**No guess yet: adapt first.**") and "same weight" in guess
    assert "guess: task" not in guess and "head of" not in guess and "all tasks together" in guess
    # the neutral choice: every task's classes together, none favoured
    assert list(table.columns) == ["wemoe", "pretrained"] and len(table) == 5
    assert all(cell.split(":")[0] in {"task0", "task1", "task2"} for cell in table["wemoe"])
    for layer in moe_layers(merged.bench.merges["wemoe"].model).values():
        layer.router.net[-1].bias.data.fill_(float("nan"))
    merged.bench.merges["wemoe"].key = None  # routers changed by hand: no longer the merge the cache knows
    merged.reset_results()
    _, _, guess, _ = handlers.predict(merged, image, inputs.AUTO_TASK, config)
    assert guess.startswith("**No guess yet: merge again") and "not numbers" in guess and "all tasks together" in guess


def test_adapted_routers_guess_one_task_in_one_plain_statement(merged, config):
    torch.manual_seed(3)
    for layer in moe_layers(merged.bench.merges["wemoe"].model).values():
        for p in layer.router.parameters():
            p.data.normal_(0, 0.3)
    merged.bench.merges["wemoe"].key = None  # routers changed by hand: no longer the merge the cache knows
    merged.reset_results()
    for name in ("task0/example0.png", "task1/example0.png", "task2/example1.png"):
        _, table, guess, _ = handlers.predict(merged, inputs.read_example(name, config), inputs.AUTO_TASK, config)
        chosen = guess.split("routers' guess: ")[1].split("**")[0]
        assert chosen in {"task0", "task1", "task2"} and f"head of **{chosen}** (the routers' guess)" in guess
        assert list(table.columns) == ["wemoe", f"expert {chosen}"]
        assert "think this image is from" not in guess and "The expert they weigh most" not in guess
        if "largest weight" in guess:  # the other measure is named only to say why it differs
            assert "is on another expert" in guess and "need not favour a task's own expert" in guess


def test_the_routing_heatmap_explains_its_coefficients(merged, config):
    from app import texts

    _, _, _, heatmap = handlers.predict(merged, inputs.read_example("task0/example0.png", config), "task0", config)
    trace = heatmap.data[0]
    assert trace.colorbar.title.text == "coefficient" and "task vector" in trace.hovertemplate and trace.zmid == 0
    subtitle = heatmap.layout.title.subtitle.text
    assert "not probabilities" in subtitle and "need not sum to 1" in subtitle
    assert "task vector" in texts.ROUTING_WEIGHTS and "negative" in texts.ROUTING_WEIGHTS
    assert "not probabilities" in texts.ROUTING_WEIGHTS and "need not sum to 1" in texts.ROUTING_WEIGHTS


def test_predicted_probabilities_match_the_library(merged, config):
    from wemoe.moe.routing import top_k
    from wemoe.tasks.images import encode_images

    image = inputs.read_example("task0/example0.png", config)
    _, table, _, _ = handlers.predict(merged, image, "task0", config)
    bench = merged.bench
    expected = top_k(bench.merges["wemoe"].model, encode_images([image], bench.zoo.preprocess), bench.heads()["task0"],
                     bench.tasks[0].classnames)[0]
    assert list(table["wemoe"]) == [f"{c} ({100 * p:.1f}%)" for c, p in expected]


# 4. Accuracy, 5. Routing, 6. Export -----------------------------------------------------------------------------


def test_evaluation_fills_the_table_and_writes_the_downloads(merged):
    updates = list(handlers.evaluate(merged, include_oracle=True, update_every=0.0))
    assert len(updates) == 5 * 3 + 1  # unthrottled: one update per cell (5 models x 3 tasks), then the final one
    styled, bars, note, csv_path, json_path = updates[-1]
    assert updates[0][3] is None and csv_path.endswith(".csv") and json_path.endswith(".json")
    expected = merged.bench.evaluate(["pretrained", "experts", "task_arithmetic", "wemoe", "wemoe_oracle"])
    csv = pd.read_csv(csv_path, index_col="model")
    assert np.allclose(csv.values, expected.round(2).values)
    report = json.loads(Path(json_path).read_text())
    assert report["tasks"] == ["task0", "task1", "task2"]
    assert report["samples_per_task"] == {"task0": 12, "task1": 12, "task2": 12}
    assert list(report["methods"]) == ["pretrained", "experts", "task_arithmetic", "wemoe", "wemoe_oracle"]
    assert report["methods"]["task_arithmetic"]["params"] == {"lambda": 0.4}
    assert report["methods"]["wemoe"]["average"] == round(float(expected.loc["wemoe", "average"]), 2)
    assert "task0 12" in note and len(bars.data) == 5
    html = styled.to_html()
    best = expected["average"].round(1).max()
    assert html.count("font-weight: bold") >= 1 and f"{best:.1f}" in html


def test_normalized_accuracy_toggle_divides_each_task_by_its_expert(merged):
    assert merged.table is None and views.accuracy_view(merged, True) == gr.skip()  # nothing evaluated: no change
    *_, last = handlers.evaluate(merged)
    measured, normalized = views.accuracy_view(merged, False), views.accuracy_view(merged, True)
    assert measured.label == views.ACCURACY_LABEL and normalized.label == views.NORMALIZED_LABEL
    table = merged.table
    shown = normalized.value["data"]
    columns = normalized.value["headers"]
    rows = {row[0]: dict(zip(columns, row, strict=True)) for row in shown}
    for task in ("task0", "task1", "task2"):
        expected = table.loc["task_arithmetic", task] / table.loc["experts", task] * 100
        assert float(rows["task_arithmetic"][task]) == pytest.approx(round(expected, 1), abs=0.051)
        assert float(rows["experts"][task]) == pytest.approx(100.0)
    tasks = [table.loc["wemoe", t] / table.loc["experts", t] * 100 for t in ("task0", "task1", "task2")]
    assert float(rows["wemoe"]["average"]) == pytest.approx(round(sum(tasks) / 3, 1), abs=0.051)
    assert [r[0] for r in measured.value["data"]] == [r[0] for r in shown]
    with pytest.raises(gr.Error, match="Normalized accuracy: enter true or false"):
        views.accuracy_view(merged, "yes")


def test_the_accuracy_table_shows_the_average_first_and_marks_the_best_merge():
    rows = ["pretrained", "experts", "task_arithmetic", "wemoe", "wemoe_oracle"]
    table = pd.DataFrame({"pocket_digits": [50.0, 99.0, 70.0, 80.0, 95.0],
                          "pocket_shapes": [40.0, 98.0, 85.0, 85.0, 97.0],
                          "average": [45.0, 98.5, 77.5, 82.5, 96.0]}, index=pd.Index(rows, name="model"))
    styled = views.style_table(table)
    assert list(styled.data.columns) == ["model", "average", "digits", "shapes"]  # average first, short task names
    styles = styled._compute().ctx
    best = {(r, c) for (r, c), props in styles.items() if ("font-weight", "bold") in props}
    # the best merge per column (ties both marked), never a reference row (experts, pretrained, oracle)
    assert best == {(3, 1), (3, 2), (2, 3), (3, 3)}
    italic = {r for (r, _), props in styles.items() if ("font-style", "italic") in props}
    assert italic == {0, 1, 4}
    backgrounds = {v for props in styles.values() for k, v in props if k == "background-color"}
    assert backgrounds and all(v.startswith("rgba(") for v in backgrounds)  # translucent: readable in dark mode too
    only_references = views.style_table(table.loc[["pretrained", "experts"]])._compute().ctx
    assert not any(("font-weight", "bold") in props for props in only_references.values())


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


def test_a_routing_heatmap_is_made_once_per_routing_and_shows_that_routing():
    from types import SimpleNamespace

    def result(values):
        return SimpleNamespace(routing=torch.tensor(values, dtype=torch.float32), layers=(0, 2), routed_by="wemoe")

    first = views.image_heatmap(result([[0.1, 0.5], [0.3, -0.2]]), ["task_a", "task_b"])
    assert views.image_heatmap(result([[0.1, 0.5], [0.3, -0.2]]), ["task_a", "task_b"]) is first
    other = views.image_heatmap(result([[0.1, 0.5], [0.3, 0.2]]), ["task_a", "task_b"])
    assert other is not first and views.image_heatmap(result([[0.1, 0.5], [0.3, -0.2]]), ["a", "b"]) is not first
    assert np.array_equal(np.asarray(first.data[0].z), np.float32([[0.1, 0.5], [0.3, -0.2]]))
    assert np.array_equal(np.asarray(other.data[0].z), np.float32([[0.1, 0.5], [0.3, 0.2]]))
    assert list(first.data[0].y) == ["block 0", "block 2"] and "wemoe" in first.layout.title.text


def test_a_failure_message_has_one_period():
    from app.errors import friendly

    with pytest.raises(gr.Error) as refused, friendly("Mapping"):
        raise ValueError("Block 99 has no router.")
    assert refused.value.message == ("Mapping failed: Block 99 has no router. Nothing was changed; check the input "
                                     "and try again.")
