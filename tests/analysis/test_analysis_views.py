"""The analysis views of issue #20, each against a direct computation on the tiny test zoo: routing per patch,
interference (cosines, sign conflicts, norms), cross-accuracy and normalized accuracy, the lambda sweep and
per-task lambdas, corruptions and robustness, the held-out adaptation split, cost; and their CLI/JSON forms."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import tiny_images, tiny_task, tiny_zoo
from wemoe.analysis.cost import cost_table, stored_floats
from wemoe.analysis.cross_accuracy import cross_accuracy, normalized_accuracy
from wemoe.analysis.interference import block_of, interference, sign_conflicts, trim
from wemoe.analysis.robustness import corrupted_data, robustness_table, routing_shift
from wemoe.analysis.sweep import lambda_sweep, per_task_lambdas
from wemoe.errors import TaskError, WemoeError
from wemoe.evaluation.sample_eval import accuracy_by_task
from wemoe.moe.layer import moe_layers
from wemoe.moe.patch_routing import patch_routing
from wemoe.moe.routing import routing_weights
from wemoe.task_vector import task_vectors
from wemoe.tasks.corruptions import CORRUPTIONS, corrupt, corrupt_tensor
from wemoe.tasks.registry import Task
from wemoe.workbench.workbench import Workbench


def make_bench(n_experts: int = 3, adapt_split: str = "test", n_images: int = 12) -> Workbench:
    zoo = tiny_zoo(n_experts=n_experts, seed=3, noise=0.05)
    tasks = [tiny_task(name, n_classes=3, n_images=n_images, seed=i) for i, name in enumerate(zoo.task_names)]
    return Workbench(zoo, tasks, adapt_split=adapt_split)


def randomise_routers(tower: torch.nn.Module, seed: int = 0) -> None:
    """Give every router's last layer random weights, so routing differs between tokens and images."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in moe_layers(tower).values():
            last = layer.router.net[-1]
            last.weight.copy_(torch.randn(last.weight.shape, generator=generator))


@pytest.fixture(scope="module")
def bench() -> Workbench:
    bench = make_bench()
    randomise_routers(bench.merge("wemoe").model)
    return bench


def test_patch_routing_averages_to_the_image_routing(bench):
    tower = bench.merges["wemoe"].model
    images = bench.data()["task0"].images[:5]
    whole = routing_weights(tower, images)  # [N, layers, T]
    for row, layer in enumerate(sorted(moe_layers(tower))):
        found = patch_routing(tower, images, layer)
        assert found.weights.shape == (5, 17, 3)  # class token + 4 x 4 patches
        assert (found.image_routing - whole[:, row]).abs().max() <= 1e-6
        assert found.patch_grid().shape == (5, 4, 4, 3)
        assert torch.equal(found.patch_grid()[:, 0, 1], found.weights[:, 2])  # row by row after the class token
    assert patch_routing(tower, images, -1).layer == max(moe_layers(tower))
    assert len(found.to_dict()["dominant"]) == 4
    with pytest.raises(ValueError, match="has no router"):
        patch_routing(tower, images, 7)


def test_interference_against_torch(bench):
    zoo = bench.zoo
    found = interference(zoo)
    vectors = task_vectors(zoo.base_state, zoo.experts)
    names = list(vectors)
    # a TaskVector has keys() but no __iter__
    flat = {t: torch.cat([v[k].flatten().double() for k in v.keys()]) for t, v in vectors.items()}  # noqa: SIM118
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            expected = F.cosine_similarity(flat[a], flat[b], dim=0)
            assert float(found.cosine[i, j]) == pytest.approx(float(expected), abs=1e-9)
    block = "block1"
    per_block = {t: torch.cat([v[k].flatten().double() for k in v.keys() if block_of(k) == block])  # noqa: SIM118
                 for t, v in vectors.items()}
    expected = F.cosine_similarity(per_block[names[0]], per_block[names[2]], dim=0)
    assert float(found.cosine_frame(block).iloc[0, 2]) == pytest.approx(float(expected), abs=1e-9)
    assert found.norms.loc[names[1], block] == pytest.approx(float(per_block[names[1]].norm()), rel=1e-9)
    assert found.norms.loc[names[1], "whole"] == pytest.approx(vectors[names[1]].norm(), rel=1e-9)
    assert found.blocks == ["block0", "block1", "other"]
    stacked = torch.stack([per_block[t] for t in names])
    share = float(((stacked > 0).any(0) & (stacked < 0).any(0)).double().mean())
    assert found.conflicts[block] == pytest.approx(share)
    json.dumps(found.to_dict())


