"""The analysis panel (#20): six named endpoints, each view's figure from the session's workbench."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from app.analysis_tab import (cost_view, cross_accuracy_view, interference_view, lambda_sweep_view, robustness_view,
                              routing_patches_view)
from app.session import Session
from tests.helpers import tiny_images, tiny_task, tiny_zoo
from wemoe.workbench import Workbench

VIEWS = ("routing_patches", "interference", "cross_accuracy", "lambda_sweep", "robustness", "cost")


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
        routing_patches_view(session, tiny_images(1, seed=1)[0], -1, "contrast", 2),
        routing_patches_view(session),
        interference_view(session, 20),
        cross_accuracy_view(session),
        lambda_sweep_view(session),
        robustness_view(session, "pixelate", 2),
        cost_view(session),
    ]
    assert all(isinstance(f, go.Figure) and f.data for f in figures)


def test_the_views_are_named_endpoints():
    from app.layout import build_demo
    from tests.app_support import tiny_config, write_examples

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as root:
        demo = build_demo(tiny_config(write_examples(Path(root))))
    names = {d["api_name"] for d in demo.config["dependencies"]}
    assert set(VIEWS) <= names
