"""Issue #27 (4-6): every value of the "Try images" panel and the analysis views is checked by the app itself.

The events run as gradio runs them (``Blocks.process_api``: its preprocessing, then the event function), so a word in
a number's place, None, an out-of-range number or a wrong count of lambdas gets one message naming the field (as
/merge and /adapt do), never gradio's "The upstream Gradio app has raised an exception" and a traceback; each
refusal is logged as one line and leaves the session as it was. An image given to routing per patch is read as the
uploads of "Try images" are (empty, not an image, over the size or pixel cap: the same messages).
"""

from __future__ import annotations

import asyncio
import logging

import gradio as gr
import numpy as np
import pytest
from gradio.state_holder import SessionState
from PIL import Image

from app import handlers, inputs
from app.analysis_tab import DOMINANT, MAX_TASK_SLIDERS, build_analysis_tab, per_task_lambdas_view
from app.layout import LIGHT, LONG, build_demo
from app.session import Session
from tests.app_support import tiny_config, write_examples

EXAMPLE = "task1/example0.png"
BLOCKS = "-1: the last routed block; routed blocks: 0 to 2"  # the tiny zoo's 3 blocks, all routed by WEMoE


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return tiny_config(write_examples(tmp_path_factory.mktemp("examples")), max_image_size="20kb")


@pytest.fixture(scope="module")
def demo(config):
    return build_demo(config)


@pytest.fixture(scope="module")
def analysis_demo(config):
    """The analysis panel alone, built with the app's config (its upload limits)."""
    with gr.Blocks() as blocks:
        build_analysis_tab(gr.State(Session()), LIGHT, LONG, config=config)
    return blocks


def _merged(config) -> Session:
    session = Session()
    handlers.load_zoo(session, config, "tiny")
    handlers.merge(session, ["task_arithmetic", "wemoe"], {}, per_task=2)
    handlers.predict(session, inputs.read_example(EXAMPLE, config), inputs.AUTO_TASK, config)
    return session


@pytest.fixture(scope="module")
def session(config):
    """A loaded tiny zoo, two merges and a classified image: what every refusal must leave as it is."""
    session = _merged(config)
    yield session
    session.close()


def _snapshot(session: Session) -> dict:
    bench = session.bench
    return {"bench": id(bench), "merges": {n: (id(r), r.adapt_steps, dict(r.params)) for n, r in bench.merges.items()},
            "image": id(session.image), "predictions": session.predictions.to_json(),
            "columns": list(session.prediction_columns), "show_all": session.show_all_predictions,
            "last_merged": list(session.last_merged), "table": session.table, "job": session.job,
            "locked": session.lock.locked()}


def _event(blocks: gr.Blocks, api_name: str):
    found = [fn for fn in blocks.fns.values() if fn.api_name == api_name]
    assert len(found) == 1, api_name
    return found[0]


def run(blocks: gr.Blocks, api_name: str, session: Session, *values):
    """The event ``api_name`` as gradio runs it for a request (preprocessing, then the function), for ``session``."""
    fn = _event(blocks, api_name)
    state = SessionState(blocks)
    state[fn.inputs[0]._id] = session
    result = asyncio.run(blocks.process_api(fn, [None, *values], state=state, explicit_call=True))
    return result["data"]