@pytest.mark.parametrize("top_k", [20.0, 3.0])
def test_trimmed_interference_streamed_per_tensor_equals_the_whole_vectors(bench, top_k):
    """Sign conflicts after TIES' trim, counted one tensor at a time, equal the whole stacked vectors' count (the
    form that held every task vector at once); cosines and norms from per-block Gram matrices as the flat ones."""
    zoo = bench.zoo
    found = interference(zoo, top_k)
    vectors = task_vectors(zoo.base_state, zoo.experts)
    keys = list(next(iter(vectors.values())).keys())
    whole = torch.stack([torch.cat([v[k].flatten().double() for k in keys]) for v in vectors.values()])
    trimmed = trim(whole, top_k)
    assert found.conflicts["whole"] == pytest.approx(sign_conflicts(trimmed), abs=1e-12)
    assert 0.0 < found.conflicts["whole"] < sign_conflicts(whole)  # the trim removed some conflicts, not all
    sizes = [sum(vectors[next(iter(vectors))][k].numel() for k in keys if block_of(k) == b) for b in found.blocks]
    order = [k for b in found.blocks for k in keys if block_of(k) == b]
    by_block = torch.stack([torch.cat([v[k].flatten().double() for k in order]) for v in vectors.values()])
    kept = trim(by_block, top_k)  # the same entries kept: the trim is over each whole vector, in any order
    for block, part in zip(found.blocks, kept.split(sizes, dim=1), strict=True):
        assert found.conflicts[block] == pytest.approx(sign_conflicts(part), abs=1e-12)
    expected = F.normalize(whole, dim=1) @ F.normalize(whole, dim=1).T
    assert torch.allclose(found.cosine, expected, atol=1e-12)


def test_sign_conflicts_on_a_hand_made_case():
    flat = torch.tensor([[1.0, -1.5, 0.0, 2.0, -0.5], [1.0, 1.0, -3.0, 0.0, -2.0]])
    assert sign_conflicts(flat) == pytest.approx(1 / 5)  # only column 1 has both signs
    trimmed = trim(flat, 40.0)  # 2 of 5 entries kept per row: 2.0 and -1.5; -3.0 and -2.0
    assert torch.equal(trimmed, torch.tensor([[0.0, -1.5, 0.0, 2.0, 0.0], [0.0, 0.0, -3.0, 0.0, -2.0]]))
    assert sign_conflicts(trimmed) == 0.0


def test_cross_accuracy_diagonal_is_the_experts_row(bench):
    cross = cross_accuracy(bench.loaded.expert_towers(), bench.data(), bench.heads())
    experts = bench.evaluate(["experts"]).loc["experts"]
    for task in bench.task_names:
        assert cross.loc[task, task] == pytest.approx(experts[task])
    assert cross.shape == (3, 4)
    table = bench.evaluate(["pretrained"])
    normalized = normalized_accuracy(table, experts)
    for task in bench.task_names:
        assert normalized.loc["pretrained", task] == pytest.approx(100 * table.loc["pretrained", task] / experts[task])
    assert normalized.loc["pretrained", "average"] == pytest.approx(
        normalized.loc["pretrained", bench.task_names].mean())


def test_sample_eval_matches_the_accuracy_table(bench):
    table = bench.evaluate(["pretrained", "wemoe"])
    for name in ("pretrained", "wemoe"):
        row = accuracy_by_task(bench.models([name])[name], bench.data(), bench.heads())
        assert row == pytest.approx({t: table.loc[name, t] for t in bench.task_names})


def test_sample_eval_leaves_no_scratch_memory_behind(bench):
    """A class of sessions scoring their WEMoE each kept its per-sample weights (512 MB on the pocket zoo) until
    released: an evaluation gives them back, and the next one gives the same numbers."""
    tower = bench.merges["wemoe"].model
    first = accuracy_by_task(tower, bench.data(), bench.heads())
    assert all(layer.workspace.kept_bytes() == 0 for layer in moe_layers(tower).values())
    assert accuracy_by_task(tower, bench.data(), bench.heads()) == first


