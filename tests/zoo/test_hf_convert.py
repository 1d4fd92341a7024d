"""The Hugging Face -> open_clip conversion against an oracle: transformers' own forward on the same weights."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import TINY_CONFIG, TINY_MODEL, tiny_clip
from wemoe.errors import ZooError
from wemoe.loading import load_zoo
from wemoe.zoo.clip_models import create_clip
from wemoe.zoo.hf_convert import hf_vision_to_open_clip, is_hf_vision_state
from wemoe.zoo.sources import load_expert

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


def test_the_zoo_records_its_experts_source_layout(hf_setup):
    _, root = hf_setup
    zoo = load_zoo(_spec(root, {"vision": str(root / "vision"), "full": str(root / "full")}))
    assert zoo.info["expert_layouts"] == {"vision": "hf", "full": "hf"} and zoo.source_layout == "split"
    assert zoo.subset(["vision", "full"]).source_layout == "split"
    mixed = load_zoo(_spec(root, {"vision": str(root / "vision"), "open": dict(zoo.experts["full"])}))
    assert mixed.info["expert_layouts"] == {"vision": "hf", "open": "open_clip"} and mixed.source_layout == "fused"


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


# A Hugging Face CLIPModel base (item 18) and experts given without their config.json (item 17) ------------------


def _features(output) -> torch.Tensor:
    """transformers 5 returns a model output from get_*_features (projected pooler_output), 4.x a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _fine_tune(model, seed: int):
    """A CLIPVisionModel 'fine-tuned' from ``model``'s image tower: its weights plus 1% seeded noise."""
    vision = copy.deepcopy(model.vision_model).eval()  # a CLIPVisionModel in transformers 5
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in vision.parameters():
            param.add_(0.01 * param.abs().mean() * torch.randn(param.shape, generator=generator))
    return vision


@pytest.fixture(scope="module")
def hf_base(tmp_path_factory):
    """A saved CLIPModel base folder, a bare weights file of it, and a fine-tuned expert saved without config.json."""
    root = tmp_path_factory.mktemp("hf-base")
    model = _hf_clip(seed=3)
    model.save_pretrained(root / "base")
    (root / "bare-base").mkdir()
    (root / "bare-base" / "model.safetensors").write_bytes((root / "base" / "model.safetensors").read_bytes())
    expert = _fine_tune(model, seed=4)
    expert.save_pretrained(root / "expert")
    (root / "bare").mkdir()
    (root / "bare" / "model.safetensors").write_bytes((root / "expert" / "model.safetensors").read_bytes())
    return model, expert, root


def test_hf_clipmodel_base_converts_both_towers(hf_base):
    """Item 18: an HF CLIPModel as a folder, as local-dir: and as a file (with or without its config) is the base."""
    model, _, root = hf_base
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    bases = {
        "pretrained folder": {"model": "ViT-B-32", "pretrained": str(root / "base")},
        "local-dir": {"model": f"local-dir:{root / 'base'}"},
        "weights file in its folder": {"model": "ViT-B-32", "pretrained": str(root / "base" / "model.safetensors")},
        "bare weights file": {"model": TINY_MODEL, "model_config": TINY_CONFIG,
                              "pretrained": str(root / "bare-base" / "model.safetensors")},
    }
    for how, base in bases.items():
        zoo = load_zoo({**base, "experts": {"vision": str(root / "expert")}})
        tokens = zoo.tokenizer(["a photo of a cat.", "a diagram", ""])  # open_clip's BPE, as HF's CLIPTokenizer
        assert tokens.shape == (3, 77)
        with torch.no_grad():
            expected_text = _features(model.get_text_features(input_ids=tokens))
            expected_image = _features(model.get_image_features(pixel_values=pixels))
            text, image = zoo.clip.encode_text(tokens), zoo.clip.encode_image(pixels)
        assert text.shape == expected_text.shape and image.shape == expected_image.shape, how
        assert (text - expected_text).abs().max().item() <= 1e-5, how
        assert (image - expected_image).abs().max().item() <= 1e-5, how
        assert torch.equal(zoo.clip.logit_scale.detach(), model.logit_scale.detach()), how
        assert zoo.info["quick_gelu"] is True, how


