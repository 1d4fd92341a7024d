"""The export panel: an exported WEMoE and an exported static merge reload with the same weights."""

import gradio as gr
import pytest
import torch

from app import handlers
from wemoe.evaluation.export import load_wemoe
from wemoe.moe.layer import moe_layers


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
