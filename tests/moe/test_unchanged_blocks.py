"""Blocks whose experts all equal the base (experts fine-tuned on some blocks only, as the pocket-20 zoo's): WEMoE
applies W_0 densely there, with the same outputs and router gradients as building every sample's weights."""

import dataclasses

import pytest
import torch

from tests.helpers import tiny_zoo
from wemoe.evaluation.export import load_wemoe, save_wemoe
from wemoe.moe.layer import WEMoEConfig, moe_layers, router_parameters, upscale_to_wemoe


@pytest.fixture(scope="module")
def zoo():
    """Three experts that changed blocks 1 and 2 only: block 0's MLP is the base's in every expert."""
    zoo = tiny_zoo(n_experts=3, seed=0, layers=3)
    base = zoo.base_state
    experts = {name: {k: (base[k].clone() if k.startswith("transformer.resblocks.0.mlp.") else v)
                      for k, v in state.items()} for name, state in zoo.experts.items()}
    return dataclasses.replace(zoo, experts=experts)


def _trained_looking(tower: torch.nn.Module) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(3)
    for parameter in router_parameters(tower):
        parameter.data.normal_(0, 0.3, generator=generator)
    return tower


def test_only_unchanged_blocks_take_the_dense_path(zoo):
    layers = moe_layers(upscale_to_wemoe(zoo))
    assert [layer.experts_differ for layer in layers.values()] == [False, True, True]


def test_dense_path_equals_per_sample_weights_in_outputs_and_router_gradients(zoo):
    fast = _trained_looking(upscale_to_wemoe(zoo))
    general = _trained_looking(upscale_to_wemoe(zoo))
    moe_layers(general)[0].experts_differ = True  # force the per-sample build of W_0 in block 0
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out_fast, out_general = fast(images), general(images)
    assert (out_fast - out_general).abs().max() <= 1e-5
    weights = torch.randn_like(out_fast) / out_fast.numel()
    (out_fast * weights).sum().backward()
    (out_general * weights).sum().backward()
    for p, q in zip(router_parameters(fast), router_parameters(general), strict=True):
        assert (p.grad - q.grad).abs().max() <= 1e-6
    final = moe_layers(fast)[0].router.net[-1]
    assert torch.count_nonzero(final.weight.grad) == 0  # routing an unchanged block changes nothing


def test_a_loaded_model_decides_again(zoo, tmp_path):
    saved = _trained_looking(upscale_to_wemoe(zoo, WEMoEConfig(task_names=list(zoo.experts))))
    path = save_wemoe(saved, tmp_path / "wemoe.safetensors")
    loaded = load_wemoe(path, zoo.clip.visual)  # built on placeholders equal to the base, then filled from the file
    assert [layer.experts_differ for layer in moe_layers(loaded).values()] == [False, True, True]
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(loaded(images), saved(images))
