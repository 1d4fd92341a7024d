"""The stateless tools (wemoe.tools.calls) on the pocket zoo with two experts: the CLI's numbers, the cache on a
repeated call, the library's message for every bad value (nothing computed), and the views equal to the library's."""

from __future__ import annotations

import base64
import io
import json

import pytest

from wemoe import __main__ as cli
from wemoe.adaptation.adapt import SETTINGS
from wemoe.errors import MethodError, TaskError, WemoeError, ZooError
from wemoe.methods import get_method, list_methods
from wemoe.tools import calls
from wemoe.tools.toolbox import Toolbox

TASKS = ["pocket_digits", "pocket_shapes"]
STEPS = 3  # adaptation steps: enough to change the routers, a second on the pocket zoo


@pytest.fixture(scope="module")
def box():
    return Toolbox()


def test_merge_and_evaluate_equals_python_m_wemoe_table(box, tmp_path):
    methods = ["pretrained", "experts", "task_arithmetic", "wemoe"]
    got = calls.merge_and_evaluate("pocket", methods, tasks=TASKS, params={"task_arithmetic": {"lambda": 0.3}},
                                   adapt_steps=STEPS, box=box)
    out = tmp_path / "table.json"
    assert cli.main(["table", "--zoo", "pocket", "--tasks", ",".join(TASKS), "--methods", ",".join(methods),
                     "--param", "task_arithmetic.lambda=0.3", "--adapt-steps", str(STEPS), "--json", str(out)]) == 0
    table = json.loads(out.read_text())
    assert got["tasks"] == table["tasks"] == TASKS
    assert list(got["methods"]) == methods
    for name in methods:
        assert got["methods"][name]["per_task"] == table["methods"][name]["per_task"], name
        assert got["methods"][name]["average"] == table["methods"][name]["average"], name
    assert got["methods"]["wemoe"]["adapt_steps"] == STEPS
    assert got["adaptation"] == {"adapt_steps": STEPS, "adapt_lr": 1e-3, "adapt_per_task": 16, "adapt_loss": "entropy",
                                 "adapt_seed": 0, "adapt_split": "test"}
    assert json.loads(json.dumps(got)) == got  # JSON-ready as it is


def test_a_repeated_call_comes_from_the_process_cache(box):
    args = {"zoo": "pocket", "methods": ["task_arithmetic", "wemoe"], "tasks": TASKS, "adapt_steps": STEPS,
            "adapt_seed": 1}
    first = calls.merge_and_evaluate(**args, box=box)
    hits = box.results.hits
    again = calls.merge_and_evaluate(**args, box=box)
    assert box.results.hits > hits
    assert [again["methods"][m]["from_cache"] for m in ("task_arithmetic", "wemoe")] == [True, True]
    for name in ("task_arithmetic", "wemoe"):
        assert again["methods"][name]["per_task"] == first["methods"][name]["per_task"]


BAD = [
    ({"zoo": "nope"}, ZooError, "Unknown zoo 'nope'"),
    ({"zoo": "/etc/passwd"}, ZooError, "never given as paths"),
    ({"zoo": "assets/pocket"}, ZooError, "Choose one of: pocket"),
    ({"methods": ["task_arithmetic", "nope"]}, MethodError, "Unknown merge method 'nope'"),
    ({"methods": []}, MethodError, "choose at least one"),
    ({"methods": "task_arithmetic", "params": {"task_arithmetic": {"lambda": 5}}}, MethodError, "out of range"),
    ({"methods": "task_arithmetic", "params": {"task_arithmetic": {"nope": 1}}}, MethodError, "has no parameter"),
    ({"methods": "task_arithmetic", "params": {"ties": {"top_k": 20}}}, MethodError, "not among the methods"),
    ({"methods": "task_arithmetic", "params": [1]}, MethodError, "params: give an object"),
    ({"adapt_steps": -1}, MethodError, "adapt_steps"),
    ({"adapt_steps": "many"}, MethodError, "adapt_steps must be a int"),
    ({"adapt_loss": "mse"}, MethodError, "choose one of ['entropy', 'im']"),
    ({"adapt_lr": 2.0}, MethodError, "adapt_lr"),
]


@pytest.mark.parametrize(("change", "error", "message"), BAD, ids=[str(c) for c, _, _ in BAD])
def test_a_bad_value_gets_the_library_message_and_computes_nothing(box, change, error, message):
    args = {"zoo": "pocket", "methods": ["task_arithmetic"], "tasks": TASKS, **change}
    entries = len(box.results)
    with pytest.raises(error, match=None) as raised:
        calls.merge_and_evaluate(**args, box=box)
    assert message in str(raised.value)
    assert len(box.results) == entries


@pytest.mark.parametrize(("tasks", "message"), [(["pocket_digits", "nope"], "No expert for task(s) 'nope'"),
                                                (["pocket_digits"], "Choose at least two experts")])
def test_a_bad_choice_of_experts_gets_the_zoos_message(box, tasks, message):
    with pytest.raises(ZooError) as raised:
        calls.merge_and_evaluate("pocket", ["task_arithmetic"], tasks=tasks, box=box)
    assert message in str(raised.value)


