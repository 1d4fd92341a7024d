"""Task arithmetic, simple averaging, TIES and the lambda sweep computed one tensor at a time give, bit for bit, what
building every task vector of the whole tower first gave (the formulas before, written out here as references)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import tiny_task, tiny_zoo
from wemoe.analysis.sweep import lambda_sweep, merged_direction, per_task_lambdas
from wemoe.evaluation.sample_eval import accuracy_by_task, sample_data, with_average
from wemoe.methods import get_method
from wemoe.methods.ties import KEEP_RULES, kept_count, ties_merge, trim_threshold
from wemoe.task_vector import LazyTaskVector, TaskVector, lazy_task_vectors, summed, task_vectors
from wemoe.workbench.workbench import Workbench
from wemoe.zoo.zoo import Zoo


def stacked_ties(vectors: list[TaskVector], top_k: float, merge: str, rule: str) -> TaskVector:
    """TIES as it was computed before: every task vector flattened into one ``[T, P]`` matrix."""
    keys = vectors[0].keys()
    flat = torch.stack([torch.cat([v[k].flatten() for k in keys]) for v in vectors])
    keep = kept_count(flat.shape[1], top_k, rule)
    thresholds = flat.abs().kthvalue(flat.shape[1] - keep + 1, dim=1, keepdim=True).values
    trimmed = torch.where(flat.abs() >= thresholds, flat, torch.zeros_like(flat))
    sign = torch.sign(trimmed.sum(dim=0))
    if rule == "fusionbench":
        sign[sign == 0] = torch.sign(sign.sum())
        agree = torch.where(sign > 0, trimmed > 0, trimmed < 0)
    else:
        agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
    merged = (trimmed * agree).sum(dim=0)
    if merge == "mean":
        merged = merged / agree.sum(dim=0).clamp(min=1)
    out, offset = {}, 0
    for k in keys:
        n = vectors[0][k].numel()
        out[k] = merged[offset: offset + n].view_as(vectors[0][k])
        offset += n
    return TaskVector(out)


def assert_bitwise(got: dict | TaskVector, want: dict | TaskVector) -> None:
    """Same names, and every tensor equal bit for bit (dtype and shape included)."""
    got_keys, want_keys = list(got.keys()), list(want.keys())
    assert got_keys == want_keys
    for key in want_keys:
        assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
        assert torch.equal(got[key], want[key]), key


@pytest.fixture(scope="module")
def zoo() -> Zoo:
    return tiny_zoo(n_experts=4, seed=3, layers=2)


@pytest.fixture(scope="module")
def bench(zoo) -> Workbench:
    return Workbench(zoo, tasks=[tiny_task(name, seed=i) for i, name in enumerate(zoo.task_names)])


def random_vectors(count: int, seed: int) -> list[TaskVector]:
    """Task vectors of mixed shapes (a matrix, a long bias, scalars), rounded to 1/8 so that magnitudes tie at the
    thresholds and trimmed sums cancel to exactly 0 (the majority-sign rule is exercised)."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {"a.weight": (48, 32), "a.bias": (48,), "b.weight": (7, 3, 2), "c": (1,)}
    return [TaskVector({k: torch.round(torch.randn(shape, generator=generator) * 8) / 8 for k, shape in shapes.items()})
            for _ in range(count)]


@pytest.mark.parametrize("rule", KEEP_RULES)
@pytest.mark.parametrize("merge", ["sum", "mean"])
@pytest.mark.parametrize("top_k", [0.1, 20.0, 55.5, 100.0])
def test_ties_per_tensor_equals_the_stacked_formula(rule, merge, top_k):
    vectors = random_vectors(5, seed=int(top_k * 10))
    merged = ties_merge(vectors, top_k, merge, rule)
    assert_bitwise(merged, stacked_ties(vectors, top_k, merge, rule))
    names = merged.keys()
    assert any(bool((merged[k] != 0).any()) for k in names)  # not all trimmed away


def test_ties_majority_sign_reaches_entries_whose_kept_values_cancel():
    vectors = random_vectors(2, seed=7)
    vectors[1] = TaskVector({k: -v for k, v in vectors[0].vector.items()})  # every elected sum is exactly 0
    vectors[1].vector["c"] = torch.tensor([9.0])  # one positive sign elected: the majority is +
    merged = ties_merge(vectors, 100.0)
    assert_bitwise(merged, stacked_ties(vectors, 100.0, "sum", "fusionbench"))
    positive = vectors[0]["a.weight"] > 0
    assert torch.equal(merged["a.weight"][positive], vectors[0]["a.weight"][positive])  # the + side merged


