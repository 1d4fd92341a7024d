"""Export: static merges reload in open_clip, WEMoE models reload with identical outputs."""

import torch

from tests.helpers import tiny_clip, tiny_zoo
from wemoe.evaluation.export import load_wemoe, read_metadata, save_static, save_wemoe
from wemoe.methods import get_method
from wemoe.moe.layer import router_parameters

import open_clip  # after the imports above: wemoe's torchvision shim first  # isort: skip


def test_static_merge_round_trip_through_open_clip(tmp_path):
    zoo = tiny_zoo(n_experts=2, seed=5)
    tower = get_method("ties")(zoo)
    path = save_static(zoo.clip, tower, tmp_path / "ties.safetensors")
    assert read_metadata(path)["wemoe_format"] == "open_clip"
    clip = tiny_clip(seed=99)[0]
    open_clip.load_checkpoint(clip, str(path))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(clip.visual(images), tower(images))
        tokens = torch.ones(1, 77, dtype=torch.long)
        assert torch.equal(clip.encode_text(tokens), zoo.clip.encode_text(tokens))


def test_adamerging_exports_its_current_weights(tmp_path):
    zoo = tiny_zoo(n_experts=2, seed=6)
    ada = get_method("adamerging")(zoo)
    ada.coefficients.data.uniform_(0, 1)
    path = save_static(zoo.clip, ada, tmp_path / "ada.safetensors")
    clip = tiny_clip(seed=98)[0]
    open_clip.load_checkpoint(clip, str(path))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (clip.visual(images) - ada(images)).abs().max() <= 1e-5


def test_wemoe_round_trip_gives_identical_outputs(tmp_path):
    zoo = tiny_zoo(n_experts=3, seed=7, layers=3)
    tower = get_method("wemoe")(zoo, blocks="1,2", router_hidden_layers=2)
    for p in router_parameters(tower):
        p.data.normal_(0, 0.2)
    path = save_wemoe(tower, tmp_path / "wemoe.safetensors")
    again = load_wemoe(path, zoo.visual)
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(images), tower(images))
    assert again.wemoe_config == tower.wemoe_config
    assert all(p.requires_grad for p in router_parameters(again))
