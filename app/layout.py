"""The page: six panels top to bottom (models, merge, try images, accuracy, routing, export) and their events.

Every event has an explicit ``api_name`` so ``gradio_client`` can drive the app headless. Controls of merge methods
are built from the parameters each method declares in the registry. State lives in one ``gr.State`` per browser
session; heavy events share one concurrency queue.
"""

from __future__ import annotations

import inspect

import gradio as gr
import pandas as pd
from PIL import Image

from app import figures, handlers, texts
from app.gpu import on_gpu
from app.session import CUSTOM, AppConfig, Session, close_session

ADAPT_LOSS_CHOICES = [
    ("entropy (the paper's)", "entropy"),
    ("IM: entropy minus the entropy of the mean prediction (variant)", "im"),
]

HEAVY = {"concurrency_id": "heavy", "concurrency_limit": 2}
DEFAULT_METHODS = ("task_arithmetic", "wemoe")


def param_control(method: str, param) -> gr.components.Component:
    """A UI control for one declared method parameter (slider, dropdown, checkbox, number or text box)."""
    label = f"{method}.{param.name}"
    if param.choices is not None:
        return gr.Dropdown(choices=list(param.choices), value=param.default, label=label, info=param.help)
    if param.type is bool:
        return gr.Checkbox(value=bool(param.default), label=label, info=param.help)
    if param.type in (int, float) and param.min is not None and param.max is not None:
        step = 1 if param.type is int else (0.05 if param.max - param.min <= 5 else 1.0)
        return gr.Slider(param.min, param.max, value=param.default, step=step, label=label, info=param.help)
    if param.type in (int, float):
        return gr.Number(value=param.default, label=label, info=param.help, precision=0 if param.type is int else None)
    return gr.Textbox(value=str(param.default), label=label, info=param.help)


def _with_signature(fn, names: list[str], leading: list[str]):
    """Give ``fn(*args, progress)`` a signature with one named parameter per input (names shown in the API)."""
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in [*leading, *names]]
    params.append(inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=gr.Progress()))
    fn.__signature__ = inspect.Signature(params)
    return fn


