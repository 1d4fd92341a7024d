"""The "Try images" panel: an upload, the example gallery or a drawing, classified by every model, with the head,
a corruption (the robustness view's) and the image's routing heatmap; its events are light (app.layout.LIGHT) and
check their own values (preprocess=False: every refusal names its field, without a traceback)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from app import figures, handlers, inputs, texts, views
from app.errors import refuse
from app.events import GalleryClick, quiet
from app.session import AppConfig, Session
from wemoe.zoo_tasks import zoo_task_names


@dataclass
class TryPanel:
    """The panel's controls that loading a zoo updates (its tasks and its examples)."""

    task_choice: Any
    gallery: Any
    example_name: Any


# The panel's events (and the analysis views that take an image or a severity) skip gradio's preprocessing
# (preprocess=False): their values arrive as sent and are checked here, each refusal naming its field, instead of
# gradio's "The upstream Gradio app has raised an exception" and a traceback for a word in a number's place.


def shown_value(value: Any, width: int = 60) -> str:
    """``repr(value)`` for a message, cut to ``width`` characters (a refused value can be anything a visitor sent)."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def severity_level(value: Any) -> int:
    """The 'Severity' slider as a whole number 1-5, whatever the corruption (also 'none'), else a ``gr.Error``."""
    return inputs.number(value, "Severity", whole=True, minimum=1, maximum=5)


def image_path(value: Any, field: str = "Image") -> str | None:
    """The file of an image input's value as it arrives without preprocessing (a path, or a FileData dict with its
    ``path``); None when nothing was given, a ``gr.Error`` naming ``field`` for anything else."""
    if isinstance(value, Mapping):
        value = value.get("path")
    if value is None or value == "":
        return None
    if isinstance(value, (str, Path)):
        return str(value)
    raise refuse(f"{field}: upload an image file ({inputs.IMAGE_TYPES}), got {shown_value(value)}.")


def read_image(value: Any, config: AppConfig, field: str = "Image") -> Image.Image:
    """An image input's file (a gr.File or gr.Image value, not preprocessed) read as the uploads of "Try images" are
    (``inputs.read_upload``: nothing given, empty, not an image, over the size or pixel cap: refused)."""
    return inputs.read_upload(image_path(value, field), config)


def drawn(value: Any, sketch: Any, config: AppConfig) -> Any:
    """The sketchpad's value as it arrives without preprocessing, made what ``inputs.read_sketch`` reads.

    A composite file (what this page and the API send) is read as an upload (``read_image``: size and pixel caps).
    A drawing sent as blobs under an ``id`` (gradio's realtime mode, which this page does not use: no change or input
    event on the sketchpad) is read by the sketchpad's own preprocessing, as gradio would. A value already read (a PIL
    or array composite: a direct call) and nothing drawn are passed on as they are.
    """
    if isinstance(value, Mapping) and value.get("id") is not None:
        try:
            return sketch.preprocess(sketch.data_model.model_validate(value))
        except gr.Error:
            raise
        except Exception as error:  # whatever a malformed payload makes gradio's reader raise: no traceback
            raise refuse(f"Draw a digit: the drawing could not be read ({type(error).__name__}). Draw it again.") \
                from None
    composite = value.get("composite") if isinstance(value, Mapping) else value
    if composite is None or isinstance(composite, (Image.Image, np.ndarray)):
        return value
    return {"composite": read_image(composite, config, "Draw a digit")}


def chosen_example(value: Any) -> str | None:
    """The 'Example image' choice (None: none chosen), else a ``gr.Error``; ``inputs.read_example`` checks the name."""
    if value is None or isinstance(value, str):
        return value
    raise refuse(f"Example image: choose one of the example images, got {shown_value(value)}.")


def seen_as(session: Session, task: Any, corruption: Any, severity: Any) -> int:
    """Check how an image is to be classified (the head, the corruption and its severity) before any image is read;
    returns the severity (``handlers.predict`` checks the head and corruption again, on the same rules)."""
    level = severity_level(severity)
    inputs.corruption_choice(corruption, level)
    if session.bench is not None:
        inputs.chosen_task(session.bench, task)
    return level


def in_words(session: Session, shown: tuple) -> tuple:
    """``handlers.predict``'s (image, table, guess, heatmap) with the guess in the lesson's plain words (``clothing``,
    not ``pocket_clothing``) and the heatmap's title too; the table as it is (its headers are what the endpoints
    return)."""
    from app.lesson import in_plain_words  # here: app.lesson imports this module (through app.analysis_tab)

    image, table, guess, heatmap = shown
    names = session.bench.task_names if session.bench is not None else []
    title = getattr(getattr(getattr(heatmap, "layout", None), "title", None), "text", None)
    if title:  # "Routing of this image (WEMoE (routed))", not the merge's code name
        heatmap.update_layout(title_text=in_plain_words(title, names))
    return image, table, in_plain_words(guess, names), heatmap


def example_words(name: str) -> tuple[str, str]:
    """An example's ``task/file`` name in plain words, (task, what it shows): ``pocket_clothing/1_t-shirt.png`` ->
    (``clothing``, ``t-shirt``)."""
    from app.lesson import plain  # here: app.lesson imports this module (through app.analysis_tab)

    task, _, file = name.partition("/")
    number, _, shows = Path(file).stem.partition("_")
    return plain(task), (shows if number.isdigit() and shows else Path(file).stem).replace("_", " ")


def gallery_items(examples: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``inputs.list_examples``' (path, name) pairs as the gallery shows them: each image captioned with its task in
    plain words (a phone cut ``pocket_clothing/0_hat.png`` to ``pocket_cl...``)."""
    return [(path, example_words(name)[0]) for path, name in examples]