def test_the_lists_say_what_a_call_may_name(box):
    zoos = calls.list_zoos(box=box)["zoos"]
    assert [z["name"] for z in zoos][0] == "pocket" and all(z["description"] for z in zoos)
    methods = calls.list_methods(box=box)
    assert [m["name"] for m in methods["methods"]] == list_methods()
    for entry in methods["methods"]:
        assert [p["name"] for p in entry["params"]] == [p.name for p in get_method(entry["name"]).params]
    assert [s["argument"] for s in methods["adaptation"]] == [calls.ADAPT_ARGS[s.name] for s in SETTINGS]
    assert set(methods["built_in"]) == {"pretrained", "experts", "wemoe_oracle"}
    experts = calls.list_experts("pocket", box=box)["experts"]
    assert len(experts) == 8 and experts[0]["task"] == "pocket_digits" and experts[0]["classes"][:2] == ["0", "1"]
    assert all(e["test_images"] == 480 for e in experts)
    json.dumps([zoos, methods, experts])


def _png(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_classify_image_as_the_workbench_classifies(box):
    bench = box.bench("pocket", TASKS)
    photo = bench.tasks[1].dataset("test")["image"][0]
    got = calls.classify_image("pocket", _png(photo), ["task_arithmetic", "wemoe"], tasks=TASKS, adapt_steps=STEPS,
                               box=box)
    bench.merge("task_arithmetic")
    bench.merge("wemoe")
    for _ in bench.adapt("wemoe", steps=STEPS):
        pass
    (seen,) = bench.classify([photo])
    assert got["tasks"] == TASKS and set(got["experts"]) == set(TASKS)
    assert list(got["models"]) == ["pretrained", "task_arithmetic", "wemoe"]
    for name, ranked in seen.models.items():
        assert [r["label"] for r in got["models"][name]] == list(ranked.labels)
    assert got["task"] == seen.task and got["guess"]["task"] == seen.guess.task
    assert got["routing"]["merge"] == "wemoe" and len(got["routing"]["weights"][0]) == 2
    uri = calls.classify_image("pocket", "data:image/png;base64," + _png(photo), ["task_arithmetic"], tasks=TASKS,
                               task="pocket_digits", top_k=2, box=box)
    assert uri["task"] == "pocket_digits" and uri["task_chosen"] and len(uri["models"]["task_arithmetic"]) == 2
    with pytest.raises(TaskError, match="Unknown task 'pocket_flags'"):
        calls.classify_image("pocket", _png(photo), ["task_arithmetic"], tasks=TASKS, task="pocket_flags", box=box)
    with pytest.raises(WemoeError, match="not base64"):
        calls.classify_image("pocket", "not an image!", ["task_arithmetic"], tasks=TASKS, box=box)
    with pytest.raises(MethodError, match="out of range"):
        calls.classify_image("pocket", _png(photo), ["task_arithmetic"], tasks=TASKS, top_k=0, box=box)


def test_the_views_are_the_librarys(box):
    from wemoe.analysis.interference import interference
    from wemoe.analysis.sweep import lambda_sweep

    bench = box.bench("pocket", TASKS)
    found = calls.interference("pocket", tasks=TASKS, top_k_percent=20, box=box)
    assert found == {"zoo": "pocket", **interference(bench.zoo, 20.0).to_dict()}
    swept = calls.lambda_sweep("pocket", tasks=TASKS, methods=["task_arithmetic"], images_per_task=8, box=box)
    assert swept == {"zoo": "pocket", **lambda_sweep(bench, ["task_arithmetic"], per_task=8).to_dict()}
    cross = calls.cross_accuracy("pocket", tasks=TASKS, images_per_task=8, box=box)["accuracy"]
    assert list(cross) == TASKS and cross["pocket_digits"]["pocket_digits"] >= cross["pocket_shapes"]["pocket_digits"]
    cost = calls.cost("pocket", ["pretrained", "task_arithmetic", "wemoe"], tasks=TASKS, images_per_task=8,
                      adapt_steps=STEPS, box=box)["cost"]
    assert cost["task_arithmetic"]["extra_parameters"] == 0 and cost["wemoe"]["extra_parameters"] > 0
    robust = calls.robustness("pocket", ["pretrained", "wemoe"], corruption="contrast", severity=2, tasks=TASKS,
                              images_per_task=8, adapt_steps=STEPS, box=box)
    assert set(robust["accuracy"]) == {"clean", "contrast"} and robust["routing_shift"]["merge"] == "wemoe"
    with pytest.raises(WemoeError, match="Unknown corruption 'fog'"):
        calls.robustness("pocket", ["pretrained"], corruption="fog", tasks=TASKS, box=box)
    with pytest.raises(MethodError, match="the sweep covers"):
        calls.lambda_sweep("pocket", methods=["wemoe"], box=box)


def test_every_argument_of_every_tool_is_documented_on_one_line():
    import inspect

    for tool in calls.TOOLS:
        doc = inspect.getdoc(tool)
        args = doc.split("Args:\n", 1)[1].split("\n\n", 1)[0].splitlines() if "Args:" in doc else []
        named = {line.strip().split(":", 1)[0] for line in args}
        shown = [p.name for p in inspect.signature(tool).parameters.values() if p.kind is not p.KEYWORD_ONLY]
        assert named == set(shown), tool.__name__
        assert "Returns:" in doc, tool.__name__
