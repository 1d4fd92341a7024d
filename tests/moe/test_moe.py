"""WEMoE: untrained equals task arithmetic; the batched forward equals a per-sample loop (outputs and gradients)."""

import copy

import pytest
import torch

from tests.helpers import per_sample_reference, tiny_zoo
from wemoe.moe.layer import WEMoEConfig, moe_layers, router_parameters, upscale_to_wemoe
from wemoe.moe.routing_hooks import capture_routing
from wemoe.task_vector import task_vectors


@pytest.fixture(scope="module")
def zoo():
    return tiny_zoo(n_experts=3, seed=0, layers=3)


def _task_arithmetic_tower(zoo, lam):
    vectors = task_vectors(zoo.base_state, zoo.experts)
    return zoo.visual_with(sum(vectors.values()).apply_to(zoo.base_state, lam))


def test_untrained_wemoe_equals_task_arithmetic(zoo):
    images = torch.randn(5, 3, 32, 32)
    moe = upscale_to_wemoe(zoo, WEMoEConfig(lambda_=0.3))
    ta = _task_arithmetic_tower(zoo, 0.3)
    with torch.no_grad():
        assert (moe(images) - ta(images)).abs().max() <= 1e-5


def test_only_routers_train(zoo):
    moe = upscale_to_wemoe(zoo, WEMoEConfig(blocks=[1]))
    trainable = {n for n, p in moe.named_parameters() if p.requires_grad}
    assert trainable and all(".mlp.router." in n for n in trainable)
    assert list(moe_layers(moe)) == [1]
    assert len(router_parameters(moe)) == 4  # Linear(d,d) + Linear(d,T): weights and biases


