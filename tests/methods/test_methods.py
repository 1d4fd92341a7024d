"""Merge methods: the registry, TIES against a hand computation, task arithmetic identities, every method runs."""

import pytest
import torch

from tests.helpers import tiny_task, tiny_zoo
from wemoe.errors import MethodError
from wemoe.methods import get_method, list_methods
from wemoe.methods.ties import kept_count, ties_merge
from wemoe.task_vector import TaskVector
from wemoe.workbench.workbench import Workbench


@pytest.fixture(scope="module")
def zoo():
    return tiny_zoo(n_experts=3, seed=2)


def test_ties_rounded_rule_matches_hand_computation():
    a = TaskVector({"w": torch.tensor([3.0, -1.0, 0.5, 2.0]), "b": torch.tensor([-4.0])})
    b = TaskVector({"w": torch.tensor([-2.0, -3.0, 0.1, 1.0]), "b": torch.tensor([1.0])})
    # rounded: top 60% of 5 entries = 3 kept per vector. a keeps 3, -4, 2 ; b keeps -2, -3, 1
    # (ties at 1.0: w[3], b[0] -> both kept)
    merged = ties_merge([a, b], top_k=60.0, merge="sum", rule="rounded")
    # entry-wise: w0: 3 + -2 -> sign +, keep 3 ; w1: 0 + -3 -> -3 ; w2: 0 ; w3: 2 + 1 -> 3 ; b: -4 + 1 -> -, keep -4
    assert torch.equal(merged["w"], torch.tensor([3.0, -3.0, 0.0, 3.0]))
    assert torch.equal(merged["b"], torch.tensor([-4.0]))
    mean = ties_merge([a, b], top_k=60.0, merge="mean", rule="rounded")
    assert torch.equal(mean["w"], torch.tensor([3.0, -3.0, 0.0, 1.5]))


def test_ties_keeps_what_fusionbench_keeps_when_d_k_is_fractional():
    # d = 7, top_k = 30%: d*K = 2.1. FusionBench keeps int(2.1) + 1 = 3 (its k = 7 - 2 = 5th smallest and above);
    # the rounded rule keeps round(2.1) = 2.
    alone = TaskVector({"w": torch.tensor([5.0, -4.0, 3.0, 0.5, 0.1, 0.2, 1.0])})
    fb = ties_merge([alone], top_k=30.0)
    assert torch.equal(fb["w"], torch.tensor([5.0, -4.0, 3.0, 0.0, 0.0, 0.0, 0.0]))
    assert int((ties_merge([alone], top_k=30.0, rule="rounded")["w"] != 0).sum()) == 2
    assert kept_count(7, 30.0) == 3 and kept_count(7, 30.0, "rounded") == 2
    assert kept_count(10, 20.0) == 3 and kept_count(4, 100.0) == 4  # d*K whole: still one more; never above d
    assert get_method("ties").resolve()["rule"] == "fusionbench"


def test_ties_cancelling_entries_take_the_majority_sign():
    # top_k = 50% of 4: FusionBench keeps 3 per task. a keeps 3, 2, 1 ; b keeps 4, -2, 0.5.
    a = TaskVector({"w": torch.tensor([2.0, 3.0, 1.0, 0.0])})
    b = TaskVector({"w": torch.tensor([-2.0, 4.0, 0.5, 0.0])})
    # w0: 2 + -2 = 0 -> the majority sign, sign(0 + 1 + 1 + 0) = +, so 2 is merged; w3: nothing kept -> 0.
    assert torch.equal(ties_merge([a, b], top_k=50.0)["w"], torch.tensor([2.0, 7.0, 1.5, 0.0]))
    assert torch.equal(ties_merge([a, b], top_k=50.0, merge="mean")["w"], torch.tensor([2.0, 3.5, 0.75, 0.0]))
    # rounded: 2 kept per task (a: 3, 2 ; b: 4, -2); w0 cancels and stays unmerged.
    assert torch.equal(ties_merge([a, b], top_k=50.0, rule="rounded")["w"], torch.tensor([0.0, 7.0, 0.0, 0.0]))


