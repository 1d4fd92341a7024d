"""The routing panel: per-layer routing heatmaps, the loss curve and the map of routed images, on a tiny random
zoo."""

import gradio as gr
import numpy as np
import pytest

from app import handlers


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
