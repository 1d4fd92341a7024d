"""Upscaling one tensor and one block at a time gives, bit for bit, the tower that building every task vector of the
whole tower first gave (task arithmetic outside the MoE MLPs, ``torch.stack`` of the MLP task vectors, their top-k
factors for compressed experts)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import tiny_zoo
from wemoe.moe import lowrank
from wemoe.moe.layer import MLP_PARTS, WEMoEConfig, merged_state, moe_layers, upscale_to_wemoe, weight_stack
from wemoe.task_vector import task_vectors
from wemoe.zoo.zoo import Zoo


@pytest.fixture(scope="module")
def zoo() -> Zoo:
    return tiny_zoo(n_experts=3, seed=0, layers=3)


def _mlp_task_vectors(zoo: Zoo, block: int, part: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Block ``block``'s pretrained ``part`` weight and each expert's task vector of it, as the old code built them."""
    vectors = task_vectors(zoo.base_state, zoo.experts)
    key = f"transformer.resblocks.{block}.mlp.{part}.weight"
    return zoo.base_state[key].float(), [vector[key] for vector in vectors.values()]


def test_merged_state_equals_summed_task_vectors_applied(zoo):
    reference = sum(task_vectors(zoo.base_state, zoo.experts).values()).apply_to(zoo.base_state, 0.37)
    merged = merged_state(zoo.base_state, zoo.experts, 0.37)
    assert merged.keys() == reference.keys()
    assert all(torch.equal(merged[k], reference[k]) for k in reference)


def test_merged_state_keeps_skipped_tensors_and_names_a_missing_one(zoo):
    prefix = "transformer.resblocks.1.mlp."
    base = zoo.base_state
    merged = merged_state(base, zoo.experts, 0.3, skip=(prefix,))
    skipped = [k for k in merged if k.startswith(prefix)]
    assert skipped and all(merged[k] is base[k] for k in skipped)
    assert not torch.equal(merged["conv1.weight"], base["conv1.weight"])
    broken = {name: dict(state) for name, state in zoo.experts.items()}
    del broken["task1"]["conv1.weight"]
    with pytest.raises(KeyError, match="conv1.weight"):
        merged_state(zoo.base_state, broken, 0.3)


def test_weight_stack_equals_stacked_task_vectors(zoo):
    weight, vectors = _mlp_task_vectors(zoo, 2, "c_proj")
    experts = [state["transformer.resblocks.2.mlp.c_proj.weight"] for state in zoo.experts.values()]
    assert torch.equal(weight_stack(weight, experts), torch.stack([*vectors, weight]))


@pytest.mark.parametrize("blocks", [None, [1, -1]])
def test_exact_tower_equals_the_whole_tower_task_vector_build(zoo, blocks):
    config = WEMoEConfig(lambda_=0.25, blocks=blocks)
    tower = upscale_to_wemoe(zoo, config)
    state = tower.state_dict()
    reference = sum(task_vectors(zoo.base_state, zoo.experts).values()).apply_to(zoo.base_state, 0.25)
    moe = moe_layers(tower)
    assert sorted(moe) == ([0, 1, 2] if blocks is None else [1, 2])
    for key, value in reference.items():
        if any(key.startswith(f"transformer.resblocks.{b}.mlp.") for b in moe):
            continue
        assert torch.equal(state[key], value), key
    for block in moe:
        for part in MLP_PARTS:
            weight, vectors = _mlp_task_vectors(zoo, block, part)
            assert torch.equal(state[f"transformer.resblocks.{block}.mlp.{part}_weight_stack"],
                               torch.stack([*vectors, weight]))


@pytest.mark.parametrize("anchor", ["task_arithmetic", "pretrained"])
def test_compressed_tower_equals_factors_of_the_stacked_task_vectors(zoo, anchor):
    tower = upscale_to_wemoe(zoo, WEMoEConfig(lambda_=0.3, rank=3, anchor=anchor, blocks=[0]))
    layer = moe_layers(tower)[0]
    for part in MLP_PARTS:
        weight, vectors = _mlp_task_vectors(zoo, 0, part)
        stacked = torch.stack(vectors)
        us, v = lowrank.low_rank_factors(stacked, 3)
        anchored = weight + 0.3 * stacked.sum(dim=0) if anchor == "task_arithmetic" else weight
        up, down = lowrank.pack_factors(anchored, us, v)
        assert torch.equal(getattr(layer, f"{part}_up"), up)
        assert torch.equal(getattr(layer, f"{part}_down"), down)
