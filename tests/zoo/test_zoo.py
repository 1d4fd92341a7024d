"""Loading zoos: local checkpoints round trip, open_clip tags, and every error a user can act on."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import TINY_CONFIG, TINY_MODEL, tiny_zoo
from wemoe.errors import ZooError
from wemoe.loading import load_zoo
from wemoe.zoo.checkpoints import read_weights
from wemoe.zoo.clip_models import (
    create_clip,
    open_clip,  # the module clip_models uses (imported after the torchvision shim)
)
from wemoe.zoo.presets import PRESETS, get_preset
from wemoe.zoo.zoo import ZooSpec


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny zoo written to disk: the base as a full CLIP safetensors, experts in three layouts."""
    root = tmp_path_factory.mktemp("zoo")
    zoo = tiny_zoo(n_experts=3, seed=0)
    base = {k: v.contiguous() for k, v in zoo.clip.state_dict().items()}
    save_file(base, str(root / "base.safetensors"))
    save_file(zoo.experts["task0"], str(root / "tower.safetensors"))  # image tower only
    full = dict(base, **{f"visual.{k}": v for k, v in zoo.experts["task1"].items()})
    save_file(full, str(root / "full.safetensors"))  # a full CLIP state dict, open_clip layout
    torch.save({"state_dict": {f"module.{k}": v for k, v in zoo.experts["task2"].items()}}, root / "wrapped.pt")
    return zoo, root


def _spec(root, **experts):
    return {
        "model": TINY_MODEL,
        "model_config": TINY_CONFIG,
        "pretrained": str(root / "base.safetensors"),
        "name": "disk",
        "experts": {k: str(root / v) for k, v in experts.items()},
    }


def test_local_checkpoints_round_trip(saved):
    zoo, root = saved
    loaded = load_zoo(_spec(root, task0="tower.safetensors", task1="full.safetensors", task2="wrapped.pt"))
    assert loaded.name == "disk" and loaded.task_names == ["task0", "task1", "task2"]
    for key, value in zoo.clip.state_dict().items():
        assert torch.equal(loaded.clip.state_dict()[key], value), key
    for task in zoo.task_names:
        assert loaded.experts[task].keys() == zoo.experts[task].keys()
        assert all(torch.equal(loaded.experts[task][k], v) for k, v in zoo.experts[task].items()), task
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.expert_visual("task1")(x), zoo.expert_visual("task1")(x))
    assert loaded.info["experts"]["task2"].endswith("wrapped.pt")


def test_json_spec_file_and_zoospec(saved, tmp_path):
    _, root = saved
    spec = _spec(root, task0="tower.safetensors")
    (tmp_path / "zoo.json").write_text(json.dumps(spec))
    from_file = load_zoo(str(tmp_path / "zoo.json"))
    from_spec = load_zoo(ZooSpec.from_mapping(spec))
    assert torch.equal(from_file.experts["task0"]["proj"], from_spec.experts["task0"]["proj"])


def test_progress_reports_base_then_each_expert(saved):
    _, root = saved
    calls = []
    load_zoo(
        _spec(root, task0="tower.safetensors", task1="full.safetensors"), progress=lambda f, m: calls.append((f, m))
    )
    fractions = [f for f, _ in calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert "base" in calls[0][1]
    assert any("task0" in m for _, m in calls) and any("task1" in m for _, m in calls)


def test_pickles_beyond_tensors_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "config": open_clip.CLIP}, path)  # a class: needs full unpickling
    with pytest.raises(ZooError, match="weights_only=True"):
        read_weights(path)


def test_missing_files(saved, tmp_path):
    _, root = saved
    with pytest.raises(ZooError, match=r"Expert 'task0'.*does not exist"):
        load_zoo(_spec(root, task0="nowhere.safetensors"))
    spec = _spec(root, task0="tower.safetensors")
    spec["pretrained"] = str(tmp_path / "no-base.safetensors")
    with pytest.raises(ZooError, match="Base checkpoint .*no-base.safetensors.* does not exist"):
        load_zoo(spec)
    with pytest.raises(ZooError, match="no-such.json.* does not exist"):
        load_zoo(str(tmp_path / "no-such.json"))
    (tmp_path / "hf").mkdir()
    with pytest.raises(ZooError, match="holds no Hugging Face weights"):
        load_zoo({**spec, "pretrained": str(root / "base.safetensors"), "experts": {"x": str(tmp_path / "hf")}})