def test_lambda_sweep_matches_merging_each_lambda(bench):
    swept = lambda_sweep(bench, lambdas=(0.0, 0.3, 1.0), per_task=None)
    for method, params in (("task_arithmetic", {}), ("ties", {"top_k": 20.0})):
        for lam in (0.0, 0.3, 1.0):
            made = bench.build(method, {**params, "lambda": lam})
            bench.merges["probe"] = made
            expected = bench.evaluate(["probe"]).loc["probe"]
            del bench.merges["probe"]
            assert swept.tables[method].loc[lam].to_dict() == pytest.approx(expected.to_dict())
    assert swept.chosen == {"task_arithmetic": 0.3, "ties": 0.3}  # not merged in the bench: the defaults
    assert swept.best("ties") in (0.0, 0.3, 1.0)
    json.dumps(swept.to_dict())


def test_per_task_lambdas_equal_task_arithmetic_when_equal(bench):
    bench.merge("task_arithmetic", {"lambda": 0.4})
    expected = bench.evaluate(["task_arithmetic"]).loc["task_arithmetic"]
    found = per_task_lambdas(bench, {t: 0.4 for t in bench.task_names}, per_task=None)
    assert found == pytest.approx(expected.to_dict())
    with pytest.raises(WemoeError, match="No expert"):
        per_task_lambdas(bench, {"nope": 1.0})


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_is_deterministic_and_changes_the_image(name):
    image = tiny_images(1, seed=5, size=48)[0]
    for severity in (1, 5):
        first, again = corrupt(image, name, severity, seed=2), corrupt(image, name, severity, seed=2)
        assert np.array_equal(np.asarray(first), np.asarray(again))
        assert first.size == image.size and first.mode == "RGB"
        assert not np.array_equal(np.asarray(first), np.asarray(image))
    if name in ("gaussian_noise", "impulse_noise", "spatter", "motion_blur"):  # random ones depend on the seed
        assert any(not np.array_equal(np.asarray(corrupt(image, name, 3, seed=s)),
                                      np.asarray(corrupt(image, name, 3, seed=2)))
                   for s in (3, 4, 5))
    with pytest.raises(WemoeError, match="Severity"):
        corrupt(image, name, 6)


def test_corrupt_tensor_is_deterministic_and_leaves_the_global_rng_alone(bench):
    images = bench.data()["task0"].images[:3]
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    first = corrupt_tensor(images, "gaussian_noise", 2, seed=1)
    assert torch.equal(first, corrupt_tensor(images, "gaussian_noise", 2, seed=1))
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist()
    assert not torch.equal(first, images) and first.shape == images.shape
    with pytest.raises(WemoeError, match="Unknown corruption"):
        corrupt_tensor(images, "fog")


def test_robustness_table_and_routing_shift(bench):
    table = robustness_table(bench, ["pretrained", "wemoe"], ["contrast", "pixelate"], severity=4, per_task=None)
    clean = bench.evaluate(["pretrained"]).loc["pretrained"]
    assert table.loc[("clean", "pretrained")].to_dict() == pytest.approx(clean.to_dict())
    corrupted = corrupted_data(bench.data(), bench.zoo.preprocess, "contrast", 4)
    direct = accuracy_by_task(bench.zoo.visual, corrupted, bench.heads())
    assert table.loc[("contrast", "pretrained"), bench.task_names].to_dict() == pytest.approx(direct)
    shift = routing_shift(bench, "wemoe", "contrast", 4, per_task=None)
    tower = bench.merges["wemoe"].model
    images = bench.data()["task1"].images
    distance = (routing_weights(tower, corrupted["task1"].images) - routing_weights(tower, images))
    distance = distance.flatten(1).norm(dim=1)
    assert shift.loc["task1", "distance"] == pytest.approx(float(distance.mean()), rel=1e-6)
    assert shift.loc["average", "distance"] == pytest.approx(shift.loc[bench.task_names, "distance"].mean())
    assert 0 <= shift.loc["task0", "guess_survives"] <= 100
    with pytest.raises(WemoeError):
        routing_shift(bench, "pretrained", "contrast")