def _file(path) -> dict:
    """A file as gradio's page or client sends it (FileData)."""
    return {"path": str(path), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def _drawing(tmp_path) -> dict:
    image = Image.new("RGB", (224, 224), "black")
    image.paste((255, 255, 255), (90, 40, 130, 190))
    image.save(tmp_path / "composite.png")
    return {"background": None, "layers": [], "composite": _file(tmp_path / "composite.png"), "id": None}


def _valid(api_name: str, config, tmp_path) -> list:
    """Good values for every input of the event ``api_name`` (after the session)."""
    seen = [inputs.AUTO_TASK, "contrast", 3]
    return {
        "classify_upload": lambda: [_file(config.examples_dir / EXAMPLE), *seen],
        "classify_sketch": lambda: [_drawing(tmp_path), *seen],
        "classify_example": lambda: [EXAMPLE, *seen],
        "select_example": lambda: [inputs.AUTO_TASK, EXAMPLE, "contrast", 3],
        "reclassify": lambda: list(seen),
        "reclassify_corruption": lambda: list(seen),
        "reclassify_severity": lambda: list(seen),
        "prediction_view": lambda: [True],
        "routing_patches": lambda: [None, -1, "contrast", 3, DOMINANT],
        "interference": lambda: [100, "whole"],
        "per_task_lambdas": lambda: [0.3] * MAX_TASK_SLIDERS,
        "robustness": lambda: ["pixelate", 3],
    }[api_name]()


TRY_EVENTS = ("classify_upload", "classify_sketch", "classify_example", "select_example", "reclassify",
              "reclassify_corruption", "reclassify_severity")
SEVERITY = "Severity: enter a whole number from 1 to 5"
FIELDS = [  # (event, index of the input after the session, the message's start, bad values, other inputs changed)
    *[(name, index, SEVERITY, ["x", None, 1e9, -5, 2.5], {index - 1: inputs.NO_CORRUPTION})  # checked uncorrupted too
      for name, index in ((n, 2 if n.startswith("reclassify") else 3) for n in TRY_EVENTS)],
    ("routing_patches", 3, SEVERITY, ["x", None, 1e9, -5, 2.5], {2: inputs.NO_CORRUPTION}),
    ("robustness", 1, SEVERITY, ["x", None, 1e9, -5], {}),
    ("routing_patches", 1, f"Block: enter a whole number from -1 to 2 ({BLOCKS})", ["x", 1e9, -5, 99, 0.5, True], {}),
    ("interference", 0, "Percent of each task vector kept: enter a number from 1 to 100", ["x", None, 1e9, -5], {}),
    ("per_task_lambdas", 0, "lambda task0: enter a number from -1 to 2", ["x", None, 1e9, -5], {}),
    ("per_task_lambdas", 2, "lambda task2: enter a number from -1 to 2", ["x", None, 1e9, -5], {}),
    ("per_task_lambdas", 7, "lambda slider 8 (no task in this zoo): enter a number from -1 to 2", ["x", 1e9, -5], {}),
    ("prediction_view", 0, "Every model: enter true or false", ["x", 1e9, -5, 1], {}),
]
CASES = [pytest.param(name, index, start, bad, others, id=f"{name}-{index}-{bad!r}")
         for name, index, start, bads, others in FIELDS for bad in bads]


def _refused(call, session: Session, caplog, event: bool = True) -> str:
    """The message of the gr.Error that ``call`` raises: no traceback, logged as one line by an ``event`` (the
    wrapper ``app.events.quiet``), the session unchanged."""
    before = _snapshot(session)
    caplog.clear()
    with caplog.at_level(logging.INFO), pytest.raises(gr.Error) as refused:
        call()
    assert refused.value.print_exception is False  # gradio prints no traceback for it
    lines = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == (1 if event else 0)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert _snapshot(session) == before
    return refused.value.message


@pytest.mark.parametrize("name, index, start, bad, others", CASES)
def test_a_bad_value_is_refused_naming_its_field(demo, session, config, tmp_path, caplog, name, index, start, bad,
                                                 others):
    values = _valid(name, config, tmp_path)
    values[index] = bad
    for other, value in others.items():
        values[other] = value
    message = _refused(lambda: run(demo, name, session, *values), session, caplog)
    assert message == f"{start}, got {bad!r}."


@pytest.mark.parametrize("name", [*TRY_EVENTS, "prediction_view", "routing_patches", "interference",
                                  "per_task_lambdas", "robustness"])
def test_the_good_values_are_taken(demo, config, tmp_path, name):
    """The values the refusals start from are good ones: each event runs with them (a fresh session)."""
    fresh = _merged(config)
    try:
        outputs = run(demo, name, fresh, *_valid(name, config, tmp_path))
        assert outputs and outputs[0] is not None
    finally:
        fresh.close()


def test_every_event_of_the_two_panels_checks_its_own_values(demo):
    """No gradio preprocessing (whose refusals are a generic error and a traceback) on the panels' events."""
    names = [*TRY_EVENTS, "prediction_view", "routing_patches", "interference", "cross_accuracy", "lambda_sweep",
             "task_sliders", "per_task_lambdas", "per_task_lambdas_view", "robustness", "cost"]
    assert {name: _event(demo, name).preprocess for name in names} == dict.fromkeys(names, False)


@pytest.mark.parametrize("count", [1, 2, 4, MAX_TASK_SLIDERS - 1, MAX_TASK_SLIDERS + 1])
def test_per_task_lambdas_wants_one_per_task(session, caplog, count):
    """One lambda per task of the loaded zoo (3), or the page's 20 sliders; any other count says what it expects."""
    message = _refused(lambda: per_task_lambdas_view(session, *[0.3] * count), session, caplog, event=False)
    assert message == (f"Give one lambda per task: 3 values for the tasks task0, task1, task2 (or the page's "
                       f"{MAX_TASK_SLIDERS} sliders), got {count}.")


def test_per_task_lambdas_takes_one_per_task_or_the_sliders(session):
    three = per_task_lambdas_view(session, 0.5, 0.1, 0.3)
    sliders = per_task_lambdas_view(session, 0.5, 0.1, 0.3, *[None] * (MAX_TASK_SLIDERS - 3))
    assert list(three.data[0].y) == list(sliders.data[0].y)


def test_a_block_without_a_router_is_refused_before_any_work(session, caplog):
    """'Block 99 has no router.. Nothing was changed' (and a logged traceback) was the library's error after the
    work."""
    from app.analysis_tab import routing_patches_view

    message = _refused(lambda: routing_patches_view(session, None, 99), session, caplog, event=False)
    assert message == f"Block: enter a whole number from -1 to 2 ({BLOCKS}), got 99."
    assert routing_patches_view(session, None, 2)[0].layout.annotations[0].text.endswith("block 2")


def test_an_example_name_must_be_a_name(demo, session, config, tmp_path, caplog):
    values = _valid("classify_example", config, tmp_path)
    values[0] = ["task1/example0.png"]
    message = _refused(lambda: run(demo, "classify_example", session, *values), session, caplog)
    assert message == "Example image: choose one of the example images, got ['task1/example0.png']."


def test_a_drawing_sent_as_blobs_is_read_by_the_sketchpad(demo, config, tmp_path):
    """Gradio's realtime sketchpads send their layers as blobs under an id: read as gradio's preprocessing reads them
    (and taken off the sketchpad), the same prediction as the drawing sent as a file."""
    import io

    from gradio.components.image_editor import EditorDataBlobs

    fresh = _merged(config)
    try:
        values = _valid("classify_sketch", config, tmp_path)
        as_file = run(demo, "classify_sketch", fresh, *values)
        sketch = next(b for b in demo.blocks.values() if isinstance(b, gr.Sketchpad))
        png = io.BytesIO()
        Image.open(tmp_path / "composite.png").save(png, format="PNG")
        sketch.blob_storage["drawing-1"] = EditorDataBlobs(background=None, layers=[], composite=png.getvalue())
        values[0] = {"background": None, "layers": [], "composite": None, "id": "drawing-1"}
        as_blobs = run(demo, "classify_sketch", fresh, *values)
        assert as_blobs[1] == as_file[1] and "drawing-1" not in sketch.blob_storage
    finally:
        fresh.close()

def _bad_images(tmp_path) -> dict:
    text = tmp_path / "notes.txt"
    text.write_text("not an image at all\n" * 10)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    huge = tmp_path / "huge.png"  # 64 megapixels (over the 40 MP cap) in a few KB: 1-bit, all black
    Image.new("1", (8000, 8000)).save(huge)
    heavy = tmp_path / "heavy.png"  # ~29 KB of noise, over this config's 20 KB image limit
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (99, 99, 3), dtype=np.uint8)).save(heavy)
    return {"text": (text, "'notes.txt' is not an image this app can read (UnidentifiedImageError)"),
            "empty": (empty, "The uploaded file is empty. Upload an image file"),
            "huge": (huge, "The image is 8000 x 8000 pixels, more than the 40 megapixels this app accepts"),
            "heavy": (heavy, "'heavy.png' is ")}