def test_hub_id_offline_names_id_and_download(saved, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # also when imported before conftest
    _, root = saved
    spec = {**_spec(root), "experts": {"mnist": "wemoe-tests/not-a-cached-model"}}
    with pytest.raises(ZooError) as info:
        load_zoo(spec)
    message = str(info.value)
    assert "'wemoe-tests/not-a-cached-model'" in message
    assert "hf download wemoe-tests/not-a-cached-model" in message and "HF_HUB_OFFLINE=1" in message


def test_expert_shape_mismatch_names_parameter_and_shapes(saved, tmp_path):
    zoo, root = saved
    bad = dict(zoo.experts["task0"])
    bad["transformer.resblocks.1.mlp.c_fc.weight"] = torch.zeros(128, 64)
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(
        ZooError, match=r"'transformer.resblocks.1.mlp.c_fc.weight' has shape \(128, 64\) in the expert but \(256, 64\)"
    ):
        load_zoo({**_spec(root), "experts": {"bad": str(tmp_path / "bad.safetensors")}})


def test_expert_missing_parameter_is_named(saved, tmp_path):
    zoo, root = saved
    short = {k: v for k, v in zoo.experts["task0"].items() if k != "ln_post.bias"}
    save_file(short, str(tmp_path / "short.safetensors"))
    with pytest.raises(ZooError, match=r"missing \['ln_post.bias'\]"):
        load_zoo({**_spec(root), "experts": {"short": str(tmp_path / "short.safetensors")}})


def test_base_checkpoint_mismatch(saved, tmp_path):
    zoo, root = saved
    save_file(zoo.experts["task0"], str(tmp_path / "tower-only.safetensors"))
    with pytest.raises(ZooError, match="must be a full CLIP state dict"):
        load_zoo({**_spec(root), "pretrained": str(tmp_path / "tower-only.safetensors")})


def test_unknown_preset_lists_known():
    with pytest.raises(ZooError, match="Known zoos: pocket, vit-b-32-8tasks, vit-b-32-14tasks, .*, vit-l-14-20tasks"):
        load_zoo("vit-b-99")


def test_bad_specs():
    with pytest.raises(ZooError, match=r"Unknown zoo spec field\(s\) \['expert'\]"):
        load_zoo({"model": "ViT-B-32", "expert": {}})
    with pytest.raises(ZooError, match='needs "model"'):
        load_zoo({"experts": {}})
    with pytest.raises(ZooError, match="Unknown open_clip model 'ViT-Z-99'"):
        load_zoo({"model": "ViT-Z-99", "experts": {}})
    with pytest.raises(ZooError, match="Unknown pretrained tag 'nope' for 'ViT-B-32'. Known tags: openai"):
        create_clip("ViT-B-32", "nope")
    with pytest.raises(ZooError, match="Could not load open_clip model 'local-dir:/no/such/dir'"):
        create_clip("local-dir:/no/such/dir")


@pytest.mark.parametrize(("tag", "quick_gelu"), [("openai", True), ("laion2b_s34b_b79k", False)])
def test_pretrained_tag_sets_quick_gelu_and_offline_error_names_hub_id(monkeypatch, tag, quick_gelu):
    seen = {}

    def fake_create(model, pretrained=None, **kwargs):
        seen.update(kwargs, model=model, pretrained=pretrained)
        raise RuntimeError("Failed to download weights: no network")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake_create)
    repo = open_clip.get_pretrained_cfg("ViT-B-32", tag)["hf_hub"].rstrip("/")
    with pytest.raises(ZooError, match=f"hub id '{repo}'.*hf download {repo}"):
        create_clip("ViT-B-32", tag)
    assert seen["force_quick_gelu"] is quick_gelu and seen["pretrained"] == tag and seen["weights_only"] is True


def test_presets_follow_the_paper():
    b32, l14 = get_preset("vit-b-32-8tasks"), get_preset("vit-l-14-8tasks")
    assert (b32.model, b32.pretrained, b32.quick_gelu) == ("ViT-B-32", "openai", True)
    assert (l14.model, l14.pretrained, l14.quick_gelu) == ("ViT-L-14", "openai", True)
    assert b32.experts["stanford-cars"] == "tanganke/clip-vit-base-patch32_stanford-cars"
    assert l14.experts["dtd"] == "tanganke/clip-vit-large-patch14_dtd"
    assert len(b32.experts) == len(l14.experts) == 8
    assert set(PRESETS) == {f"vit-{m}-{n}tasks" for m in ("b-32", "b-16", "l-14") for n in (8, 14, 20)}


def test_tiny_zoo_experts_differ_and_are_deterministic():
    a, b = tiny_zoo(n_experts=2, seed=0), tiny_zoo(n_experts=2, seed=0)
    key = "transformer.resblocks.0.mlp.c_fc.weight"
    assert torch.equal(a.experts["task0"][key], b.experts["task0"][key])
    assert not torch.equal(a.experts["task0"][key], a.experts["task1"][key])
    assert not torch.equal(a.experts["task0"][key], a.base_state[key])


def test_pocket_is_delegated_with_progress(monkeypatch):
    import wemoe.loading

    zoo = tiny_zoo(n_experts=1)
    calls = []

    def fake_pocket(progress=None):
        calls.append(progress)
        return zoo

    monkeypatch.setitem(wemoe.loading.ZOO_LOADERS, "pocket", fake_pocket)

    def report(fraction: float, message: str) -> None:
        pass

    assert load_zoo("pocket", progress=report) is zoo and calls == [report]