def _rows(images: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


def test_heldout_split_is_disjoint_from_the_scored_images():
    held = make_bench(2, adapt_split="heldout", n_images=13)
    plain = make_bench(2, n_images=13)
    for task in held.task_names:
        scored, adapted = held.data()[task], held.loaded.adaptation_data()[task]
        assert len(adapted) == 6 and len(scored) == 7
        assert not _rows(scored.images) & _rows(adapted.images)
        assert _rows(scored.images) | _rows(adapted.images) == _rows(plain.data()[task].images)
    assert plain.loaded.adaptation_data("test") == plain.data()
    with pytest.raises(TaskError, match="adapt_split='heldout'"):
        plain.loaded.adaptation_data("heldout")  # tiny tasks have no train split: their test sets must be split
    held.merge("wemoe")
    seen = []
    real = held.loaded.adaptation_data
    held.loaded.adaptation_data = lambda split=None: seen.append(split) or real(split)
    records = list(held.adapt("wemoe", steps=2, per_task=2))
    assert len(records) == 2 and seen == ["heldout"]
    with pytest.raises(WemoeError, match="split"):
        list(held.adapt("wemoe", steps=1, split="train"))


def test_heldout_split_of_a_task_with_training_images():
    zoo = tiny_zoo(n_experts=1, seed=3)
    test_task = tiny_task("task0", n_images=6, seed=0)
    train_task = tiny_task("task0", n_images=20, seed=9)
    task = Task(name="task0", classnames=test_task.classnames, templates=test_task.templates,
                load_split=lambda split: (train_task if split == "train" else test_task).load_split("test"),
                source="wemoe.pocket (a stand-in with a train split)")
    bench = Workbench(zoo, [task])
    scored, adapted = bench.data()["task0"], bench.loaded.adaptation_data("heldout")["task0"]
    assert len(scored) == 6 and len(adapted) == 6  # as many training images as scored ones; the test set is whole
    assert not _rows(scored.images) & _rows(adapted.images)


def test_cost_counts_extra_parameters(bench):
    table = bench.evaluate(["pretrained", "experts", "wemoe"])
    cost = cost_table(bench, table)
    base = stored_floats(bench.zoo.visual)
    assert cost.loc["pretrained", "extra_parameters"] == 0
    assert cost.loc["experts", "extra_parameters"] == 2 * base
    tower = bench.merges["wemoe"].model
    assert cost.loc["wemoe", "extra_parameters"] == stored_floats(tower) - base > 0
    assert cost.loc["wemoe", "average_accuracy"] == pytest.approx(table.loc["wemoe", "average"])
    assert cost.loc["wemoe", "merge_seconds"] > 0 and cost.loc["pretrained", "adapt_seconds"] == 0
    assert isinstance(cost, pd.DataFrame)


@pytest.mark.parametrize("argv, view", [
    (["interference", "--top-k", "20"], "interference"),
    (["cross_accuracy", "--normalized-methods", "task_arithmetic"], "cross_accuracy"),
    (["sweep", "--sweep-methods", "task_arithmetic"], "lambda_sweep"),
    (["robustness", "--methods", "pretrained,wemoe", "--corruptions", "contrast", "--adapt-steps", "1",
      "--per-task", "2"], "robustness"),
    (["routing_patches", "--adapt-steps", "0", "--layer", "-1"], "routing_patches"),
    (["cost", "--methods", "pretrained,task_arithmetic,wemoe", "--adapt-steps", "1", "--per-task", "2"], "cost"),
])
def test_cli_views_print_one_json_object(tiny_cli_zoo, capsys, argv, view):
    from wemoe.__main__ import main

    assert main([*argv, "--zoo", "tiny", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["view"] == view
    assert main([*argv, "--zoo", "tiny"]) == 0  # and as a table
    assert capsys.readouterr().out.strip()


def test_cli_adapt_split_heldout(tiny_cli_zoo, tmp_path):
    from wemoe.__main__ import main

    out = tmp_path / "r.json"
    assert main(["table", "--methods", "wemoe", "--adapt-steps", "1", "--per-task", "2", "--adapt-split", "heldout",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["methods"]["wemoe"]["adaptation"]["split"] == "heldout"
    assert report["run"]["seeds"]["heldout_split"] == 0
    assert report["samples_per_task"] == {"task0": 5, "task1": 5}  # 9 test images: 4 adapt, 5 are scored


def test_cli_sweep_scores_one_lambda_per_task(tiny_cli_zoo, capsys):
    from wemoe import loading
    from wemoe.__main__ import main

    assert main(["sweep", "--zoo", "tiny", "--sweep-methods", "task_arithmetic",
                 "--task-lambdas", "task0=0.7,task1=0.1", "--view-samples", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["per_task_lambdas"]
    assert report["lambdas"] == {"task0": 0.7, "task1": 0.1}
    direct = per_task_lambdas(Workbench(loading.load_zoo("tiny")), {"task0": 0.7, "task1": 0.1}, per_task=None)
    assert report["accuracy"] == pytest.approx({k: round(v, 4) for k, v in direct.items()})
    assert main(["sweep", "--zoo", "tiny", "--task-lambdas", "task0=lots"]) != 0
    assert "error: --task-lambdas: 'task0=lots' is not task=number" in capsys.readouterr().err