def test_router_initialisation_follows_the_seed_and_leaves_the_global_random_state_alone(zoo):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = router_parameters(upscale_to_wemoe(zoo, WEMoEConfig(seed=0)))
    assert torch.equal(torch.rand(1), expected_next)  # upscaling drew nothing from the global generator
    again = router_parameters(upscale_to_wemoe(zoo, WEMoEConfig(seed=0)))
    other = router_parameters(upscale_to_wemoe(zoo, WEMoEConfig(seed=1)))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])  # the hidden layer's random weights differ


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hidden_layers", [0, 1, 2])
def test_batched_forward_matches_per_sample_loop(zoo, hidden_layers, dtype):
    moe = upscale_to_wemoe(zoo, WEMoEConfig(router_hidden_layers=hidden_layers))
    layer = moe_layers(moe)[0].to(dtype)
    torch.manual_seed(1)
    for p in layer.router.parameters():  # trained-looking routers, so samples get different weights
        p.data.normal_(0, 0.3)
    x = torch.randn(4, 5, 64, dtype=dtype, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    reference_layer = copy.deepcopy(layer)

    out = layer(x)
    expected = per_sample_reference(reference_layer, x_ref)
    assert (out - expected).abs().max() <= 1e-5

    weights = torch.randn_like(out) / out.numel()  # a mean-type loss, like the adaptation's
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    for p, q in zip(layer.router.parameters(), reference_layer.router.parameters(), strict=True):
        assert (p.grad - q.grad).abs().max() <= (1e-5 if dtype == torch.float32 else 1e-12)
    assert (x.grad - x_ref.grad).abs().max() <= 1e-5


def test_routing_is_per_sample(zoo):
    moe = upscale_to_wemoe(zoo)
    for p in router_parameters(moe):
        p.data.normal_(0, 0.5)
    images = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        together = moe(images)
        alone = torch.cat([moe(images[i : i + 1]) for i in range(6)])
    assert (together - alone).abs().max() <= 1e-5


def test_capture_routing_records_every_sample_and_layer(zoo):
    moe = upscale_to_wemoe(zoo, WEMoEConfig(lambda_=0.25))
    with torch.no_grad(), capture_routing(moe) as record:
        moe(torch.randn(3, 3, 32, 32))
        moe(torch.randn(2, 3, 32, 32))
    assert sorted(record.layers) == [0, 1, 2]
    assert record.stacked().shape == (5, 3, 3)
    assert torch.allclose(record.stacked(), torch.full((5, 3, 3), 0.25))
    with torch.no_grad(), capture_routing(moe, per_token=True) as tokens:
        moe(torch.randn(2, 3, 32, 32))
    assert tokens.layers[0].shape == (2, 17, 3)  # 16 patches + class token
    assert all(layer.recorder is None for layer in moe_layers(moe).values())


def test_ensembled_linear_gradients_pass_gradcheck():
    from wemoe.moe.ensembled_linear import Workspace, stacked_ensembled_linear

    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    routing = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    weight, weight_tvs = torch.randn(6, 5, dtype=torch.float64), torch.randn(2, 6, 5, dtype=torch.float64)
    bias, bias_tvs = torch.randn(6, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    stack = torch.cat([weight_tvs, weight.unsqueeze(0)])
    for workspace in (None, Workspace()):  # fresh memory, and a kept buffer reused by forward and backward
        assert torch.autograd.gradcheck(
            lambda a, r, w=workspace: stacked_ensembled_linear(a, r, stack, bias, bias_tvs, w), (x, routing)
        )


def test_float32_router_gradients_match_float64_on_vit_b32_mlp_shapes():
    from wemoe.moe.ensembled_linear import stacked_ensembled_linear

    generator = torch.Generator().manual_seed(0)
    batch, tokens, d, hidden, experts = 4, 50, 768, 3072, 8  # ViT-B/32's c_fc, eight experts

    def draw(*shape, scale=1.0):
        return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale

    x, grad_out = draw(batch, tokens, d), draw(batch, tokens, hidden, scale=1e-3)
    routing = draw(batch, experts, scale=0.3)
    stack = torch.cat([draw(experts, hidden, d, scale=2e-3), draw(1, hidden, d, scale=0.02)])
    bias, bias_tvs = draw(hidden, scale=0.01), draw(experts, hidden, scale=1e-3)

    def router_gradient(dtype):
        r = routing.to(dtype).detach().clone().requires_grad_(True)
        out = stacked_ensembled_linear(x.to(dtype), r, stack.to(dtype), bias.to(dtype), bias_tvs.to(dtype))
        (out * grad_out.to(dtype)).sum().backward()
        return r.grad.double()

    exact, single = router_gradient(torch.float64), router_gradient(torch.float32)
    assert float((single - exact).abs().max() / exact.abs().max()) <= 1e-6


def test_workspace_is_reused_and_gives_the_same_outputs_and_gradients(zoo):
    moe = upscale_to_wemoe(zoo)
    workspaces = {id(layer.workspace) for layer in moe_layers(moe).values()}
    assert len(workspaces) == 1  # one scratch space per model, shared by its layers
    for p in router_parameters(moe):
        p.data.normal_(0, 0.3)
    images = torch.randn(6, 3, 32, 32)
    fresh = copy.deepcopy(moe)
    for layer in moe_layers(fresh).values():
        layer.workspace.max_bytes = 0  # never keep: every call allocates, as without a workspace
    outputs = {}
    for name, tower in (("kept", moe), ("fresh", fresh)):
        out = tower(images)
        out.square().mean().backward()
        outputs[name] = (out.detach(), [p.grad.clone() for p in router_parameters(tower)])
    assert (outputs["kept"][0] - outputs["fresh"][0]).abs().max() <= 1e-5
    for a, b in zip(outputs["kept"][1], outputs["fresh"][1], strict=True):
        assert (a - b).abs().max() <= 1e-5
    workspace = next(iter(moe_layers(moe).values())).workspace
    kept = workspace.kept_bytes()
    layer = moe_layers(moe)[0]
    largest = max(stack[0].numel() for stack in (layer.c_fc_weight_stack, layer.c_proj_weight_stack)) * 6 * 4
    assert kept == largest  # one buffer (per-sample weights, then their gradients), sized for the largest matrix
    assert moe_layers(fresh)[0].workspace.kept_bytes() == 0
    assert next(iter(moe_layers(fresh).values())).workspace is not workspace  # deepcopy gets its own
    workspace.release()
    assert workspace.kept_bytes() == 0


def test_two_threads_can_share_one_model(zoo):
    from concurrent.futures import ThreadPoolExecutor

    moe = upscale_to_wemoe(zoo)
    for p in router_parameters(moe):
        p.data.normal_(0, 0.3)
    batches = [torch.randn(4 + i, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    with torch.no_grad():
        expected = [moe(b) for b in batches]
        with ThreadPoolExecutor(max_workers=3) as pool:
            results = list(pool.map(moe, batches))
    for got, want in zip(results, expected, strict=True):
        assert (got - want).abs().max() <= 1e-5


def test_forced_routing_shortcut_equals_the_per_sample_path(zoo):
    from wemoe.moe.routing_hooks import force_routing

    moe = upscale_to_wemoe(zoo, WEMoEConfig(lambda_=0.3))
    images = torch.randn(4, 3, 32, 32)
    weights = torch.tensor([0.7, -0.2, 0.4])
    for layer in moe_layers(moe).values():  # routers that output exactly these weights for every image
        last = layer.router.net[-1]
        torch.nn.init.zeros_(last.weight)
        last.bias.data.copy_(weights)
    with torch.no_grad():
        per_sample = moe(images)
        with force_routing(moe, weights):
            shared = moe(images)
    assert (per_sample - shared).abs().max() <= 1e-5
    assert (per_sample - _task_arithmetic_tower(zoo, 0.3)(images)).abs().max() > 1e-3  # the weights matter


def test_a_model_used_under_inference_mode_still_trains(zoo):
    moe = upscale_to_wemoe(zoo)
    images = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        expected = moe(images).clone()  # the kept buffer is now an inference tensor
    out = moe(images)
    out.square().mean().backward()  # must not write into that buffer outside inference mode
    assert (out.detach() - expected).abs().max() <= 1e-5
    assert all(p.grad is not None for p in router_parameters(moe))
    with torch.inference_mode():
        assert (moe(images) - expected).abs().max() <= 1e-5
