"""The "Try images" panel: an upload, the example gallery or a drawing, classified by every model, with the head,
a corruption (the robustness view's) and the image's routing heatmap; its events are light (app.layout.LIGHT)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd
from PIL import Image

from app import figures, handlers, inputs, texts, views
from app.events import GalleryClick, quiet
from app.session import AppConfig, Session


@dataclass
class TryPanel:
    """The panel's controls that loading a zoo updates (its tasks and its examples)."""

    task_choice: Any
    gallery: Any
    example_name: Any


def build_try_panel(session: gr.State, config: AppConfig, light: dict) -> TryPanel:
    """The panel and its named events (call inside the Blocks)."""
    with gr.Group(elem_id="panel-try"):
        gr.Markdown(texts.TRY)
        with gr.Row(elem_id="try-row"):  # the columns wrap (min_width) and stack on a phone
            with gr.Column(scale=3, min_width=300, elem_id="try-inputs"):
                upload = gr.File(file_types=["image"], label="Upload an image", elem_id="upload", height=110)
                gallery = gr.Gallery(inputs.list_examples(config), label="Example images (click one)", columns=6,
                                     height=190, allow_preview=False)
                with gr.Row():
                    example_name = gr.Dropdown([name for _, name in inputs.list_examples(config)],
                                               label="Example image", scale=2)
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
        return handlers.predict(state, inputs.read_upload(image, config), task, config, corruption, severity)

    @quiet
    def classify_sketch(state, drawing, task=inputs.AUTO_TASK, corruption=inputs.NO_CORRUPTION, severity=3):
        return handlers.predict(state, inputs.read_sketch(drawing, config, state, task), task, config, corruption,
                                severity)

    @quiet
    def classify_example(state, example, task=inputs.AUTO_TASK, corruption=inputs.NO_CORRUPTION, severity=3):
        return handlers.predict(state, inputs.read_example(example, config), task, config, corruption, severity)

    @quiet
    def select_example(state, task=inputs.AUTO_TASK, example=None, corruption=inputs.NO_CORRUPTION, severity=3,
                       evt: GalleryClick = None):
        """A gallery click (the page sends which image: ``evt.index``) or, through the API, the example's name."""
        if evt is not None and isinstance(evt.index, int):
            examples = inputs.list_examples(config, state.bench.task_names if state.bench else None)
            example = examples[evt.index][1] if 0 <= evt.index < len(examples) else None
        return (*handlers.predict(state, inputs.read_example(example, config), task, config, corruption, severity),
                example)

    @quiet
    def reclassify(state, task, corruption=inputs.NO_CORRUPTION, severity=3):
        if state.image is None or state.bench is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return handlers.predict(state, state.image, task, config, corruption, severity)

    seen = [task_choice, corruption, severity]  # how every image is classified
    upload.upload(classify_upload, [session, upload, *seen], prediction_outputs, api_name="classify_upload", **light)
    sketch_button.click(classify_sketch, [session, sketch, *seen], prediction_outputs, api_name="classify_sketch",
                        **light)
    example_button.click(classify_example, [session, example_name, *seen], prediction_outputs,
                         api_name="classify_example", **light)
    gallery.select(select_example, [session, task_choice, example_name, corruption, severity],
                   [*prediction_outputs, example_name], api_name="select_example", preprocess=False, **light)
    for control in seen:  # a new head or corruption reclassifies the image shown
        control.input(reclassify, [session, *seen], prediction_outputs,
                      api_name="reclassify" + ("" if control is task_choice else f"_{control.label.lower()}"), **light)
    all_models.change(handlers.prediction_view, [session, all_models], [predictions], api_name="prediction_view",
                      **light)
    return TryPanel(task_choice, gallery, example_name)
