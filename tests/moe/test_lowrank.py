"""Low-rank (compressed) WEMoE experts: full rank is exact WEMoE; rank k is exact WEMoE of the rank-k task vectors
(outputs and router gradients); untrained it is task arithmetic of the rank-k vectors; it exports and reloads."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.helpers import per_sample_reference, tiny_zoo
from wemoe.evaluation.export import load_wemoe, save_wemoe
from wemoe.methods import get_method
from wemoe.methods.wemoe_compressed import DEFAULT_RANK
from wemoe.moe import lowrank
from wemoe.moe.layer import (
    ANCHORS,
    MLP_PARTS,
    PRETRAINED,
    TASK_ARITHMETIC,
    LowRankWeightEnsemblingMLP,
    WEMoEConfig,
    moe_layers,
    router_parameters,
    upscale_to_wemoe,
)
from wemoe.moe.routing_hooks import force_routing
from wemoe.task_vector import task_vectors
from wemoe.zoo.zoo import Zoo

WIDTH = 64  # tiny_zoo's token width: its MLP matrices are 256 x 64, so rank 64 is full rank


@pytest.fixture(scope="module")
def zoo() -> Zoo:
    return tiny_zoo(n_experts=3, seed=0, layers=3)


def rank_k_zoo(zoo: Zoo, rank: int, anchor_scale: float = 0.0) -> Zoo:
    """``zoo`` with every expert's MLP weight task vectors tau_t replaced by their top-``rank`` singular components
    tau~_t; with ``anchor_scale`` a > 0 also the base's MLP weights moved to ``W_0 + a * sum_t (tau_t - tau~_t)``:
    the exact WEMoE that a low-rank WEMoE anchored at task arithmetic (lambda a) equals."""
    base = zoo.base_state
    new_base = {k: v.clone() for k, v in base.items()}
    experts = {name: dict(state) for name, state in zoo.experts.items()}
    for key, value in base.items():
        if ".mlp." in key and key.endswith(".weight"):
            low = {}
            for name, state in zoo.experts.items():
                us, v = lowrank.low_rank_factors((state[key] - value).unsqueeze(0), rank)
                low[name] = us[0] @ v[0].T
            new_base[key] = value + anchor_scale * sum(zoo.experts[n][key] - value - low[n] for n in low)
            for name in experts:
                experts[name][key] = new_base[key] + low[name]
    clip = copy.deepcopy(zoo.clip)
    clip.visual.load_state_dict(new_base)
    return Zoo(zoo.name, clip, experts, zoo.preprocess, zoo.tokenizer)


def trained_routers(*towers: torch.nn.Module, seed: int = 1) -> None:
    """Give every tower the same random router weights, so samples route differently (and alike in each tower)."""
    generator = torch.Generator().manual_seed(seed)
    values = [torch.randn(p.shape, generator=generator) * 0.3 for p in router_parameters(towers[0])]
    for tower in towers:
        with torch.no_grad():
            for p, value in zip(router_parameters(tower), values, strict=True):
                p.copy_(value)


def outputs_and_router_grads(tower: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The tower's output, and the routers' gradients of the mean squared output."""
    params = router_parameters(tower)
    for p in params:
        p.grad = None
    out = tower(images)
    out.square().mean().backward()
    return out.detach(), [p.grad.clone() for p in params]


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def images(n: int = 5, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("anchor", ANCHORS)
def test_full_rank_equals_exact_wemoe(zoo, anchor):
    exact = upscale_to_wemoe(zoo)
    full = upscale_to_wemoe(zoo, WEMoEConfig(rank=WIDTH, anchor=anchor))
    trained_routers(exact, full)
    assert all(layer.rank(part) == WIDTH for layer in moe_layers(full).values() for part in MLP_PARTS)
    out_exact, grads_exact = outputs_and_router_grads(exact, images())
    out_full, grads_full = outputs_and_router_grads(full, images())
    assert (out_full - out_exact).abs().max() <= 1e-5
    assert max_diff(grads_full, grads_exact) <= 1e-5


def test_a_rank_above_full_keeps_full_rank(zoo):
    tower = upscale_to_wemoe(zoo, WEMoEConfig(rank=10_000, blocks=[0]))
    assert moe_layers(tower)[0].rank("c_fc") == moe_layers(tower)[0].rank("c_proj") == WIDTH


@pytest.mark.parametrize("rank", [1, 4, 16])
@pytest.mark.parametrize("anchor", ANCHORS)
def test_rank_k_equals_exact_wemoe_of_the_rank_k_task_vectors(zoo, rank, anchor):
    """Plain (anchor pretrained): exact WEMoE of the rank-k task vectors. Anchored at task arithmetic: the same, on
    the pretrained weights ``W_0 + lambda * sum_t (tau_t - tau~_t)`` that keep task arithmetic's merge exact."""
    compressed = upscale_to_wemoe(zoo, WEMoEConfig(rank=rank, anchor=anchor))
    exact_of_rank_k = upscale_to_wemoe(rank_k_zoo(zoo, rank, 0.3 if anchor == TASK_ARITHMETIC else 0.0))
    trained_routers(compressed, exact_of_rank_k)
    out_c, grads_c = outputs_and_router_grads(compressed, images())
    out_e, grads_e = outputs_and_router_grads(exact_of_rank_k, images())
    assert (out_c - out_e).abs().max() <= 1e-5
    assert max_diff(grads_c, grads_e) <= 1e-5
    assert (out_c - outputs_and_router_grads(upscale_to_wemoe(zoo), images())[0]).abs().max() > 1e-4  # k < full differs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("anchor", ANCHORS)
def test_the_low_rank_layer_matches_the_per_sample_loop(zoo, dtype, anchor):
    layer = moe_layers(upscale_to_wemoe(zoo, WEMoEConfig(rank=4, anchor=anchor)))[1].to(dtype)
    assert isinstance(layer, LowRankWeightEnsemblingMLP)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():  # trained-looking routers, so samples get different weights
        for p in layer.router.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=dtype) * 0.3)
    x = torch.randn(4, 5, WIDTH, dtype=dtype, generator=torch.Generator().manual_seed(6), requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    reference = copy.deepcopy(layer)
    out, expected = layer(x), per_sample_reference(reference, x_ref)
    assert (out - expected).abs().max() <= 1e-5
    weights = torch.randn(out.shape, dtype=dtype, generator=torch.Generator().manual_seed(7)) / out.numel()
    (out * weights).sum().backward()  # a mean-type loss, like the adaptation's
    (expected * weights).sum().backward()
    assert (x.grad - x_ref.grad).abs().max() <= 1e-5
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    assert max_diff([p.grad for p in layer.router.parameters()],
                    [p.grad for p in reference.router.parameters()]) <= tolerance


def test_low_rank_linear_gradients_pass_gradcheck():
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=torch.float64, generator=generator)

    x, routing = randn(3, 4, 5).requires_grad_(True), randn(3, 2).requires_grad_(True)
    up, down = lowrank.pack_factors(randn(6, 5), randn(2, 6, 3), randn(2, 5, 3))
    bias, bias_tvs = randn(6), randn(2, 6)
    for anchor in (0.0, 0.3):
        assert torch.autograd.gradcheck(
            lambda a, r, anchor=anchor: lowrank.lowrank_ensembled_linear(a, r, up, down, bias, bias_tvs, anchor),
            (x, routing))


