"""The launched app driven headless through its api names with gradio_client (tiny zoo; the pocket zoo when shipped)."""

import json
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app import build_demo
from app.handlers import AUTO_TASK
from app.session import AppConfig
from tests.app_support import tiny_config, write_examples

ROOT = Path(__file__).resolve().parent.parent
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
            "/classify_example", "/select_example", "/reclassify", "/evaluate", "/routing", "/export"} <= names
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
    assert predictions["headers"] == ["rank", "pretrained", "task_arithmetic", "wemoe", "expert task0", "expert task1", "expert task2"]
    assert len(predictions["data"]) == 3 and "%" in predictions["data"][0][1]
    assert "routers think this image is from" in guess
    plot = json.loads(heatmap["plot"])
    assert plot["data"][0]["type"] == "heatmap" and plot["data"][0]["y"] == ["block 0", "block 1", "block 2"]
    table, _, _, csv_path, json_path = client.predict(oracle=False, api_name="/evaluate")
    assert list(_rows(table)) == ["pretrained", "experts", "task_arithmetic", "wemoe"]
    report = json.loads(Path(json_path).read_text())
    assert report["methods"]["wemoe"]["adapt_steps"] == 3 and report["methods"]["task_arithmetic"]["params"] == {"lambda": 0.5}
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
    with pytest.raises(AppError, match="not in the list of choices"):  # gradio checks the radio
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


@pytest.mark.skipif(not (POCKET / "manifest.json").is_file(), reason="the pocket zoo is not shipped under assets/pocket/ yet")
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
        assert rows["experts"][-1] > rows["task_arithmetic"][-1]  # the merging problem is visible
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
