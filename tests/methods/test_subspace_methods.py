"""TSV-M, Iso-C, Iso-CTS, WUDI, EMR-Merging and task-wise AdaMerging against hand computations on tiny tensors,
and their reductions at one task (T = 1)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.helpers import tiny_task, tiny_zoo  # first: wemoe's torchvision shim before open_clip
from wemoe.__main__ import main
from wemoe.evaluation.evaluate import needs_task, tower_for
from wemoe.methods import get_method
from wemoe.methods.emr import emr_merge
from wemoe.methods.iso import iso_c_matrix, iso_cts_matrix, subspace_sizes
from wemoe.methods.matrix_merge import merge_matrices, polar
from wemoe.methods.tsv_m import kept_components, tsv_matrix
from wemoe.methods.wudi import wudi_matrix
from wemoe.task_vector import TaskVector
from wemoe.workbench.workbench import Workbench


def _outer(vector: list[float]) -> torch.Tensor:
    v = torch.tensor(vector, dtype=torch.float64)
    return torch.outer(v, v)


def _random(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# TSV-M


def test_tsv_keeps_each_tasks_top_components_when_they_are_orthogonal():
    # tau_1 = diag(3, 1) keeps its top 1/2 (3 e1 e1^T); tau_2 = 2 e2 e2^T keeps all it has: diag(3, 2)
    deltas = torch.stack([torch.diag(torch.tensor([3.0, 1.0])), torch.diag(torch.tensor([0.0, 2.0]))]).double()
    assert torch.allclose(tsv_matrix(deltas), torch.diag(torch.tensor([3.0, 2.0])).double(), atol=1e-12)


def test_tsv_decorrelates_two_directions_45_degrees_apart_symmetrically():
    # 3 e1 e1^T and 2 u u^T with u at 45 degrees: the polar factor of [e1, u] turns e1 by -22.5 and u by +22.5 degrees
    c = 1 / math.sqrt(2)
    deltas = torch.stack([3 * _outer([1.0, 0.0]), 2 * _outer([c, c])])
    p1 = [math.cos(math.pi / 8), -math.sin(math.pi / 8)]
    p2 = [math.cos(3 * math.pi / 8), math.sin(3 * math.pi / 8)]
    assert torch.allclose(tsv_matrix(deltas), 3 * _outer(p1) + 2 * _outer(p2), atol=1e-12)


def test_tsv_at_one_task_is_the_task_matrix_and_the_method_is_task_arithmetic():
    tau = _random((3, 4), seed=1)
    assert torch.allclose(tsv_matrix(tau[None]), tau, atol=1e-12)
    assert kept_components(768, 8) == 96 and kept_components(5, 3) == 1
    zoo = tiny_zoo(n_experts=1, seed=5)
    tsv = get_method("tsv_m")(zoo, alpha=0.7).state_dict()
    ta = get_method("task_arithmetic")(zoo, **{"lambda": 0.7}).state_dict()
    assert max(float((tsv[k] - ta[k]).abs().max()) for k in ta) <= 1e-6


@pytest.mark.parametrize(("tasks", "shape"), [(3, (7, 5)), (2, (4, 6)), (4, (8, 8))])
def test_tsv_in_fusionbenchs_order_is_the_polar_formula(tasks, shape):
    # T * keep < rank for the first two (zero-padded buffers, as FusionBench fills them): the same merge as
    # polar(U) diag(S) polar(Vh) on the kept components alone
    deltas = _random((tasks, *shape), seed=tasks)
    keep = kept_components(min(shape), tasks)
    u, s, vh = torch.linalg.svd(deltas, full_matrices=False)
    u_all, vh_all = torch.cat(list(u[:, :, :keep]), dim=1), torch.cat(list(vh[:, :keep, :]), dim=0)
    expected = (polar(u_all) * s[:, :keep].reshape(-1)) @ polar(vh_all)
    assert torch.allclose(tsv_matrix(deltas), expected, atol=1e-12)


# Iso-C and Iso-CTS


def test_iso_c_flattens_the_summed_spectrum_to_its_mean():
    deltas = torch.stack([torch.diag(torch.tensor([3.0, 1.0])), torch.diag(torch.tensor([1.0, 1.0]))]).double()
    assert torch.allclose(iso_c_matrix(deltas), 3.0 * torch.eye(2, dtype=torch.float64), atol=1e-12)  # diag(4, 2)


def test_iso_c_at_one_isotropic_task_is_that_task_and_vectors_are_averaged():
    angle = 0.3
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]],
                            dtype=torch.float64)
    assert torch.allclose(iso_c_matrix(2.5 * rotation[None]), 2.5 * rotation, atol=1e-12)
    vectors = [TaskVector({"w": torch.eye(2), "b": torch.tensor([1.0, -2.0])}),
               TaskVector({"w": torch.eye(2), "b": torch.tensor([3.0, 0.0])})]
    merged = merge_matrices(vectors, iso_c_matrix)
    assert torch.allclose(merged["w"], 2 * torch.eye(2)) and torch.equal(merged["b"], torch.tensor([2.0, -1.0]))


def test_iso_cts_hand_computed_3x3():
    # rank 3, 2 tasks, common fraction 1/3: 1 common direction, 1 per task
    assert subspace_sizes(3, 2, 1 / 3) == (1, 1)
    assert subspace_sizes(768, 8, 0.8) == (616, 19)
    # sum diag(5, 1, -2): common e1 (5); task 1 outside it: e2 (1); task 2: -e3 e3^T (2); mean of (5, 1, 2) = 8/3
    deltas = torch.stack([torch.diag(torch.tensor([5.0, 1.0, 0.0])),
                          torch.diag(torch.tensor([0.0, 0.0, -2.0]))]).double()
    expected = 8 / 3 * torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    assert torch.allclose(iso_cts_matrix(deltas, 1 / 3), expected, atol=1e-12)


def test_iso_cts_with_the_whole_rank_common_is_iso_c():
    deltas = _random((3, 4, 5), seed=2)
    assert torch.allclose(iso_cts_matrix(deltas, 1.0), iso_c_matrix(deltas), atol=1e-10)


# WUDI


def test_wudi_hand_computed_loss_and_its_fall():
    # two equal tasks e1 e1^T: start at their sum 2 e1 e1^T, loss 1 + 1 = 2; the minimum (loss 0) is e1 e1^T
    deltas = torch.stack([_outer([1.0, 0.0]), _outer([1.0, 0.0])])
    merged, losses = wudi_matrix(deltas, steps=600, lr=1e-2)
    assert losses[0] == pytest.approx(2.0, abs=1e-12) and len(losses) == 601
    assert losses[-1] < 1e-3 and abs(float(merged[0, 0]) - 1.0) < 0.02
    assert torch.equal(merged.flatten()[1:], torch.zeros(3, dtype=merged.dtype))  # no gradient there: no step


def test_wudi_loss_falls_and_its_closed_form_matches_the_definition():
    deltas = _random((3, 6, 4), seed=3).float() * 0.1
    merged, losses = wudi_matrix(deltas, steps=200, lr=1e-3)
    direct = sum(float(((deltas.sum(0) - d) @ d.T).square().sum() / d.square().sum()) for d in deltas)
    assert losses[0] == pytest.approx(direct, rel=1e-5)
    assert losses[-1] < 0.5 * losses[0] and all(b <= a + 1e-6 for a, b in zip(losses[:50], losses[1:51], strict=True))


def test_wudi_keeps_orthogonal_tasks_sum_and_one_task_as_it_is():
    orthogonal = torch.stack([_outer([1.0, 0.0]), _outer([0.0, 1.0])])
    merged, losses = wudi_matrix(orthogonal, steps=20, lr=1e-2)
    assert losses[0] == 0.0 and torch.equal(merged, torch.eye(2, dtype=merged.dtype))
    tau = _random((1, 3, 3), seed=4)
    assert torch.allclose(wudi_matrix(tau, steps=20, lr=1e-2)[0], tau[0], atol=1e-12)


def test_wudi_ignores_a_task_whose_matrix_is_zero():
    deltas = torch.stack([_outer([1.0, 0.0]), torch.zeros(2, 2, dtype=torch.float64)])
    merged, losses = wudi_matrix(deltas, steps=5, lr=1e-2)
    assert all(math.isfinite(x) for x in losses) and torch.isfinite(merged).all()


# EMR-Merging


def test_emr_hand_computed_elect_mask_rescale():
    a = TaskVector({"w": torch.tensor([2.0, -1.0, 0.5, 0.0])})
    b = TaskVector({"w": torch.tensor([-3.0, -2.0, 1.0, 1.0])})
    unified, masks, rescalers = emr_merge([a, b])
    # sign of the sum (-1, -3, 1.5, 1): (-, -, +, +); largest agreeing magnitudes (3, 2, 1, 1)
    assert torch.equal(unified["w"], torch.tensor([-3.0, -2.0, 1.0, 1.0]))
    assert masks["w"].tolist() == [[False, True, True, False], [True, True, True, True]]
    # a: mean|tau| 0.875 over mean|mask * unified| 0.75; b: 1.75 / 1.75
    assert torch.allclose(rescalers, torch.tensor([7 / 6, 1.0]))


def test_emr_elects_negative_where_the_sum_is_zero():
    unified, masks, _ = emr_merge([TaskVector({"w": torch.tensor([1.0])}), TaskVector({"w": torch.tensor([-1.0])})])
    assert torch.equal(unified["w"], torch.tensor([-1.0])) and masks["w"].tolist() == [[False], [True]]


def test_emr_with_one_task_recovers_the_expert_and_tables_give_it_its_task():
    zoo = tiny_zoo(n_experts=1, seed=6)
    model = get_method("emr_merging")(zoo)
    assert needs_task(model) and float(model.rescalers[0]) == 1.0
    task = zoo.task_names[0]
    own = model.for_task(task).state_dict()
    assert max(float((own[k] - v).abs().max()) for k, v in zoo.experts[task].items()) <= 1e-6
    assert tower_for(model, task) is not model
    bench = Workbench(zoo, [tiny_task(task, n_classes=3, n_images=8)])
    bench.merge("emr_merging")
    table = bench.evaluate(["experts", "emr_merging"])
    assert table.loc["emr_merging", task] == table.loc["experts", task]


def test_emr_without_a_task_is_the_mean_of_the_task_models():
    zoo = tiny_zoo(n_experts=3, seed=7)
    model = get_method("emr_merging")(zoo)
    per_task = [model.for_task(t).state_dict() for t in zoo.task_names]
    mean = model.static_tower().state_dict()
    key = "transformer.resblocks.0.mlp.c_fc.weight"
    assert torch.allclose(mean[key], sum(s[key] for s in per_task) / 3, atol=1e-6)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model(images) - model.static_tower()(images)).abs().max() <= 1e-5


def test_cli_table_flags_emr_as_task_given(tiny_cli_zoo, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["table", "--methods", "pretrained,emr_merging,tsv_m", "--json", str(out)]) == 0
    assert "emr_merging (task given)" in capsys.readouterr().out
    report = json.loads(out.read_text())["methods"]
    assert report["emr_merging"]["task_given"] is True and "task_given" not in report["tsv_m"]


# Task-wise AdaMerging


def test_task_wise_adamerging_has_one_coefficient_per_task_and_starts_at_task_arithmetic():
    zoo = tiny_zoo(n_experts=2, seed=8)
    model = get_method("task_wise_adamerging")(zoo, **{"lambda": 0.4})
    assert model.coefficients.shape == (2,)
    with torch.no_grad():
        model.coefficients.copy_(torch.tensor([0.2, 0.5]))
    key = "transformer.resblocks.1.mlp.c_proj.weight"
    experts = list(zoo.experts.values())
    expected = (zoo.base_state[key] + 0.2 * (experts[0][key] - zoo.base_state[key])
                + 0.5 * (experts[1][key] - zoo.base_state[key]))
    assert torch.allclose(model.merged_state()[key], expected, atol=1e-6)
    assert torch.allclose(model.static_tower().state_dict()[key], expected, atol=1e-6)


def test_classify_gives_emr_the_heads_task_and_no_task_gives_its_mean():
    from tests.helpers import tiny_images
    from wemoe.tasks.classify import logits
    from wemoe.tasks.images import encode_images

    zoo = tiny_zoo(n_experts=3, seed=9)
    bench = Workbench(zoo, [tiny_task(n, n_classes=4, n_images=6, seed=i) for i, n in enumerate(zoo.task_names)])
    model = bench.merge("emr_merging").model
    images = tiny_images(2, seed=3)
    batch = encode_images(images, zoo.preprocess)
    for task, tower in (("task1", model.for_task("task1")), (None, model)):
        results = bench.classify(images, task=task, k=1)
        head = bench.heads()["task1"] if task else torch.cat([bench.heads()[t] for t in zoo.task_names])
        with torch.no_grad():
            expected = logits(tower.eval(), batch, head).softmax(-1).max(-1).values
        got = [r.models["emr_merging"].probabilities[0] for r in results]
        assert got == pytest.approx(expected.tolist(), abs=1e-5)


# The attention layout a per-matrix rule sees (issue #35)

LAYOUT_METHODS = ("tsv_m", "iso_c", "iso_cts", "wudi")  # per-matrix rules; EMR's rescalers below
FEW_STEPS = {"wudi": {"steps": 3, "lr": 1e-3}}


def _hf_sourced(zoo):
    """The same zoo as if its experts had come from Hugging Face checkpoints (what wemoe.zoo.sources records)."""
    zoo.info = {**zoo.info, "expert_layouts": dict.fromkeys(zoo.experts, "hf")}
    return zoo


@pytest.mark.parametrize("name", LAYOUT_METHODS)
def test_split_merges_q_k_v_separately_and_fuses_again(name):
    zoo = tiny_zoo(n_experts=3, seed=5)
    params = FEW_STEPS.get(name, {})
    split = get_method(name)(zoo, attention="split", **params).state_dict()
    fused = get_method(name)(zoo, attention="fused", **params).state_dict()
    base = zoo.base_state
    key = "transformer.resblocks.0.attn.in_proj_weight"
    # by hand: the method on a zoo whose attention input is only q (then k, then v), the thirds fused again
    thirds = []
    for part in range(3):
        alone = {t: {key: state[key].chunk(3)[part]} for t, state in zoo.experts.items()}
        vectors = [TaskVector({key: alone[t][key] - base[key].chunk(3)[part]}) for t in zoo.experts]
        rule = {"tsv_m": tsv_matrix, "iso_c": iso_c_matrix,
                "iso_cts": lambda d: iso_cts_matrix(d, 0.8), "wudi": lambda d: wudi_matrix(d, 3, 1e-3)[0]}[name]
        thirds.append(merge_matrices(vectors, rule, "fused")[key])
    alpha = get_method(name).resolve(params).get("alpha", 1.0)
    expected = base[key] + alpha * torch.cat(thirds)
    assert torch.allclose(split[key], expected, atol=1e-6)
    assert not torch.allclose(split[key], fused[key], atol=1e-4)  # the layouts merge differently
    mlp = "transformer.resblocks.0.mlp.c_fc.weight"
    assert torch.equal(split[mlp], fused[mlp])  # every other matrix is merged the same way


def _merged(name, zoo, **params):
    model = get_method(name)(zoo, **params)
    return model.task_state(zoo.task_names[0]) if name == "emr_merging" else model.state_dict()


@pytest.mark.parametrize("name", [*LAYOUT_METHODS, "emr_merging"])
def test_the_default_layout_follows_the_experts_source(name):
    params = FEW_STEPS.get(name, {})
    assert get_method(name).resolve()["attention"] == "source"
    zoo = tiny_zoo(n_experts=2, seed=6)
    assert zoo.source_layout == "fused"  # open_clip experts
    key = "transformer.resblocks.1.attn.in_proj_weight"
    default = _merged(name, zoo, **params)[key]
    assert torch.equal(default, _merged(name, zoo, attention="fused", **params)[key])
    hf = _hf_sourced(tiny_zoo(n_experts=2, seed=6))
    assert hf.source_layout == "split"
    default = _merged(name, hf, **params)[key]
    assert torch.equal(default, _merged(name, hf, attention="split", **params)[key])
    assert not torch.equal(default, _merged(name, hf, attention="fused", **params)[key])


def test_emr_split_rescales_with_the_q_k_v_thirds_as_tensors():
    # task 1: the q third 1, k and v 0; task 2: q -0.1, k and v 0.5 (weights [6, 2], rows q q k k v v).
    # Elected: + everywhere (q sums to 0.9); unified q 1.0, k and v 0.5; task 1 keeps q, task 2 keeps k and v.
    a = TaskVector({"attn.in_proj_weight": torch.cat([torch.ones(2, 2), torch.zeros(4, 2)])})
    b = TaskVector({"attn.in_proj_weight": torch.cat([torch.full((2, 2), -0.1), torch.full((4, 2), 0.5)])})
    # task 2, fused: mean|b| = (0.1*4 + 0.5*8)/12 over kept mean (0.5*8)/12 = 4.4/4; split: sum of the thirds' means
    _, _, fused = emr_merge([a, b], "fused")
    _, _, split = emr_merge([a, b], "split")
    assert fused[1].item() == pytest.approx(4.4 / 4.0)
    assert split[1].item() == pytest.approx((0.1 + 0.5 + 0.5) / (0.0 + 0.5 + 0.5))  # sum of the thirds' means
    assert fused[0].item() == pytest.approx(1.0) and split[0].item() == pytest.approx(1.0)


def test_the_results_json_records_the_layout(tiny_cli_zoo, tmp_path):
    out = tmp_path / "r.json"
    assert main(["table", "--methods", "iso_c,tsv_m", "--param", "tsv_m.attention=split", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["run"]["source_layout"] == "fused"
    assert report["methods"]["iso_c"]["params"]["attention"] == "source"
    assert report["methods"]["iso_c"]["attention"] == "fused" and report["methods"]["tsv_m"]["attention"] == "split"


def test_layer_wise_adamerging_learns_q_k_v_coefficients_when_split():
    zoo = tiny_zoo(n_experts=2, seed=7)
    fused = get_method("adamerging")(zoo)
    split = get_method("adamerging")(_hf_sourced(tiny_zoo(n_experts=2, seed=7)))  # the default follows the source
    blocks = 2  # tiny: two blocks, each with an in_proj weight and bias: 2 more columns each in split
    assert split.coefficients.shape[1] == fused.coefficients.shape[1] + 4 * blocks
    key = "transformer.resblocks.0.attn.in_proj_weight"
    assert torch.allclose(split.merged_state()[key], fused.merged_state()[key], atol=1e-6)  # equal at the start
    i = split.names.index(key)
    column = sum(split.parts[:i])
    with torch.no_grad():
        split.coefficients[0, column + 1] = 1.0  # task 0's k rows only
    third = zoo.base_state[key].shape[0] // 3
    delta = split.merged_state()[key] - fused.merged_state()[key]
    tau0 = zoo.experts["task0"][key] - zoo.base_state[key]
    assert torch.allclose(delta[third:2 * third], 0.7 * tau0[third:2 * third], atol=1e-6)
    assert delta[:third].abs().max() < 1e-6 and delta[2 * third:].abs().max() < 1e-6
    assert "attention" not in {p.name for p in get_method("task_wise_adamerging").params}
