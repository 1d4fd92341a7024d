"""The Hugging Face -> open_clip conversion against an oracle: transformers' own forward on the same weights."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import TINY_CONFIG, TINY_MODEL, tiny_clip
from wemoe.errors import ZooError
from wemoe.hf_convert import hf_vision_to_open_clip, is_hf_vision_state
from wemoe.sources import create_clip, load_expert
from wemoe.zoo import load_zoo

transformers = pytest.importorskip("transformers")


def _hf_clip(seed: int = 0):
    """A tiny random transformers CLIPModel shaped like TINY_CONFIG, every weight perturbed (LNs not at 1/0)."""
    vision, text = TINY_CONFIG["vision_cfg"], TINY_CONFIG["text_cfg"]
    config = transformers.CLIPConfig(
        vision_config=dict(
            hidden_size=vision["width"],
            intermediate_size=4 * vision["width"],
            num_hidden_layers=vision["layers"],
            num_attention_heads=vision["width"] // vision["head_width"],
            image_size=vision["image_size"],
            patch_size=vision["patch_size"],
            hidden_act="quick_gelu",
        ),
        text_config=dict(
            hidden_size=text["width"],
            intermediate_size=4 * text["width"],
            num_hidden_layers=text["layers"],
            num_attention_heads=text["heads"],
            vocab_size=text["vocab_size"],
            max_position_embeddings=text["context_length"],
        ),
        projection_dim=TINY_CONFIG["embed_dim"],
    )
    torch.manual_seed(seed)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


def _oracle(model, pixels: torch.Tensor) -> torch.Tensor:
    """transformers' image features: the pooled output (post-LN class token) through the visual projection."""
    with torch.no_grad():
        return model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)


@pytest.fixture(scope="module")
def hf_setup(tmp_path_factory):
    """A saved CLIPVisionModel folder, the full CLIPModel folder, and an open_clip base holding HF's projection."""
    root = tmp_path_factory.mktemp("hf")
    model = _hf_clip()
    model.vision_model.save_pretrained(root / "vision")
    model.save_pretrained(root / "full")
    clip, _, _ = tiny_clip(seed=1)
    state = clip.state_dict()
    state["visual.proj"] = model.visual_projection.weight.detach().T.contiguous()
    save_file({k: v.contiguous() for k, v in state.items()}, str(root / "base.safetensors"))
    return model, root


def _spec(root, experts):
    return {
        "model": TINY_MODEL,
        "model_config": TINY_CONFIG,
        "pretrained": str(root / "base.safetensors"),
        "experts": experts,
    }


def test_converted_tower_matches_transformers(hf_setup):
    model, root = hf_setup
    zoo = load_zoo(_spec(root, {"vision": str(root / "vision"), "full": str(root / "full")}))
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = _oracle(model, pixels)
    for task in ("vision", "full"):
        with torch.no_grad():
            got = zoo.expert_visual(task)(pixels)
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() <= 1e-5
    # the base's own tower is different weights: the comparison above is not vacuous
    with torch.no_grad():
        assert (zoo.visual(pixels) - expected).abs().max().item() > 1e-2


def test_transformers4_prefixed_keys_convert_the_same(hf_setup):
    model, _ = hf_setup
    bare = model.vision_model.state_dict()
    prefixed = {f"vision_model.{k}": v for k, v in bare.items()}
    proj = model.visual_projection.weight.detach().T
    assert is_hf_vision_state(bare) and is_hf_vision_state(prefixed)
    a, b = hf_vision_to_open_clip(bare, proj), hf_vision_to_open_clip(prefixed, proj)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_hf_key_is_named(hf_setup):
    model, _ = hf_setup
    state = dict(model.vision_model.state_dict())
    state["encoder.layers.0.adapter.weight"] = torch.zeros(1)
    with pytest.raises(ZooError, match="adapter"):
        hf_vision_to_open_clip(state, model.visual_projection.weight.T)


def test_activation_mismatch_is_refused(hf_setup, tmp_path):
    _, root = hf_setup
    folder = tmp_path / "gelu"
    folder.mkdir()
    config = json.loads((root / "vision" / "config.json").read_text())
    config["hidden_act"] = "gelu"
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes((root / "vision" / "model.safetensors").read_bytes())
    with pytest.raises(ZooError, match="activation 'gelu' but the base uses 'quick_gelu'"):
        load_zoo(_spec(root, {"gelu": str(folder)}))


@pytest.mark.slow
def test_real_vit_b_32_architecture_converts(tmp_path):
    """OpenAI ViT-B/32 shapes (random weights, no download): open_clip ViT-B-32 + QuickGELU vs transformers."""
    config = transformers.CLIPVisionConfig(  # the vision config of openai/clip-vit-base-patch32
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=32,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    torch.manual_seed(0)
    transformers.CLIPVisionModel(config).save_pretrained(tmp_path / "expert")
    expert = transformers.CLIPVisionModel.from_pretrained(tmp_path / "expert").eval()
    clip, _, _ = create_clip("ViT-B-32", quick_gelu=True)
    tower = clip.visual
    tower.load_state_dict(load_expert("mnist", str(tmp_path / "expert"), clip))
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = expert(pixel_values=pixels).pooler_output @ tower.proj
        got = tower(pixels)
    assert (got - expected).abs().max().item() <= 1e-4