def test_untrained_compressed_wemoe_equals_task_arithmetic_of_the_rank_k_vectors(zoo):
    rank = 4
    small = rank_k_zoo(zoo, rank)
    vectors = task_vectors(small.base_state, small.experts)
    ta = small.visual_with(sum(vectors.values()).apply_to(small.base_state, 0.3))
    compressed = get_method("wemoe")(zoo, rank=rank, anchor=PRETRAINED)
    with torch.no_grad():
        assert (compressed(images()) - ta(images())).abs().max() <= 1e-5


@pytest.mark.parametrize("rank", [1, 4])
def test_untrained_wemoe_anchored_at_task_arithmetic_is_task_arithmetic_itself(zoo, rank):
    """The anchor keeps task arithmetic's merge exact: untrained routers (r = lambda) give it whatever k."""
    vectors = task_vectors(zoo.base_state, zoo.experts)
    ta = zoo.visual_with(sum(vectors.values()).apply_to(zoo.base_state, 0.3))
    compressed = get_method("wemoe")(zoo, rank=rank)  # the default anchor
    assert compressed.wemoe_config.anchor == TASK_ARITHMETIC
    with torch.no_grad():
        assert (compressed(images()) - ta(images())).abs().max() <= 1e-5
        plain = get_method("wemoe")(zoo, rank=rank, anchor=PRETRAINED)
        assert (plain(images()) - ta(images())).abs().max() > 1e-4  # the plain form truncates the merge itself


@pytest.mark.parametrize("anchor", ANCHORS)
def test_forced_routing_uses_the_rank_k_vectors(zoo, anchor):
    rank = 4
    compressed = upscale_to_wemoe(zoo, WEMoEConfig(rank=rank, anchor=anchor))
    exact_of_rank_k = upscale_to_wemoe(rank_k_zoo(zoo, rank, 0.3 if anchor == TASK_ARITHMETIC else 0.0))
    with torch.no_grad(), force_routing(compressed, [0.0, 1.0, 0.5]), force_routing(exact_of_rank_k, [0.0, 1.0, 0.5]):
        assert (compressed(images()) - exact_of_rank_k(images())).abs().max() <= 1e-5