@pytest.mark.parametrize("kind", ["text", "empty", "huge", "heavy"])
def test_routing_per_patch_reads_its_image_as_try_images_reads_uploads(demo, analysis_demo, session, config, tmp_path,
                                                                      caplog, kind):
    path, start = _bad_images(tmp_path)[kind]
    upload = _valid("classify_upload", config, tmp_path)
    upload[0] = _file(path)
    expected = _refused(lambda: run(demo, "classify_upload", session, *upload), session, caplog)
    assert expected.startswith(start)
    patches = _valid("routing_patches", config, tmp_path)
    patches[0] = _file(path)
    assert _refused(lambda: run(analysis_demo, "routing_patches", session, *patches), session, caplog) == expected
    if kind != "heavy":  # the page's own analysis tab (its limits: AppConfig's, until layout passes the app's config)
        assert _refused(lambda: run(demo, "routing_patches", session, *patches), session, caplog) == expected


def test_routing_per_patch_routes_an_uploaded_image(analysis_demo, session, config, tmp_path):
    """An image file given to routing per patch is the image routed (read like an upload), not the first test one."""
    from app.analysis_tab import routing_patches_view

    path = config.examples_dir / EXAMPLE
    figure, _ = run(analysis_demo, "routing_patches", session, _file(path), 1, "none", 3, DOMINANT)
    direct, _ = routing_patches_view(session, inputs.read_upload(str(path), config), 1)
    first, _ = routing_patches_view(session, None, 1)
    assert figure["plot"] == direct.to_json() != first.to_json()


def test_the_launched_app_says_which_field_is_wrong(config):
    """Through gradio_client: the specific message, not "The upstream Gradio app has raised an exception"."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    demo = build_demo(config)
    demo.queue()
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    try:
        client = Client(demo.local_url, verbose=False)
        client.predict(zoo="tiny", api_name="/load_zoo")
        client.predict(methods=["wemoe"], images_per_task=2, api_name="/merge")
        calls = [({"layer": "x"}, "/routing_patches", "Block: enter a whole number from -1 to 2"),
                 ({"layer": 99}, "/routing_patches", "Block: enter a whole number from -1 to 2"),
                 ({"top_k": "x"}, "/interference", "Percent of each task vector kept: enter a number from 1 to 100"),
                 ({"corruption": "contrast", "severity": "x"}, "/robustness", "Severity: enter a whole number"),
                 ({"task": inputs.AUTO_TASK, "corruption": "contrast", "severity": "x"}, "/reclassify_severity",
                  "Severity: enter a whole number"),
                 ({"show_all": "x"}, "/prediction_view", "Every model: enter true or false, got 'x'.")]
        for kwargs, api_name, message in calls:
            with pytest.raises(AppError) as refused:
                client.predict(**kwargs, api_name=api_name)
            assert message in str(refused.value) and "upstream" not in str(refused.value), (api_name, refused.value)
    finally:
        demo.close()
