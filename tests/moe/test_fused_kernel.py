"""The fused CPU kernel equals the torch-op formulation, on awkward shapes too; without a compiler WEMoE falls back."""

import shutil

import pytest
import torch

from tests.helpers import tiny_zoo
from wemoe.moe import fused_kernel
from wemoe.moe.ensembled_linear import stacked_ensembled_linear
from wemoe.moe.layer import WEMoEConfig, upscale_to_wemoe

needs_compiler = pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler on this machine")


def _torch_ops(x, routing, stack, bias, bias_tvs):
    """The reference: every sample's weights built explicitly, then a batched matmul (no kernel)."""
    weights = torch.einsum("bt,toi->boi", torch.cat([routing, routing.new_ones(len(routing), 1)], 1), stack)
    return torch.einsum("bni,boi->bno", x, weights) + (bias + routing @ bias_tvs).unsqueeze(1)


def _layer(batch, tokens, experts, out_features, in_features, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, tokens, in_features, generator=g)
    routing = torch.rand(batch, experts, generator=g)
    stack = torch.randn(experts + 1, out_features, in_features, generator=g) / in_features**0.5
    return x, routing, stack, torch.randn(out_features, generator=g), torch.randn(experts, out_features, generator=g)


@needs_compiler
def test_the_kernel_builds_on_this_machine():
    assert fused_kernel.available(), "g++ is here, so the kernel must build (see the warning logged by load())"


@needs_compiler
@pytest.mark.parametrize(
    "batch,tokens,experts,out_features,in_features",
    [
        (16, 50, 8, 96, 64),  # ViT-B/32's token count and T
        (3, 7, 3, 37, 21),  # nothing a multiple of a vector or a tile
        (1, 1, 1, 1, 1),
        (2, 13, 20, 40, 48),  # T + 1 > 17: the generic build path
        (5, 25, 2, 64, 300),  # several input chunks, token blocks of 12 and 13
    ],
)
def test_kernel_equals_torch_ops(batch, tokens, experts, out_features, in_features):
    args = _layer(batch, tokens, experts, out_features, in_features)
    y = fused_kernel.ensembled_linear_forward(*args)
    assert y is not None
    assert (y - _torch_ops(*args)).abs().max() <= 1e-5


@needs_compiler
def test_kernel_threads_give_the_same_result():
    args = _layer(4, 10, 3, 200, 40)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fused_kernel.ensembled_linear_forward(*args)
        torch.set_num_threads(2)
        two = fused_kernel.ensembled_linear_forward(*args)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)  # threads split output tiles, so every sum runs in the same order


def test_kernel_declines_what_it_does_not_handle():
    args = [t.double() for t in _layer(2, 3, 2, 8, 8)]
    assert fused_kernel.ensembled_linear_forward(*args) is None


def test_auto_policy_uses_the_kernel_only_where_it_measured_faster(monkeypatch):
    monkeypatch.delenv(fused_kernel.ENV_SWITCH, raising=False)
    monkeypatch.setenv("WEMOE_KERNEL_POLICY", "builtin")  # the built-in rule, whatever this machine has measured
    assert fused_kernel.worthwhile(16, 50, 3072, 768)  # ViT-B/32's MLP at batch 16
    assert fused_kernel.worthwhile(64, 50, 768, 3072)
    assert not fused_kernel.worthwhile(1, 50, 3072, 768)  # one uploaded image
    assert not fused_kernel.worthwhile(16, 197, 3072, 768)  # ViT-B/16: long matmuls, MKL wins
    assert not fused_kernel.worthwhile(96, 17, 512, 128)  # the pocket zoo
    assert fused_kernel.worthwhile(16, 50, 3072, 768, 16)
    assert not fused_kernel.worthwhile(16, 50, 3072, 768, 20)  # beyond the kernel's unrolled paths
    monkeypatch.setenv(fused_kernel.ENV_SWITCH, "1")
    assert fused_kernel.worthwhile(1, 17, 512, 128)
    monkeypatch.setenv(fused_kernel.ENV_SWITCH, "0")
    assert not fused_kernel.worthwhile(16, 50, 3072, 768)


@needs_compiler
def test_switch_off_gives_the_same_wemoe_outputs(monkeypatch):
    monkeypatch.setenv(fused_kernel.ENV_SWITCH, "1")  # the tiny zoo is far below the auto policy's sizes
    zoo = tiny_zoo(n_experts=3, seed=1, layers=2)
    moe = upscale_to_wemoe(zoo, WEMoEConfig(lambda_=0.3))
    for p in moe.parameters():
        if p.requires_grad:
            p.data.normal_(0, 0.05)  # routing that differs per image
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        fused = moe(images)
        monkeypatch.setenv(fused_kernel.ENV_SWITCH, "0")
        assert fused_kernel.ensembled_linear_forward(*_layer(2, 3, 2, 8, 8)) is None
        plain = moe(images)
    assert (fused - plain).abs().max() <= 1e-5


def test_without_a_compiler_wemoe_falls_back_to_torch_ops(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("WEMOE_KERNEL_CACHE", str(tmp_path / "cache"))
    fused_kernel.load.cache_clear()
    try:
        with caplog.at_level("WARNING"):
            assert fused_kernel.ensembled_linear_forward(*_layer(2, 3, 2, 8, 8)) is None
        assert "no C++ compiler" in caplog.text
        args = _layer(2, 3, 2, 8, 8)
        assert (stacked_ensembled_linear(*args) - _torch_ops(*args)).abs().max() <= 1e-5
    finally:
        fused_kernel.load.cache_clear()


def test_a_failed_build_falls_back_with_the_compiler_message(monkeypatch, tmp_path, caplog):
    broken = tmp_path / "cxx"
    broken.write_text(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo broken 1.0; exit 0; fi\necho 'syntax error' >&2\nexit 1\n"
    )
    broken.chmod(0o755)
    monkeypatch.setenv("CXX", str(broken))
    monkeypatch.setenv("WEMOE_KERNEL_CACHE", str(tmp_path / "cache"))
    fused_kernel.load.cache_clear()
    try:
        with caplog.at_level("WARNING"):
            assert not fused_kernel.available()
        assert "syntax error" in caplog.text
    finally:
        fused_kernel.load.cache_clear()