def test_trim_threshold_is_the_kept_counts_smallest_magnitude():
    vector = random_vectors(1, seed=11)[0]
    names = vector.keys()
    flat = torch.cat([vector[k].flatten() for k in names]).abs()
    keep = kept_count(flat.numel(), 20.0)
    assert trim_threshold(vector, names, 20.0) == float(flat.sort().values[flat.numel() - keep])


def test_lazy_task_vectors_read_what_task_vectors_hold(zoo):
    eager = task_vectors(zoo.base_state, zoo.experts)
    lazy = lazy_task_vectors(zoo.base_state, zoo.experts)
    assert list(lazy) == list(eager)
    for name, vector in lazy.items():
        names = vector.keys()
        assert_bitwise({k: vector[k] for k in names}, eager[name])
        assert all(vector.numel(k) == eager[name].numel(k) for k in names)
    broken = dict(zoo.experts["task0"])
    del broken["conv1.weight"]
    with pytest.raises(KeyError, match="lack 1 pretrained"):
        LazyTaskVector(zoo.base_state, broken)


def test_summed_equals_python_sum_with_and_without_weights(zoo):
    eager = list(task_vectors(zoo.base_state, zoo.experts).values())
    lazy = list(lazy_task_vectors(zoo.base_state, zoo.experts).values())
    assert_bitwise(summed(lazy), sum(eager))
    weights = [0.3, 0.0, 1.7, -0.25]
    assert_bitwise(summed(lazy, weights), sum(v * w for v, w in zip(eager, weights, strict=True)))
    with pytest.raises(ValueError, match="3 weights for 4"):
        summed(lazy, weights[:3])


def test_ties_on_lazy_vectors_equals_the_stacked_formula_on_the_zoo(zoo):
    eager = list(task_vectors(zoo.base_state, zoo.experts).values())
    lazy = list(lazy_task_vectors(zoo.base_state, zoo.experts).values())
    assert_bitwise(ties_merge(lazy, 20.0), stacked_ties(eager, 20.0, "sum", "fusionbench"))


@pytest.mark.parametrize("method, reference", [
    ("task_arithmetic", lambda zoo: sum(task_vectors(zoo.base_state, zoo.experts).values()).apply_to(
        zoo.base_state, 0.3)),
    ("simple_average", lambda zoo: sum(task_vectors(zoo.base_state, zoo.experts).values()).apply_to(
        zoo.base_state, 1.0 / len(zoo.experts))),
    ("ties", lambda zoo: stacked_ties(list(task_vectors(zoo.base_state, zoo.experts).values()), 20.0, "sum",
                                      "fusionbench").apply_to(zoo.base_state, 0.3)),
])
def test_merge_methods_equal_their_whole_vector_formulas(zoo, method, reference):
    assert_bitwise(get_method(method)(zoo).state_dict(), reference(zoo))


def test_the_sweep_and_per_task_lambdas_equal_their_whole_vector_formulas(bench, zoo):
    eager = task_vectors(zoo.base_state, zoo.experts)
    assert_bitwise(merged_direction(bench, "task_arithmetic"), sum(eager.values()))
    assert_bitwise(merged_direction(bench, "ties"), stacked_ties(list(eager.values()), 20.0, "sum", "fusionbench"))
    lambdas = {"task0": 0.2, "task2": 0.9}
    direction = sum(v * float(lambdas.get(t, 0.0)) for t, v in eager.items())
    tower = zoo.visual_with(direction.apply_to(zoo.base_state, 1.0))
    want = with_average(accuracy_by_task(tower, sample_data(bench.data(), 8, 0), bench.heads()))
    assert per_task_lambdas(bench, lambdas, per_task=8) == want
    swept = lambda_sweep(bench, methods=("task_arithmetic",), lambdas=(0.0, 0.5), per_task=8)
    half = zoo.visual_with(sum(eager.values()).apply_to(zoo.base_state, 0.5))
    assert swept.tables["task_arithmetic"].loc[0.5].to_dict() == with_average(
        accuracy_by_task(half, sample_data(bench.data(), 8, 0), bench.heads()))