def example_choices(examples: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The 'Example image' dropdown's (shown, value) choices: ``clothing: t-shirt``, the value the example's name."""
    return [(": ".join(example_words(name)), name) for _, name in examples]


def build_try_panel(session: gr.State, config: AppConfig, light: dict) -> TryPanel:
    """The panel and its named events (call inside the Blocks)."""
    with gr.Group(elem_id="panel-try"):
        gr.Markdown(texts.TRY)
        with gr.Row(elem_id="try-row"):  # the columns wrap (min_width) and stack on a phone
            with gr.Column(scale=3, min_width=300, elem_id="try-inputs"):
                upload = gr.File(file_types=["image"], label="Upload an image", elem_id="upload", height=110)
                # the default zoo's gallery: what a click maps to before the session loads another zoo
                examples = inputs.gallery_examples(config, zoo_task_names(config.default_zoo))
                gallery = gr.Gallery(gallery_items(examples), label="Example images (click one)", columns=6,
                                     height=190, allow_preview=False)
                with gr.Row():
                    example_name = gr.Dropdown(example_choices(examples), label="Example image", scale=2)
                    example_button = gr.Button("Classify the example", scale=1)
            with gr.Column(scale=2, min_width=260, elem_id="try-sketch"):
                sketch = gr.Sketchpad(value=Image.new("RGB", (224, 224), "black"), type="pil", label="Draw a digit",
                                      canvas_size=(224, 224), height=300, layers=False,
                                      brush=gr.Brush(colors=["#ffffff"], default_color="#ffffff", default_size=16,
                                                     color_mode="fixed"))
                sketch_button = gr.Button("Classify the drawing")
            with gr.Column(scale=3, min_width=300, elem_id="try-result"):
                preview = gr.Image(label="Image being classified", interactive=False, type="pil", height=200,
                                   elem_id="preview", format="png")  # png: 0.6 ms to encode, webp 2.8 ms
                task_choice = gr.Dropdown(views.task_choices(Session()), value=inputs.AUTO_TASK,
                                          label="Task (head)",
                                          info="Which task's classes to predict; auto uses the routers' guess, or "
                                               "every task's classes when they make none.")
                with gr.Row():  # the robustness view's corruptions, applied to the image being classified
                    corruption = gr.Dropdown(inputs.CORRUPTION_CHOICES, value=inputs.NO_CORRUPTION,
                                             label="Corruption", elem_id="try-corruption", min_width=140)
                    severity = gr.Slider(1, 5, value=3, step=1, label="Severity", min_width=120)
                guess = gr.Markdown(elem_id="guess")
        all_models = gr.Checkbox(False, label="Every model (pretrained, every merge, every expert)",
                                 elem_id="all-models",
                                 info="Off: the merged model next to the expert of the task used.")
        predictions = gr.Dataframe(pd.DataFrame({"merged model": [], "expert": []}), label="Top-5 predictions",
                                   interactive=False, wrap=True, elem_id="predictions")
        gr.Markdown(texts.ROUTING_WEIGHTS, elem_id="routing-weights-note")
        heatmap = gr.Plot(figures.empty_figure("Classify an image to see its routing."), label="Router heatmap",
                          elem_id="heatmap")

    prediction_outputs = [preview, predictions, guess, heatmap]

    @quiet
    def classify_upload(state, image, task=inputs.AUTO_TASK, corruption=inputs.NO_CORRUPTION, severity=3):
        level = seen_as(state, task, corruption, severity)
        return in_words(state, handlers.predict(state, read_image(image, config), task, config, corruption, level))

    @quiet
    def classify_sketch(state, drawing, task=inputs.AUTO_TASK, corruption=inputs.NO_CORRUPTION, severity=3):
        drawing = drawn(drawing, sketch, config)  # first: blobs sent by id are taken off the sketchpad either way
        level = seen_as(state, task, corruption, severity)
        return in_words(state, handlers.predict(state, inputs.read_sketch(drawing, config, state, task), task, config,
                                                corruption, level))

    @quiet
    def classify_example(state, example, task=inputs.AUTO_TASK, corruption=inputs.NO_CORRUPTION, severity=3):
        level = seen_as(state, task, corruption, severity)
        return in_words(state, handlers.predict(state, inputs.read_example(chosen_example(example), config), task,
                                                config, corruption, level))

    @quiet
    def select_example(state, task=inputs.AUTO_TASK, example=None, corruption=inputs.NO_CORRUPTION, severity=3,
                       evt: GalleryClick = None):
        """A gallery click (the page sends which image: ``evt.index``) or, through the API, the example's name."""
        level = seen_as(state, task, corruption, severity)
        example = chosen_example(example)
        if evt is not None and isinstance(evt.index, int):
            tasks = state.bench.task_names if state.bench else zoo_task_names(config.default_zoo)
            examples = inputs.gallery_examples(config, tasks)
            example = examples[evt.index][1] if 0 <= evt.index < len(examples) else None
        return (*in_words(state, handlers.predict(state, inputs.read_example(example, config), task, config,
                                                  corruption, level)), example)

    @quiet
    def reclassify(state, task, corruption=inputs.NO_CORRUPTION, severity=3):
        level = seen_as(state, task, corruption, severity)
        if state.image is None or state.bench is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return in_words(state, handlers.predict(state, state.image, task, config, corruption, level))

    @quiet
    def prediction_view(state, show_all=None):
        """The 'every model' checkbox (None: the session's choice as it is)."""
        return handlers.prediction_view(state, None if show_all is None else inputs.flag(show_all, "Every model"))

    # every event checks its own values (preprocess=False): a bad one is refused naming its field, no traceback
    seen = [task_choice, corruption, severity]  # how every image is classified
    # the box empties once its image is classified (the preview shows it): the next image is one click or drop away,
    # not behind the file's small x
    upload.upload(classify_upload, [session, upload, *seen], prediction_outputs, api_name="classify_upload",
                  preprocess=False, **light).then(None, None, [upload], js="() => null", show_progress="hidden")
    sketch_button.click(classify_sketch, [session, sketch, *seen], prediction_outputs, api_name="classify_sketch",
                        preprocess=False, **light)
    example_button.click(classify_example, [session, example_name, *seen], prediction_outputs,
                         api_name="classify_example", preprocess=False, **light)
    gallery.select(select_example, [session, task_choice, example_name, corruption, severity],
                   [*prediction_outputs, example_name], api_name="select_example", preprocess=False, **light)
    for control in seen:  # a new head or corruption reclassifies the image shown
        control.input(reclassify, [session, *seen], prediction_outputs, preprocess=False,
                      api_name="reclassify" + ("" if control is task_choice else f"_{control.label.lower()}"), **light)
    all_models.change(prediction_view, [session, all_models], [predictions], api_name="prediction_view",
                      preprocess=False, **light)
    return TryPanel(task_choice, gallery, example_name)