def test_task_arithmetic_lambda_zero_is_the_base(zoo):
    tower = get_method("task_arithmetic")(zoo, **{"lambda": 0.0})
    for key, value in zoo.base_state.items():
        assert torch.equal(tower.state_dict()[key], value)


def test_simple_average_is_the_mean_of_experts(zoo):
    tower = get_method("simple_average")(zoo)
    key = "transformer.resblocks.0.mlp.c_fc.weight"
    expected = torch.stack([e[key] for e in zoo.experts.values()]).mean(0)
    assert torch.allclose(tower.state_dict()[key], expected, atol=1e-6)


@pytest.mark.parametrize("name", list_methods())
def test_every_method_merges_and_classifies(zoo, name):
    method = get_method(name)
    assert method.description and method.reference_url.startswith("https://")
    defaults = method.resolve()
    assert set(defaults) == {p.name for p in method.params}
    tower = method(zoo)
    with torch.no_grad():
        out = tower(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 32) and torch.isfinite(out).all()
    assert any(p.requires_grad for p in tower.parameters()) == method.adaptive


@pytest.mark.parametrize("name", list_methods())
def test_every_method_rejects_bad_parameters(name):
    method = get_method(name)
    with pytest.raises(MethodError, match="has no parameter 'nonsense'"):
        method.resolve({"nonsense": 1})
    for param in method.params:
        if param.max is not None:
            with pytest.raises(MethodError, match="out of range"):
                method.resolve({param.name: param.max + 1})
        if param.choices is not None:
            with pytest.raises(MethodError, match="choose one of"):
                method.resolve({param.name: "not-a-choice" if param.type is str else 99})


def test_unknown_method_lists_known_ones():
    with pytest.raises(MethodError, match="Known methods: .*task_arithmetic"):
        get_method("magic")


def test_adamerging_at_init_equals_task_arithmetic(zoo):
    images = torch.randn(3, 3, 32, 32)
    ada = get_method("adamerging")(zoo, **{"lambda": 0.4})
    ta = get_method("task_arithmetic")(zoo, **{"lambda": 0.4})
    with torch.no_grad():
        assert (ada(images) - ta(images)).abs().max() <= 1e-5
        assert (ada.static_tower()(images) - ta(images)).abs().max() <= 1e-5


@pytest.mark.parametrize("method", ["wemoe", "adamerging"])
def test_adaptation_runs_and_zero_steps_is_the_untrained_model(method):
    zoo = tiny_zoo(n_experts=2, seed=3)
    tasks = [tiny_task(name, n_classes=3, n_images=8, seed=i) for i, name in enumerate(zoo.task_names)]
    bench = Workbench(zoo, tasks)
    bench.merge(method)
    before = {k: v.clone() for k, v in bench.merges[method].model.state_dict().items()}
    assert list(bench.adapt(method, steps=0)) == []
    steps = list(bench.adapt(method, steps=3, lr=1e-2, per_task=4))
    assert [s.step for s in steps] == [1, 2, 3] and set(steps[0].entropy) == set(zoo.task_names)
    after = bench.merges[method].model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert bench.merges[method].adapt_steps == 3


def test_adapt_before_merge_is_a_clear_error():
    zoo = tiny_zoo(n_experts=2, seed=3)
    bench = Workbench(zoo, [tiny_task(n) for n in zoo.task_names])
    with pytest.raises(MethodError, match="merge with wemoe or adamerging first"):
        next(bench.adapt("wemoe"))
    bench.merge("task_arithmetic")
    with pytest.raises(MethodError, match="nothing to adapt"):
        next(bench.adapt("task_arithmetic"))


def test_evaluate_table_shape_and_expert_rows():
    zoo = tiny_zoo(n_experts=2, seed=4)
    tasks = [tiny_task(name, n_classes=2, n_images=10, seed=i) for i, name in enumerate(zoo.task_names)]
    bench = Workbench(zoo, tasks)
    bench.merge("task_arithmetic")
    table = bench.evaluate(["pretrained", "experts", "task_arithmetic"])
    assert list(table.index) == ["pretrained", "experts", "task_arithmetic"]
    assert list(table.columns) == [*zoo.task_names, "average"]
    assert table.attrs["samples_per_task"] == {t: 10 for t in zoo.task_names}
    assert ((table >= 0) & (table <= 100)).all().all()
    assert table.loc["pretrained", "average"] == pytest.approx(table.loc["pretrained", zoo.task_names].mean())


