"""The analysis panel (#20): six named endpoints, each view's figure from the session's workbench."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from app.analysis_tab import (
    MAX_TASK_SLIDERS,
    cost_view,
    cross_accuracy_view,
    interference_view,
    lambda_sweep_view,
    per_task_lambdas_view,
    robustness_view,
    routing_patches_view,
    task_sliders,
)
from app.session import Session
from tests.helpers import tiny_images, tiny_task, tiny_zoo
from wemoe.workbench.workbench import Workbench

VIEWS = ("routing_patches", "interference", "cross_accuracy", "lambda_sweep", "robustness", "cost", "task_sliders",
         "per_task_lambdas")


@pytest.fixture(scope="module")
def session() -> Session:
    zoo = tiny_zoo(n_experts=2, seed=3)
    session = Session()
    session.bench = Workbench(zoo, [tiny_task(n, n_images=9, seed=i) for i, n in enumerate(zoo.task_names)])
    session.bench.merge("task_arithmetic")
    session.bench.merge("wemoe")
    return session


def test_every_view_draws_a_figure(session):
    figures = [
        routing_patches_view(session, tiny_images(1, seed=1)[0], -1, "contrast", 2)[0],
        routing_patches_view(session)[0],
        interference_view(session, 20)[0],
        cross_accuracy_view(session),
        lambda_sweep_view(session),
        robustness_view(session, "pixelate", 2),
        cost_view(session),
    ]
    assert all(isinstance(f, go.Figure) and f.data for f in figures)


def test_the_views_are_named_endpoints():
    import tempfile
    from pathlib import Path

    from app.layout import build_demo
    from tests.app_support import tiny_config, write_examples

    with tempfile.TemporaryDirectory() as root:
        demo = build_demo(tiny_config(write_examples(Path(root))))
    names = {d["api_name"] for d in demo.config["dependencies"]}
    assert set(VIEWS) <= names


def test_the_patch_overlay_shows_the_library_numbers(session):
    """The overlay's cells are each patch's routing (dominant expert or one expert's weight), the bars the image's
    routing in that block, computed directly with wemoe.moe.patch_routing; the cells cover their patches' pixels."""
    import gradio as gr
    import numpy as np

    from wemoe.moe.patch_routing import patch_routing
    from wemoe.tasks.images import encode_images

    bench, image = session.bench, tiny_images(1, seed=2)[0]
    found = patch_routing(bench.merges["wemoe"].model, encode_images([image], bench.zoo.preprocess), 1)
    dominant, choices = routing_patches_view(session, image, 1)
    assert choices.constructor_args["choices"][1:] == bench.task_names  # tiny names have no pocket_ prefix
    cells = dominant.data[1]
    assert np.array_equal(np.asarray(cells.z), found.dominant_expert()[0].numpy())
    assert np.allclose(dominant.data[2].x, found.image_routing[0].numpy(), atol=1e-6)
    size = np.asarray(dominant.data[0].z).shape[0] / len(cells.z)
    assert cells.dx == size and cells.x0 == size / 2 - 0.5  # cell i is centred on patch i's pixels
    weight, _ = routing_patches_view(session, image, 1, shown=bench.task_names[1])
    assert np.allclose(np.asarray(weight.data[1].z), found.patch_grid()[0, ..., 1].numpy(), atol=1e-6)
    with pytest.raises(gr.Error, match="Show: choose dominant expert or one of the experts"):
        routing_patches_view(session, image, 1, shown="nobody")


def test_one_lambda_per_task_scores_what_the_library_scores(session):
    """The sliders: one per task at task arithmetic's lambda, the rest hidden; the bars are wemoe.analysis.sweep's
    per_task_lambdas of the sliders' values next to task arithmetic's one lambda, on the view's sample."""
    import gradio as gr

    from app.analysis_tab import PER_TASK
    from wemoe.analysis.sweep import per_task_lambdas

    bench = session.bench
    sliders = task_sliders(session)
    assert len(sliders) == MAX_TASK_SLIDERS
    shown = [s for s in sliders if s.constructor_args.get("visible")]
    assert [s.constructor_args["label"] for s in shown] == [f"lambda {t}" for t in bench.task_names]
    assert all(s.constructor_args["value"] == bench.merges["task_arithmetic"].params["lambda"] for s in shown)
    figure = per_task_lambdas_view(session, 0.9, 0.0, *[0.3] * (MAX_TASK_SLIDERS - 2))  # hidden sliders: ignored
    mine, uniform = figure.data
    expected = per_task_lambdas(bench, dict(zip(bench.task_names, (0.9, 0.0), strict=True)), per_task=PER_TASK)
    assert list(mine.y) == pytest.approx(list(expected.values()))
    lam = bench.merges["task_arithmetic"].params["lambda"]
    reference = per_task_lambdas(bench, dict.fromkeys(bench.task_names, lam), per_task=PER_TASK)
    assert list(uniform.y) == pytest.approx(list(reference.values())) and list(mine.x)[-1] == "average"
    with pytest.raises(gr.Error, match="lambda task1: enter a number from -1 to 2"):
        per_task_lambdas_view(session, 0.3, "lots")
    with pytest.raises(gr.Error, match="one lambda per task"):
        per_task_lambdas_view(session, 0.3)


def test_the_robustness_view_shows_accuracy_and_routing_shift_of_the_library(session):
    """Bars: each model's average accuracy, clean and corrupted (robustness_table); with a WEMoE merge, the routing
    shift per task (routing_shift): the share of guesses that survive, right clean and right corrupted."""
    import gradio as gr

    from app.analysis_tab import PER_TASK
    from wemoe.analysis.robustness import robustness_table, routing_shift

    bench = session.bench
    figure = robustness_view(session, "pixelate", 2)
    table = robustness_table(bench, ["pretrained", *bench.merges], ["pixelate"], 2, PER_TASK)
    shift = routing_shift(bench, "wemoe", "pixelate", 2, PER_TASK)
    bars = {trace.name: trace for trace in figure.data}
    for condition in ("clean", "pixelate"):
        assert list(bars[condition].x) == ["pretrained", *bench.merges]
        assert list(bars[condition].y) == pytest.approx(list(table.loc[condition, "average"]))
    assert list(bars["guess survives"].y) == pytest.approx(list(shift["guess_survives"]))
    assert list(bars["right, corrupted"].y) == pytest.approx(list(shift["guess_right_corrupted"]))
    with pytest.raises(gr.Error, match="Severity: enter a whole number from 1 to 5"):
        robustness_view(session, "pixelate", 9)


def test_the_interference_view_shows_the_library_numbers(session):
    import gradio as gr
    import numpy as np

    from wemoe.analysis.interference import interference

    found = interference(session.bench.zoo, 20.0)
    figure, choices = interference_view(session, 20, found.blocks[1])
    assert choices.constructor_args["choices"] == ["whole", *found.blocks]
    assert np.allclose(np.asarray(figure.data[0].z), found.cosine_frame(found.blocks[1]).values)
    assert list(figure.data[1].y) == pytest.approx(list(found.conflicts.values * 100))
    whole, _ = interference_view(session, 20)
    assert np.allclose(np.asarray(whole.data[0].z), found.cosine.numpy())
    with pytest.raises(gr.Error, match="Cosine of: choose whole or one of the blocks"):
        interference_view(session, 20, "block99")
    with pytest.raises(gr.Error, match="Percent of each task vector kept"):
        interference_view(session, 0)