def test_hf_base_refusals_say_what_is_wrong(hf_base, tmp_path, monkeypatch):
    import huggingface_hub.constants

    _, _, root = hf_base
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ZooError, match="'wemoe-tests/no-such-clip'.*hf download wemoe-tests/no-such-clip"):
        create_clip("ViT-B-32", "wemoe-tests/no-such-clip")  # a CLIPModel's hub id as the base's weights
    with pytest.raises(ZooError, match=r"without its config.json.*\"quick_gelu\": true"):
        create_clip("ViT-B-32", str(root / "bare-base" / "model.safetensors"))  # activation unknown
    with pytest.raises(ZooError, match="config says how it was trained"):
        create_clip("ViT-B-32", str(root / "base"), quick_gelu=False)
    with pytest.raises(ZooError, match="a CLIPVisionModel can only be an expert"):
        create_clip(f"local-dir:{root / 'expert'}")
    config = json.loads((root / "base" / "config.json").read_text())
    config["text_config"]["hidden_act"] = "gelu"
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((root / "base" / "model.safetensors").read_bytes())
    with pytest.raises(ZooError, match="one activation"):
        create_clip("ViT-B-32", str(tmp_path))


def test_expert_without_config_takes_a_stated_base_activation_or_is_refused(hf_base, tmp_path):
    """Item 17: a bare HF model.safetensors on a base whose activation is only a default (GELU) was taken silently."""
    model, expert, root = hf_base
    bare = str(root / "bare" / "model.safetensors")
    # the same base weights as an open_clip checkpoint, its activation left to open_clip's default (GELU)
    gelu_base = tmp_path / "base.safetensors"
    clip, _, _ = tiny_clip(seed=1)
    proj = model.visual_projection.weight.T
    clip.visual.load_state_dict(hf_vision_to_open_clip(model.vision_model.state_dict(), proj))
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(gelu_base))
    no_act = {k: v for k, v in TINY_CONFIG.items() if k != "quick_gelu"}
    spec = {"model": f"{TINY_MODEL}-noact", "model_config": no_act, "pretrained": str(gelu_base)}
    with pytest.raises(ZooError, match=r"'bare' is a Hugging Face CLIP checkpoint without its config.json.*hidden_act"):
        load_zoo({**spec, "experts": {"bare": bare}})
    # its config.json next to the weights file is read: the expert's quick_gelu against the GELU base is refused
    with pytest.raises(ZooError, match="activation 'quick_gelu' but the base uses 'gelu'"):
        load_zoo({**spec, "experts": {"file": str(root / "expert" / "model.safetensors")}})
    # a stated activation (the spec's quick_gelu, or the HF base's config) is the fine-tuned expert's: features match
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model.visual_projection(expert(pixel_values=pixels).pooler_output)
    for base in ({**spec, "quick_gelu": True}, {"model": f"local-dir:{root / 'base'}"}):
        zoo = load_zoo({**base, "experts": {"bare": bare}})
        with torch.no_grad():
            assert (zoo.expert_visual("bare")(pixels) - expected).abs().max().item() <= 1e-5
    # an expert that is not a fine-tune of the base (QuickGELU stated, other weights) says nothing about its activation
    other, _, _ = tiny_clip(seed=7)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ZooError, match="not a fine-tune of this base"):
        load_zoo({"model": TINY_MODEL, "model_config": TINY_CONFIG, "pretrained": str(tmp_path / "other.safetensors"),
                  "experts": {"bare": bare}})


@pytest.mark.slow
def test_real_vit_b_32_clipmodel_base_converts(tmp_path):
    """openai/clip-vit-base-patch32 shapes (random weights, no download) as a base: both towers against transformers."""
    config = transformers.CLIPConfig(  # the config of openai/clip-vit-base-patch32 (transformers' defaults)
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=32, hidden_act="quick_gelu"),
        text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                         max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu"),
        projection_dim=512,
    )
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(tmp_path / "base")
    model = transformers.CLIPModel.from_pretrained(tmp_path / "base").eval()
    clip, _, tokenizer = create_clip("ViT-B-32", str(tmp_path / "base"))
    tokens = tokenizer(["a photo of a dog.", "a satellite photo of a river"])
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        text = (clip.encode_text(tokens) - _features(model.get_text_features(input_ids=tokens))).abs().max().item()
        expected = _features(model.get_image_features(pixel_values=pixels))
        image = (clip.encode_image(pixels) - expected).abs().max().item()
    assert text <= 1e-5 and image <= 1e-5, (text, image)  # measured: 3.3e-6 and 2.9e-6
