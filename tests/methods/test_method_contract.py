"""Every registered method, through every path: the CLI, the oracle, export and adaptation (wemoe.adaptation.adaptive's
contract).

Parametrised over the registry, so a new method is tested the moment it is registered.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import tiny_clip, tiny_task, tiny_zoo  # first: wemoe's torchvision shim before open_clip
from wemoe.__main__ import main
from wemoe.adaptation.adaptive import routed_layers, routes, static_form, trainable_parameters
from wemoe.errors import MethodError
from wemoe.evaluation.export import load_wemoe, read_metadata, save_model
from wemoe.methods import get_method, list_methods
from wemoe.methods.wemoe import WEMoE
from wemoe.workbench.workbench import ORACLE, Workbench

import open_clip  # after the imports above: wemoe's torchvision shim first  # isort: skip

METHODS = list_methods()
ADAPTIVE = [m for m in METHODS if get_method(m).adaptive]


def _bench(n_experts: int = 2, seed: int = 3) -> Workbench:
    zoo = tiny_zoo(n_experts=n_experts, seed=seed)
    return Workbench(zoo, [tiny_task(name, n_classes=3, n_images=8, seed=i) for i, name in enumerate(zoo.task_names)])


def test_the_registry_has_adaptive_and_routed_methods():
    assert "wemoe" in ADAPTIVE and "adamerging" in ADAPTIVE and len(ADAPTIVE) < len(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_cli_table_with_the_oracle_runs_every_method(method, tiny_cli_zoo, tmp_path):
    out = tmp_path / "r.json"
    extra = ["--lambda", "0.3"] if method == "task_arithmetic" else []
    code = main(["table", "--methods", f"pretrained,{method},{ORACLE}", "--adapt-steps", "1", "--per-task", "2",
                 "--json", str(out), *extra])
    assert code == 0
    report = json.loads(out.read_text())["methods"]
    assert list(report) == ["pretrained", method, ORACLE]
    assert report[method]["adapt_steps"] == (1 if method in ADAPTIVE else 0)


@pytest.mark.parametrize("method", METHODS)
def test_cli_merge_saves_every_method_in_its_format(method, tiny_cli_zoo, tmp_path):
    out = tmp_path / f"{method}.safetensors"
    assert main(["merge", "--method", method, "--adapt-steps", "1", "--per-task", "2", "--out", str(out)]) == 0
    routed = isinstance(get_method(method), WEMoE)  # wemoe and its variants (e.g. wemoe_compressed)
    assert read_metadata(out)["wemoe_format"] == ("wemoe" if routed else "open_clip")


@pytest.mark.parametrize("method", METHODS)
def test_the_oracle_comes_from_a_routed_merge_and_is_a_clear_error_otherwise(method):
    bench = _bench()
    result = bench.merge(method)
    if result.routes:
        oracle = bench.models([ORACLE])[ORACLE]
        assert set(oracle) == set(bench.task_names)
    else:
        with pytest.raises(MethodError, match="needs a wemoe merge"):
            bench.models([ORACLE])


@pytest.mark.parametrize("method", METHODS)
def test_every_method_exports_and_reloads_with_the_same_outputs(method, tmp_path):
    bench = _bench()
    result = bench.merge(method)
    if result.adaptive:
        list(bench.adapt(method, steps=2, lr=5e-2, per_task=4))
    path = save_model(bench.zoo.clip, result.model, tmp_path / "m.safetensors")
    images = torch.randn(3, 3, 32, 32)
    if routes(result.model):
        again = load_wemoe(path, bench.zoo.visual)
    else:
        again = tiny_clip(seed=77)[0]
        open_clip.load_checkpoint(again, str(path))
        again = again.visual
    with torch.no_grad():
        assert (again(images) - result.model(images)).abs().max() <= 1e-5


@pytest.mark.parametrize("method", METHODS)
def test_every_method_keeps_the_adaptive_contract(method):
    bench = _bench()
    model = bench.merge(method).model
    assert bool(trainable_parameters(model)) == get_method(method).adaptive
    if routes(model):
        assert routed_layers(model) and all(p.requires_grad for layer in routed_layers(model).values()
                                            for p in layer.router.parameters())
        with pytest.raises(ValueError, match="save_wemoe"):
            static_form(model)
    else:
        images = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            assert (static_form(model)(images) - model(images)).abs().max() <= 1e-5


@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptation_trains_only_the_trainable_parameters_of_every_adaptive_method(method):
    bench = _bench()
    model = bench.merge(method).model
    trainable = {id(p) for p in trainable_parameters(model)}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    frozen = {name: b.clone() for name, b in model.named_buffers()}
    records = list(bench.adapt(method, steps=3, lr=5e-2, per_task=4))
    assert [r.step for r in records] == [1, 2, 3]
    changed = {name for name, p in model.named_parameters() if not torch.equal(before[name], p)}
    assert changed and all(id(dict(model.named_parameters())[name]) in trainable for name in changed)
    assert all(torch.equal(frozen[name], b) for name, b in model.named_buffers())