def test_compressed_experts_hold_t_k_in_plus_out_floats_per_matrix(zoo):
    rank = 4
    layer = moe_layers(upscale_to_wemoe(zoo, WEMoEConfig(rank=rank)))[0]
    experts = layer.num_experts
    for part in MLP_PARTS:
        out_features, in_features = getattr(layer, f"{part}_weight").shape
        extra = (getattr(layer, f"{part}_up").numel() - out_features * in_features
                 + getattr(layer, f"{part}_down").numel())
        assert extra == experts * rank * (in_features + out_features)


def test_export_round_trip_gives_identical_outputs(zoo, tmp_path):
    tower = get_method("wemoe_compressed")(zoo, blocks="0,2")
    trained_routers(tower, seed=7)
    path = save_wemoe(tower, tmp_path / "compressed.safetensors")
    again = load_wemoe(path, zoo.visual)
    assert again.wemoe_config == tower.wemoe_config and again.wemoe_config.rank == DEFAULT_RANK
    assert all(isinstance(layer, LowRankWeightEnsemblingMLP) for layer in moe_layers(again).values())
    with torch.no_grad():
        assert torch.equal(again(images()), tower(images()))
    assert all(p.requires_grad for p in router_parameters(again))
    exact = save_wemoe(get_method("wemoe")(zoo, blocks="0,2"), tmp_path / "exact.safetensors")
    assert path.stat().st_size < exact.stat().st_size


def test_a_compressed_model_saved_before_anchors_reloads_as_the_plain_form(zoo, tmp_path):
    """Files written before ``anchor`` existed have no such key: they hold the plain (pretrained-anchored) form."""
    import json

    from safetensors.torch import load_file, save_file

    from wemoe.evaluation.export import read_metadata

    tower = get_method("wemoe")(zoo, rank=4, anchor=PRETRAINED)
    trained_routers(tower, seed=9)
    path = save_wemoe(tower, tmp_path / "plain.safetensors")
    metadata = read_metadata(path)
    config = json.loads(metadata["config"])
    del config["anchor"]
    save_file(load_file(str(path)), str(path), metadata={**metadata, "config": json.dumps(config)})
    again = load_wemoe(path, zoo.visual)
    assert again.wemoe_config.anchor == PRETRAINED
    with torch.no_grad():
        assert torch.equal(again(images()), tower(images()))


def test_energy_kept_is_one_at_full_rank_and_grows_with_k(zoo):
    key = "transformer.resblocks.0.mlp.c_fc.weight"
    tvs = torch.stack([state[key] - zoo.base_state[key] for state in zoo.experts.values()])
    shares = [lowrank.energy_kept(tvs, k) for k in (1, 8, 32, WIDTH)]
    assert all(bool((a < b).all()) for a, b in zip(shares, shares[1:], strict=False))
    assert torch.allclose(shares[-1], torch.ones(3, dtype=torch.float64))


def test_the_compressed_method_is_wemoe_with_its_own_default_rank(zoo):
    tower = get_method("wemoe_compressed")(zoo)
    assert tower.wemoe_config.rank == DEFAULT_RANK
    assert get_method("wemoe").resolve()["rank"] == 0


def test_matmul_t_through_the_kernel_equals_torch():
    from wemoe.moe import fused_kernel

    generator = torch.Generator().manual_seed(8)
    x = torch.randn(lowrank.KERNEL_MIN_ROWS + 3, 40, generator=generator, requires_grad=True)
    weight = torch.randn(24, 40, generator=generator)
    y = lowrank.matmul_t(x, weight)
    if fused_kernel.available():
        assert y.grad_fn is not None and "KernelMatmul" in type(y.grad_fn).__name__
    assert (y - x.detach() @ weight.T).abs().max() <= 1e-5
    y.sum().backward()
    assert torch.allclose(x.grad, torch.ones(x.shape[0], 24) @ weight)
    with fused_kernel.switched("0"):
        assert "KernelMatmul" not in type(lowrank.matmul_t(x, weight).grad_fn).__name__


def test_model_bytes_counts_the_factors_instead_of_the_task_vectors(zoo):
    from wemoe.moe.layer import model_bytes

    ta = model_bytes(get_method("task_arithmetic")(zoo))
    exact, compressed = model_bytes(get_method("wemoe")(zoo)), model_bytes(get_method("wemoe")(zoo, rank=4))
    assert ta < compressed < exact
    layers = moe_layers(upscale_to_wemoe(zoo, WEMoEConfig(rank=4))).values()
    factors = sum(3 * 4 * (64 + 256) * 4 * 2 for _ in layers)  # T * k * (in + out) floats, 2 matrices per layer
    assert exact - compressed == pytest.approx(3 * 256 * 64 * 4 * 2 * len(layers) - factors, abs=0)
