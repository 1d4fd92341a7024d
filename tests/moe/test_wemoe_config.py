"""A WEMoEConfig is the WEMoE tower's input: upscale_to_wemoe builds from it, the tower keeps it, export rebuilds from
it."""

import pytest
import torch

from tests.helpers import tiny_zoo
from wemoe.evaluation.export import load_wemoe, save_wemoe
from wemoe.methods import get_method
from wemoe.moe.layer import WEMoEConfig, moe_layers, router_parameters, upscale_to_wemoe


@pytest.fixture(scope="module")
def zoo():
    return tiny_zoo(n_experts=3, seed=2, layers=3)


def test_the_tower_keeps_its_config_resolved(zoo):
    config = WEMoEConfig(lambda_=0.25, router_hidden_layers=2, blocks=[-1, 0], seed=4)
    tower = upscale_to_wemoe(zoo, config)
    assert tower.wemoe_config == WEMoEConfig(0.25, 2, [0, 2], list(zoo.task_names), 4)
    assert list(moe_layers(tower)) == [0, 2]
    assert config.blocks == [-1, 0] and config.task_names == []  # the caller's record is not changed
    again = upscale_to_wemoe(zoo, tower.wemoe_config)  # the kept config rebuilds the same tower
    assert all(torch.equal(a, b) for a, b in zip(router_parameters(tower), router_parameters(again), strict=True))


def test_the_default_config_and_the_method_agree(zoo):
    assert upscale_to_wemoe(zoo).wemoe_config == WEMoEConfig(blocks=[0, 1, 2], task_names=list(zoo.task_names))
    made = get_method("wemoe")(zoo, **{"lambda": 0.4, "router_hidden_layers": 0, "blocks": "1", "seed": 3})
    assert made.wemoe_config == WEMoEConfig(0.4, 0, [1], list(zoo.task_names), 3)


def test_a_config_for_other_experts_is_refused(zoo):
    with pytest.raises(ValueError, match="not the zoo's"):
        upscale_to_wemoe(zoo, WEMoEConfig(task_names=["a", "b", "c"]))


def test_export_rebuilds_from_the_saved_config(zoo, tmp_path):
    tower = upscale_to_wemoe(zoo, WEMoEConfig(lambda_=0.2, blocks=[1], seed=5))
    for p in router_parameters(tower):
        p.data.normal_(0, 0.1)
    loaded = load_wemoe(save_wemoe(tower, tmp_path / "w.safetensors"), zoo.visual)
    assert loaded.wemoe_config == tower.wemoe_config
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images), tower(images))


def test_a_file_saved_with_the_old_lambda_key_reloads(zoo, tmp_path):
    """Files written before the lambda had one name carry ``init_lambda``; they load as ``lambda_``, and a save writes
    only the new key."""
    import json

    from safetensors.torch import load_file, save_file

    from wemoe.evaluation.export import read_metadata

    tower = upscale_to_wemoe(zoo, WEMoEConfig(lambda_=0.2, blocks=[1], seed=5))
    path = save_wemoe(tower, tmp_path / "old.safetensors")
    metadata = read_metadata(path)
    config = json.loads(metadata["config"])
    assert config["lambda_"] == 0.2 and "init_lambda" not in config
    config["init_lambda"] = config.pop("lambda_")
    save_file(load_file(str(path)), str(path), metadata={**metadata, "config": json.dumps(config)})
    loaded = load_wemoe(path, zoo.visual)
    assert loaded.wemoe_config == tower.wemoe_config and loaded.wemoe_config.lambda_ == 0.2
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images), tower(images))
