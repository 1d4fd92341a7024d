"""The launched app driven headless through its api names with gradio_client (tiny zoo; the pocket zoo when shipped)."""

import json
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app import build_demo
from app.inputs import AUTO_TASK
from app.session import AppConfig
from tests.app_support import tiny_config, write_examples

ROOT = Path(__file__).resolve().parents[2]
POCKET = ROOT / "assets" / "pocket"


def _launch(config):
    demo = build_demo(config)
    demo.queue()
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    return demo


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = tiny_config(write_examples(tmp_path_factory.mktemp("examples")))
    demo = _launch(config)
    yield demo, config
    demo.close()


def _client(demo) -> Client:
    return Client(demo.local_url, verbose=False)


def _rows(table) -> dict[str, list]:
    return {row[0]: row[1:] for row in table["data"]}


def test_every_event_has_an_api_name(server):
    demo, _ = server
    names = set(_client(demo).view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/load_zoo", "/merge", "/adapt", "/adapt_after_merge", "/cancel", "/classify_upload", "/classify_sketch",
            "/classify_example", "/select_example", "/reclassify", "/prediction_view", "/evaluate", "/routing",
            "/export"} <= names
    for dependency in demo.config["dependencies"]:
        assert dependency["api_name"], dependency


def test_the_whole_flow(server, tmp_path):
    demo, config = server
    client = _client(demo)
    info, *_ = client.predict(zoo="tiny", api_name="/load_zoo")
    assert "Experts: 3" in info
    status, target, _, estimate = client.predict(methods=["task_arithmetic", "wemoe"], images_per_task=3,
                                                       task_arithmetic__lambda=0.5, api_name="/merge")
    assert "task_arithmetic" in status and target["value"] == "wemoe" and "Estimated time" in estimate
    status, _ = client.predict(target="wemoe", steps=3, lr=1e-2, images_per_task=3, api_name="/adapt")
    assert status.startswith("Adapted wemoe: 3 steps")
    image = handle_file(str(config.examples_dir / "task1" / "example0.png"))
    _, predictions, guess, heatmap = client.predict(image=image, task=AUTO_TASK, api_name="/classify_upload")
    guessed = guess.split("routers' guess: ")[1].split("**")[0]
    assert predictions["headers"] == ["wemoe", f"expert {guessed}"]  # compact: the merge vs its expert
    assert len(predictions["data"]) == 3 and "%" in predictions["data"][0][1]
    every = client.predict(show_all=True, api_name="/prediction_view")
    assert every["headers"] == ["rank", "pretrained", "task_arithmetic", "wemoe",
                                "expert task0", "expert task1", "expert task2"]
    assert client.predict(show_all=False, api_name="/prediction_view")["headers"] == predictions["headers"]
    plot = json.loads(heatmap["plot"])
    assert plot["data"][0]["type"] == "heatmap" and plot["data"][0]["y"] == ["block 0", "block 1", "block 2"]
    table, _, _, csv_path, json_path = client.predict(oracle=False, api_name="/evaluate")
    assert list(_rows(table)) == ["pretrained", "experts", "task_arithmetic", "wemoe"]
    assert table["headers"] == ["model", "average", "task0", "task1", "task2"]  # the average first on the page
    report = json.loads(Path(json_path).read_text())
    assert report["methods"]["wemoe"]["adapt_steps"] == 3
    assert report["methods"]["task_arithmetic"]["params"] == {"lambda": 0.5}
    assert Path(csv_path).read_text().startswith("model,task0,task1,task2,average")
    *_, routing_note = client.predict(feature_map="pca", api_name="/routing")
    assert "after 3 adaptation steps" in routing_note
    model_file = client.predict(merge="wemoe", api_name="/export")
    assert Path(model_file).stat().st_size > 0


def test_bad_input_gives_a_message_and_keeps_the_session(server, tmp_path):
    demo, _ = server
    client = _client(demo)
    with pytest.raises(AppError, match="Load a zoo first"):
        client.predict(methods=["task_arithmetic"], images_per_task=3, api_name="/merge")
    client.predict(zoo="tiny", api_name="/load_zoo")
    with pytest.raises(AppError, match="Merge with WEMoE first"):
        client.predict(target="wemoe", steps=3, lr=1e-3, images_per_task=2, api_name="/adapt")
    client.predict(methods=["task_arithmetic"], images_per_task=3, api_name="/merge")
    junk = tmp_path / "photo.png"
    junk.write_bytes(b"definitely not a png")
    with pytest.raises(AppError, match="not an image this app can read"):
        client.predict(image=handle_file(str(junk)), task=AUTO_TASK, api_name="/classify_upload")
    with pytest.raises(AppError, match="Unknown zoo 'no-such-zoo'. Choose one of: tiny, tiny2, custom"):
        client.predict(zoo="no-such-zoo", api_name="/load_zoo")
    table, *_ = client.predict(oracle=False, api_name="/evaluate")  # the loaded zoo and merge are still there
    assert list(_rows(table)) == ["pretrained", "experts", "task_arithmetic"]