def build_demo(config: AppConfig | None = None) -> gr.Blocks:
    """The merge explorer's Blocks (not launched)."""
    from wemoe.methods import get_method, list_methods

    config = config or AppConfig()
    methods = [get_method(m) for m in list_methods()]
    specs = [(m.name, p) for m in methods for p in m.params]

    with gr.Blocks(title="Merge explorer") as demo:
        session = gr.State(Session(), delete_callback=close_session)  # deep-copied per session: a fresh Session
        gr.Markdown(texts.TITLE)
        gr.Markdown(texts.INTRO)

        # 1. Models -------------------------------------------------------------------------------------------
        with gr.Group(elem_id="panel-models"):
            gr.Markdown(texts.MODELS)
            choices = [(label, value) for value, (label, _) in config.zoos.items()]
            choices.append(("Custom: your base model and experts", CUSTOM))
            zoo_choice = gr.Radio(choices, value=config.default_zoo, label="Zoo")
            samples = gr.Number(value=config.samples, precision=0, minimum=0, label="Test images per task (0 = all)",
                                info="Fewer images make evaluation and adaptation faster.")
            with gr.Accordion("Custom zoo", open=False):
                base_model = gr.Textbox(value="ViT-B-32", label="Base model (open_clip name)")
                base_tag = gr.Textbox(value="openai", label="Base weights (open_clip tag or checkpoint path)")
                experts_text = gr.Textbox("", lines=4, label="Experts (one 'task: source' per line)",
                                          placeholder="mnist: tanganke/clip-vit-base-patch32_mnist\nsvhn: /path/svhn.safetensors")
                expert_files = gr.File(file_count="multiple", file_types=[".safetensors", ".pt", ".pth", ".bin"],
                                       label="Expert checkpoint files (task = file name unless named above)")
            load_button = gr.Button("Load zoo", variant="primary", elem_id="load-zoo")
            zoo_info = gr.Markdown("_Nothing loaded yet: press 'Load zoo'._", elem_id="zoo-info")

        # 2. Merge --------------------------------------------------------------------------------------------
        with gr.Group(elem_id="panel-merge"):
            gr.Markdown(texts.MERGE)
            method_choice = gr.CheckboxGroup([(m.pretty_name, m.name) for m in methods],
                                             value=[m for m in DEFAULT_METHODS if m in list_methods()], label="Merge methods")
            controls = []
            for method in methods:
                with gr.Accordion(f"{method.pretty_name} settings", open=method.name == "wemoe"):
                    gr.Markdown(f"{method.description} [paper]({method.reference_url})")
                    controls += [param_control(method.name, p) for p in method.params]
            gr.Markdown(texts.ADAPT)
            with gr.Row():
                steps = gr.Slider(0, 2000, value=config.default_steps, step=1, label="Adaptation steps", elem_id="steps",
                                  info="0 merges without adapting.")
                lr = gr.Number(value=1e-3, label="Learning rate")
                per_task = gr.Slider(1, 64, value=16, step=1, label="Images per task per step")
            loss = gr.Radio(ADAPT_LOSS_CHOICES, value=config.default_loss, label="Adaptation loss",
                            info="The paper minimises entropy; IM also keeps each task's predictions spread over its "
                                 "classes, which stops a weak task from collapsing onto one class (see README).")
            target = gr.Dropdown(choices=[], value=None, label="Merge to adapt", allow_custom_value=True)
            estimate_note = gr.Markdown()
            with gr.Row():
                merge_button = gr.Button("Merge (and adapt)", variant="primary", elem_id="merge")
                adapt_button = gr.Button("Adapt more")
                cancel_button = gr.Button("Cancel", variant="stop")
            merge_status = gr.Markdown(elem_id="merge-status")
            loss_plot = gr.Plot(figures.empty_figure("The loss curve appears while the routers adapt."), label="Adaptation loss")

        # 3. Try images ---------------------------------------------------------------------------------------
        with gr.Group(elem_id="panel-try"):
            gr.Markdown(texts.TRY)
            with gr.Row():
                with gr.Column(scale=3):
                    upload = gr.File(file_types=["image"], label="Upload an image", elem_id="upload", height=110)
                    gallery = gr.Gallery(handlers.list_examples(config), label="Example images (click one)", columns=6,
                                         height=190, allow_preview=False)
                    with gr.Row():
                        example_name = gr.Dropdown([name for _, name in handlers.list_examples(config)], label="Example image",
                                                   scale=2)
                        example_button = gr.Button("Classify the example", scale=1)
                with gr.Column(scale=2):
                    sketch = gr.Sketchpad(value=Image.new("RGB", (224, 224), "black"), type="pil", label="Draw a digit",
                                          canvas_size=(224, 224), height=300, layers=False,
                                          brush=gr.Brush(colors=["#ffffff"], default_color="#ffffff", default_size=16,
                                                         color_mode="fixed"))
                    sketch_button = gr.Button("Classify the drawing")
                with gr.Column(scale=3):
                    preview = gr.Image(label="Image being classified", interactive=False, type="pil", height=200, elem_id="preview")
                    task_choice = gr.Dropdown(handlers.task_choices(Session()), value=handlers.AUTO_TASK,
                                              label="Task (head)", info="Which task's classes to predict; auto uses the routers' guess.")
                    guess = gr.Markdown(elem_id="guess")
            predictions = gr.Dataframe(label="Top-5 predictions", interactive=False, wrap=True, elem_id="predictions")
            heatmap = gr.Plot(figures.empty_figure("Classify an image to see its routing."), label="Router heatmap", elem_id="heatmap")

        # 4. Accuracy -----------------------------------------------------------------------------------------
        with gr.Group(elem_id="panel-accuracy"):
            gr.Markdown(texts.ACCURACY)
            with gr.Row():
                oracle = gr.Checkbox(False, label="Also the WEMoE oracle (each task routed to its own expert)")
                evaluate_button = gr.Button("Evaluate", variant="primary", elem_id="evaluate")
            table = gr.Dataframe(pd.DataFrame({"model": []}), label="Accuracy (%)", interactive=False, elem_id="accuracy")
            table_note = gr.Markdown()
            bars = gr.Plot(figures.accuracy_bars(None), label="Accuracy chart")
            with gr.Row():
                csv_file = gr.File(label="Results CSV", interactive=False)
                json_file = gr.File(label="Results JSON", interactive=False)

        # 5. Routing ------------------------------------------------------------------------------------------
        with gr.Group(elem_id="panel-routing"):
            gr.Markdown(texts.ROUTING)
            with gr.Row():
                map_method = gr.Radio([("UMAP", "umap"), ("PCA (fast)", "pca")], value="umap", label="Feature map")
                routing_button = gr.Button("Show routing", variant="primary")
            routing_note = gr.Markdown()
            task_heat = gr.Plot(label="Routing per task")
            with gr.Row():
                curve = gr.Plot(label="Adaptation curve")
                entropy = gr.Plot(label="Entropy per task")
            feature_map = gr.Plot(label="Feature map")

        # 6. Export -------------------------------------------------------------------------------------------
        with gr.Group(elem_id="panel-export"):
            gr.Markdown(texts.EXPORT)
            with gr.Row():
                export_name = gr.Dropdown(choices=[], label="Merge to export", allow_custom_value=True)
                export_button = gr.Button("Export model")
            model_file = gr.File(label="Model file", interactive=False)

        # Events ------------------------------------------------------------------------------------------------
        def load_event(state, zoo, samples=0, base_model="", base_weights="", experts="", expert_files=None,
                       progress=gr.Progress()):
            info = handlers.load_zoo(state, config, zoo, samples, base_model, base_weights, experts, expert_files,
                                     progress=progress)
            examples = handlers.list_examples(config, state.bench.task_names)
            return (info, gr.Dropdown(choices=handlers.task_choices(state), value=handlers.AUTO_TASK), examples,
                    gr.Dropdown(choices=[name for _, name in examples], value=None),
                    gr.Dropdown(choices=[], value=None), gr.Dropdown(choices=[], value=None),
                    figures.empty_figure("The loss curve appears while the routers adapt."), "")

        load_button.click(load_event, [session, zoo_choice, samples, base_model, base_tag, experts_text, expert_files],
                          [zoo_info, task_choice, gallery, example_name, target, export_name, loss_plot, merge_status],
                          api_name="load_zoo", **HEAVY)

        def merge_event(state, chosen, images_per_task, *values, progress=gr.Progress()):
            params: dict[str, dict] = {}
            for (method, param), value in zip(specs, values):
                params.setdefault(method, {})[param.name] = value
            message = handlers.merge(state, chosen, params, images_per_task, config.default_steps)
            adaptive = handlers.adaptive_merges(state)
            default = "wemoe" if "wemoe" in adaptive else (adaptive[0] if adaptive else None)
            merges = list(state.bench.merges)
            return (message, gr.Dropdown(choices=adaptive, value=default),
                    gr.Dropdown(choices=merges, value=default or merges[-1]),
                    handlers.estimate(state, default, config.default_steps, images_per_task))

        _with_signature(merge_event, [f"{m}__{p.name}" for m, p in specs], ["state", "methods", "images_per_task"])
        merge_inputs = [session, method_choice, per_task, *controls]
        merged = merge_button.click(merge_event, merge_inputs, [merge_status, target, export_name, estimate_note],
                                    api_name="merge", **HEAVY)

        def adapt_event(state, target, steps=config.default_steps, lr=1e-3, images_per_task=16,
                        loss=config.default_loss, progress=gr.Progress()):
            yield from handlers.adapt(state, target, steps, lr, images_per_task, loss=loss, progress=progress)

        def adapt_after_merge(state, target, steps=config.default_steps, lr=1e-3, images_per_task=16,
                              loss=config.default_loss, progress=gr.Progress()):
            if not steps or state.bench is None or target not in state.last_merged:  # adapt only what was just merged
                yield gr.skip(), gr.skip()
                return
            yield from handlers.adapt(state, target, steps, lr, images_per_task, loss=loss, progress=progress)

        adapt_inputs = [session, target, steps, lr, per_task, loss]
        chained = merged.success(adapt_after_merge, adapt_inputs, [merge_status, loss_plot],
                                 api_name="adapt_after_merge", **HEAVY)
        adapting = adapt_button.click(adapt_event, adapt_inputs, [merge_status, loss_plot], api_name="adapt", **HEAVY)
        cancel_button.click(handlers.cancelled, [session, target], [merge_status], cancels=[chained, adapting],
                            api_name="cancel")
        for control in (steps, per_task, target):
            control.change(handlers.estimate, [session, target, steps, per_task], [estimate_note],
                           api_name=f"estimate_{'steps' if control is steps else 'per_task' if control is per_task else 'target'}",
                           show_progress="hidden")

        prediction_outputs = [preview, predictions, guess, heatmap]

        def classify_upload(state, image, task=handlers.AUTO_TASK):
            return handlers.predict(state, handlers.read_upload(image, config), task, config)

        def classify_sketch(state, drawing, task=handlers.AUTO_TASK):
            return handlers.predict(state, handlers.read_sketch(drawing, config, state, task), task, config)

        def classify_example(state, example, task=handlers.AUTO_TASK):
            return handlers.predict(state, handlers.read_example(example, config), task, config)

        def select_example(state, task, evt: gr.SelectData):
            examples = handlers.list_examples(config, state.bench.task_names if state.bench else None)
            name = examples[evt.index][1]
            return (*handlers.predict(state, handlers.read_example(name, config), task, config), name)

        def reclassify(state, task):
            if state.image is None or state.bench is None:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return handlers.predict(state, state.image, task, config)

        upload.upload(classify_upload, [session, upload, task_choice], prediction_outputs, api_name="classify_upload", **HEAVY)
        sketch_button.click(classify_sketch, [session, sketch, task_choice], prediction_outputs, api_name="classify_sketch", **HEAVY)
        example_button.click(classify_example, [session, example_name, task_choice], prediction_outputs,
                             api_name="classify_example", **HEAVY)
        gallery.select(select_example, [session, task_choice], [*prediction_outputs, example_name],
                       api_name="select_example", **HEAVY)
        task_choice.input(reclassify, [session, task_choice], prediction_outputs, api_name="reclassify", **HEAVY)

        @on_gpu(duration=120)
        def evaluate_event(state, oracle=False, progress=gr.Progress()):
            yield from handlers.evaluate(state, oracle, progress=progress)

        evaluate_button.click(evaluate_event, [session, oracle], [table, bars, table_note, csv_file, json_file],
                              api_name="evaluate", **HEAVY)

        @on_gpu(duration=120)
        def routing_event(state, feature_map="umap", progress=gr.Progress()):
            yield from handlers.routing(state, feature_map, config, progress=progress)

        routing_button.click(routing_event, [session, map_method], [task_heat, curve, entropy, feature_map, routing_note],
                             api_name="routing", **HEAVY)

        def export_event(state, merge):
            return handlers.export(state, merge)

        export_button.click(export_event, [session, export_name], [model_file], api_name="export", **HEAVY)
    return demo
