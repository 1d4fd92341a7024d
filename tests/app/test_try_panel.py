"""The try panel's handlers: an image's predictions, the routers' guess and the routing heatmap, as plain functions
on a tiny random zoo."""

import gradio as gr
import numpy as np
import pytest
import torch

from app import handlers, inputs, views
from app.session import Session
from wemoe.moe.layer import moe_layers


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


def test_the_panel_names_tasks_and_settings_in_plain_words():
    """The lab's try panel showed code names (``pocket_clothing``, cut to ``pocket_cl...`` under the gallery's images,
    ``wemoe.lambda``): its task and example choices, the gallery's captions, the routers' guess and the heatmap's note
    read as the lesson's words, the values the handlers take unchanged."""
    from types import SimpleNamespace

    from app import messages, texts, try_panel

    session = SimpleNamespace(bench=SimpleNamespace(task_names=["pocket_clothing", "pocket_digits"]))
    assert views.task_choices(session) == [(inputs.AUTO_TASK, inputs.AUTO_TASK), ("clothing", "pocket_clothing"),
                                           ("digits", "pocket_digits")]
    guess = SimpleNamespace(task="pocket_clothing", ranked=["pocket_clothing", "pocket_digits"],
                            heaviest="pocket_digits", why_not="")
    result = SimpleNamespace(guess=guess, routed_by="wemoe", task="pocket_clothing", task_chosen=False)
    table = views.shown_predictions(None, [], False)
    image, shown_table, words, heatmap = try_panel.in_words(session, ("image", table, messages.guess_text(result),
                                                                      "heatmap"))
    assert (image, heatmap) == ("image", "heatmap") and shown_table is table
    assert "pocket_" not in words and "guess: clothing** (next closest: digits)" in words
    assert "head of **clothing** (the routers' guess)" in words and "another expert (digits)" in words
    assert "wemoe.lambda" not in texts.ROUTING_WEIGHTS and "WEMoE's lambda setting, 0.3" in texts.ROUTING_WEIGHTS
    import plotly.graph_objects as go

    titled = go.Figure(layout={"title": {"text": "Routing of this image (wemoe)"}})
    assert try_panel.in_words(session, ("image", table, "", titled))[3].layout.title.text == (
        "Routing of this image (WEMoE (routed))")
    examples = [("/a.png", "pocket_clothing/1_t-shirt.png"), ("/b.png", "pocket_charts/0_venn_diagram.png"),
                ("/c.png", "task0/example0.png")]
    assert try_panel.gallery_items(examples) == [("/a.png", "clothing"), ("/b.png", "charts"), ("/c.png", "task0")]
    assert try_panel.example_choices(examples) == [("clothing: t-shirt", "pocket_clothing/1_t-shirt.png"),
                                                   ("charts: venn diagram", "pocket_charts/0_venn_diagram.png"),
                                                   ("task0: example0", "task0/example0.png")]