def test_two_clients_do_not_see_each_other(server):
    demo, _ = server
    alice, bob = _client(demo), _client(demo)
    alice.predict(zoo="tiny", api_name="/load_zoo")
    bob.predict(zoo="tiny2", samples=6, api_name="/load_zoo")
    alice.predict(methods=["task_arithmetic"], images_per_task=3, task_arithmetic__lambda=0.3, api_name="/merge")
    bob.predict(methods=["ties", "wemoe"], images_per_task=3, api_name="/merge")
    alice_table, *_, alice_json = alice.predict(oracle=False, api_name="/evaluate")
    bob_table, *_, bob_json = bob.predict(oracle=False, api_name="/evaluate")
    assert list(_rows(alice_table)) == ["pretrained", "experts", "task_arithmetic"]
    assert list(_rows(bob_table)) == ["pretrained", "experts", "ties", "wemoe"]
    assert json.loads(Path(alice_json).read_text())["samples_per_task"]["task0"] == 12
    assert json.loads(Path(bob_json).read_text())["samples_per_task"]["task0"] == 6
    with pytest.raises(AppError, match="Choose a merge"):
        alice.predict(merge="wemoe", api_name="/export")  # bob's WEMoE is not alice's


def test_the_pocket_flow():
    demo = _launch(AppConfig(samples=32))
    try:
        client = _client(demo)
        info, *_ = client.predict(zoo="pocket", samples=32, api_name="/load_zoo")
        assert "pocket" in info.lower()
        client.predict(methods=["task_arithmetic", "wemoe"], images_per_task=4, api_name="/merge")
        status, _ = client.predict(target="wemoe", steps=3, lr=1e-3, images_per_task=4, api_name="/adapt")
        assert "3 steps" in status
        examples = sorted((ROOT / "assets" / "examples").glob("*/*.png"))
        image = handle_file(str(examples[0])) if examples else None
        if image is not None:
            _, predictions, _, heatmap = client.predict(image=image, task=AUTO_TASK, api_name="/classify_upload")
            assert len(predictions["data"]) == 5 and json.loads(heatmap["plot"])["data"][0]["type"] == "heatmap"
        table, *_ = client.predict(oracle=False, api_name="/evaluate")
        rows = _rows(table)
        assert list(rows) == ["pretrained", "experts", "task_arithmetic", "wemoe"]
        assert rows["experts"][0] > rows["task_arithmetic"][0]  # the merging problem is visible (average first)
    finally:
        demo.close()


def test_cancel_stops_adaptation_and_keeps_the_routers(server):
    import re
    import time

    demo, _ = server
    client = _client(demo)
    client.predict(zoo="tiny", api_name="/load_zoo")
    client.predict(methods=["wemoe"], images_per_task=2, api_name="/merge")
    job = client.submit(target="wemoe", steps=2000, lr=1e-3, images_per_task=2, api_name="/adapt")
    deadline = time.monotonic() + 120
    while not job.outputs() and time.monotonic() < deadline:  # the first step has finished
        time.sleep(0.1)
    assert job.outputs(), "no adaptation step finished"
    client.predict(target="wemoe", api_name="/cancel")
    job.cancel()

    def kept() -> int:
        status = client.predict(target="wemoe", api_name="/cancel")
        return int(re.search(r"after step (\d+)", status).group(1))

    time.sleep(2)  # let a step that was running when Cancel came finish
    first = kept()
    time.sleep(2)
    assert 1 <= first == kept() < 2000  # stopped, and the finished steps are kept
    *_, report = client.predict(oracle=False, api_name="/evaluate")
    assert json.loads(Path(report).read_text())["methods"]["wemoe"]["adapt_steps"] == first


def test_cancel_through_the_api_stops_the_running_adaptation(server):
    """#14 item 4: /cancel alone (no job.cancel()) stops the session's adaptation, and names the step kept."""
    import re
    import time

    demo, _ = server
    client = _client(demo)
    client.predict(zoo="tiny", api_name="/load_zoo")
    client.predict(methods=["wemoe"], images_per_task=2, api_name="/merge")
    job = client.submit(target="wemoe", steps=2000, lr=1e-3, images_per_task=2, api_name="/adapt")
    deadline = time.monotonic() + 120
    while not job.outputs() and time.monotonic() < deadline:  # the first step has finished
        time.sleep(0.05)
    message = client.predict(target="wemoe", api_name="/cancel")
    kept = int(re.search(r"after step (\d+)", message).group(1))
    status, _ = job.result(timeout=60)  # the adaptation ends by itself, long before its 2000 steps
    assert status.startswith("Stopped after") and f"after step {kept}." in status
    *_, report = client.predict(oracle=False, api_name="/evaluate")
    assert 1 <= json.loads(Path(report).read_text())["methods"]["wemoe"]["adapt_steps"] == kept < 2000