def test_adaptation_losses_match_hand_computation():
    from wemoe.tasks.classify import entropy, information_maximisation

    logits = torch.log(torch.tensor([[0.5, 0.5], [1.0 - 1e-9, 1e-9]]))
    expected_entropy = (torch.log(torch.tensor(2.0)) + 0.0) / 2
    assert float(entropy(logits)) == pytest.approx(float(expected_entropy), abs=1e-6)
    mean = torch.tensor([0.75, 0.25])
    expected_im = expected_entropy + (mean * mean.log()).sum()
    assert float(information_maximisation(logits)) == pytest.approx(float(expected_im), abs=1e-6)
    # collapsing both images onto one class is confident but costs diversity
    collapsed = torch.log(torch.tensor([[1.0 - 1e-9, 1e-9]] * 2))
    spread = torch.log(torch.tensor([[1.0 - 1e-9, 1e-9], [1e-9, 1.0 - 1e-9]]))
    assert float(information_maximisation(spread)) < float(information_maximisation(collapsed))


def test_unknown_adaptation_loss_is_refused():
    zoo = tiny_zoo(n_experts=2, seed=3)
    bench = Workbench(zoo, [tiny_task(n) for n in zoo.task_names])
    bench.merge("wemoe")
    with pytest.raises(ValueError, match="choose one of"):
        next(bench.adapt("wemoe", loss="magic"))


def test_workbench_frees_wemoe_scratch_memory_after_adapting_and_evaluating():
    from wemoe.moe.layer import moe_layers

    zoo = tiny_zoo(n_experts=2, seed=5)
    tasks = [tiny_task(name, n_classes=2, n_images=8, seed=i) for i, name in enumerate(zoo.task_names)]
    bench = Workbench(zoo, tasks)
    model = bench.merge("wemoe").model
    workspace = next(iter(moe_layers(model).values())).workspace

    def use() -> None:  # a training step: its backward pass writes per-sample weights into the workspace
        model(torch.randn(3, 3, 32, 32)).sum().backward()

    use()
    assert workspace.kept_bytes() > 0  # a direct call keeps its buffer for the next one
    list(bench.adapt("wemoe", steps=2, per_task=4))
    assert workspace.kept_bytes() == 0
    use()
    for cells in (lambda: bench.evaluate(["wemoe", "wemoe_oracle"]), lambda: list(bench.iter_scores(["wemoe"]))):
        cells()
        assert workspace.kept_bytes() == 0
        use()


def test_a_second_method_under_a_taken_name_is_refused():
    from wemoe.methods import register
    from wemoe.methods.base import MergeMethod

    class Impostor(MergeMethod):
        name = "task_arithmetic"
        pretty_name = description = "impostor"
        reference_url = "https://example.org"

        def merge(self, zoo, **params):
            return zoo.visual

    with pytest.raises(MethodError, match=r"wemoe\.methods\.task_arithmetic\.TaskArithmetic is registered"):
        register(Impostor)
    assert type(get_method("task_arithmetic")).__name__ == "TaskArithmetic"  # the registry is unchanged


def test_discovery_runs_once(monkeypatch):
    import wemoe.methods.registry as registry

    names = list_methods()

    def no_second_scan(*args, **kwargs):
        raise AssertionError("the method modules were scanned again")

    monkeypatch.setattr(registry.pkgutil, "iter_modules", no_second_scan)
    assert list_methods() == names and get_method(names[0]).name == names[0]


def test_threads_asking_first_all_see_every_method():
    import subprocess
    import sys

    code = (
        "import threading\n"
        "from wemoe.methods import list_methods\n"
        "barrier, seen = threading.Barrier(8), []\n"
        "def ask():\n"
        "    barrier.wait()\n"
        "    seen.append(tuple(list_methods()))\n"
        "threads = [threading.Thread(target=ask) for _ in range(8)]\n"
        "[t.start() for t in threads]\n"
        "[t.join() for t in threads]\n"
        "assert len(seen) == 8 and len(set(seen)) == 1, seen\n"
        "print(','.join(seen[0]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().split(",") == list_methods()
