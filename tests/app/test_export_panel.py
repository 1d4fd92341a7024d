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


def test_an_export_with_its_card_is_the_cli_folder_zipped(merged, tmp_path):
    """The zip holds what ``python -m wemoe merge --out FOLDER`` writes; its weights reload to the same outputs and its
    card names the command that makes the merge again, with the adaptation it had."""
    import json
    import zipfile

    from wemoe.evaluation.card import CARD, CARD_FILES, CONFIG, RESULTS, WEIGHTS

    for _ in handlers.adapt(merged, "wemoe", 2, 1e-3, 3):
        pass
    with zipfile.ZipFile(handlers.export_with_card(merged, "wemoe")) as archive:
        assert sorted(archive.namelist()) == sorted(CARD_FILES)
        archive.extractall(tmp_path)
    config = json.loads((tmp_path / CONFIG).read_text())
    assert config["method"] == "wemoe" and config["tasks"] == merged.bench.task_names
    command = config["command"]
    assert command.startswith("python -m wemoe merge --zoo ") and "--method wemoe" in command
    result = merged.bench.merges["wemoe"]
    assert result.adapt_steps == 2 and config["adaptation"]["steps"] == 2 and config["adaptation"]["per_task"] == 3
    assert "--adapt-steps 2" in command and "--per-task 3" in command and "--adapt-lr 0.001" in command
    assert command in (tmp_path / CARD).read_text() and "wemoe" in json.loads((tmp_path / RESULTS).read_text())[
        "merge"]["method"]
    images = torch.randn(2, 3, 32, 32)
    reloaded = load_wemoe(str(tmp_path / WEIGHTS), merged.bench.zoo.visual)
    with torch.no_grad():
        assert torch.allclose(reloaded(images), result.model(images), atol=1e-5)
    with pytest.raises(gr.Error, match="Choose a merge"):
        handlers.export_with_card(merged, "ties")