def _progress_targets(demo) -> dict[str, list[str]]:
    """Per api name, the types of the components its progress animation and its error badge are drawn on."""
    types = {c["id"]: c["type"] for c in demo.config["components"]}
    return {dep["api_name"]: [types[i] for i in (dep["show_progress_on"] or dep["outputs"])]
            for dep in demo.config["dependencies"] if dep["show_progress"] != "hidden"}


def test_progress_shows_on_the_status_text_not_over_the_plots(server):
    """#14 item 9: adaptation and routing show their progress as status text; no overlay covers the loss curve or
    the quick PCA map while they fill in."""
    demo, _ = server
    shown = _progress_targets(demo)
    for name in ("merge", "adapt", "adapt_after_merge", "routing", "evaluate"):
        # nothing, or (long jobs: their place in the queue and time) the status text only: never a plot or table
        assert shown.get(name, ["markdown"]) == ["markdown"], (name, shown.get(name))
    dependencies = {dep["api_name"]: dep for dep in demo.config["dependencies"]}
    types = {c["id"]: c["type"] for c in demo.config["components"]}
    assert [types[i] for i in dependencies["adapt"]["outputs"]] == ["markdown", "plot"]  # the status text, the curve


def test_errors_leave_no_badges_on_plots_tables_or_dropdowns(server):
    """#14 item 10: an event that fails draws gradio's "Error" badge on its progress targets; only status text
    may carry one (the message itself is a toast), so plots, tables, dropdowns and files keep their last value."""
    demo, _ = server
    for name, targets in _progress_targets(demo).items():
        assert set(targets) <= {"markdown"}, (name, targets)


def test_bad_values_get_a_message_naming_the_field_and_one_log_line(server, capfd, caplog):
    """#14 item 12: non-numeric values through the API are refused with the field named and what to enter, each
    logged as one line without a traceback; /select_example can be called by an example's name."""
    import logging
    import re

    demo, _ = server
    client = _client(demo)
    client.predict(zoo="tiny", api_name="/load_zoo")
    client.predict(methods=["task_arithmetic", "wemoe"], images_per_task=2, api_name="/merge")
    cases = [
        ({"zoo": "tiny", "samples": "abc", "api_name": "/load_zoo"}, "Test images per task: enter a whole number"),
        ({"methods": ["task_arithmetic"], "images_per_task": 3, "task_arithmetic__lambda": "abc", "api_name": "/merge"},
         "Parameter task_arithmetic.lambda must be a float, got 'abc'"),
        ({"methods": ["task_arithmetic"], "images_per_task": 3, "task_arithmetic__lambda": None, "api_name": "/merge"},
         "Parameter task_arithmetic.lambda must be a float, got None"),
        ({"methods": ["task_arithmetic"], "images_per_task": "abc", "api_name": "/merge"},
         "Images per task per step: enter a whole number"),
        ({"target": "wemoe", "steps": 3, "lr": "x", "images_per_task": 2, "api_name": "/adapt"},
         "Learning rate: enter a number from 1e-07 to 1"),
        ({"target": "wemoe", "steps": None, "lr": 1e-3, "images_per_task": 2, "api_name": "/adapt"},
         "Adaptation steps: enter a whole number"),
        ({"target": "wemoe", "steps": "abc", "lr": 1e-3, "images_per_task": 2, "api_name": "/adapt_after_merge"},
         "Adaptation steps: enter a whole number"),
        ({"oracle": "abc", "api_name": "/evaluate"}, "Also the WEMoE oracle: enter true or false"),
        ({"feature_map": "tsne", "api_name": "/routing"}, "Unknown map 'tsne'"),
        ({"zoo": 5, "api_name": "/load_zoo"}, "Zoo: choose one of tiny, tiny2, custom, got 5"),
        ({"target": ["wemoe"], "steps": 3, "lr": 1e-3, "images_per_task": 2, "api_name": "/adapt"},
         "Merge with WEMoE first"),
        ({"task": AUTO_TASK, "example": None, "api_name": "/select_example"}, "Pick an example image first"),
    ]
    capfd.readouterr()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="app"):
        for kwargs, message in cases:
            with pytest.raises(AppError, match=re.escape(message)):
                client.predict(**kwargs)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    refusals = [r.getMessage() for r in caplog.records if r.name.startswith("app") and "refused" in r.getMessage()]
    assert len(refusals) == len(cases) and all("\n" not in r for r in refusals), refusals
    assert "enter a whole number" in client.predict(target="wemoe", steps="abc", per_task=2, api_name="/estimate_steps")
    _, predictions, guess, _, name = client.predict(task=AUTO_TASK, example="task1/example0.png",
                                                    api_name="/select_example")
    assert name == "task1/example0.png" and predictions["data"] and guess
    table, *_ = client.predict(oracle=False, api_name="/evaluate")  # the session went on as it was
    assert list(_rows(table)) == ["pretrained", "experts", "task_arithmetic", "wemoe"]
