"""The page: six panels top to bottom (models, merge, try images, accuracy, routing, export) and their events.

Every event has an explicit ``api_name`` so ``gradio_client`` can drive the app headless. Controls of merge methods
are built from the parameters each method declares in the registry, the adaptation controls from
``wemoe.adaptation.adapt.SETTINGS`` (``app.controls``). State lives in one ``gr.State`` per browser session; light,
model and long events have their own concurrency queues.
"""

from __future__ import annotations

import os

import gradio as gr
import pandas as pd

from app import figures, handlers, inputs, jobs, texts, views
from app.analysis_tab import build_analysis_tab
from app.controls import param_control, setting_control, setting_default
from app.events import quiet, reported, uploaded, with_signature
from app.gpu import gpu_chunk, on_gpu
from app.hub_push import build_push_controls
from app.lesson_page import build_lesson
from app.mcp_tools import build_tools
from app.session import CUSTOM, AppConfig, Session, close_session
from app.teacher import build_teacher_page
from app.try_panel import build_try_panel, example_choices, gallery_items

# Three queues, so that nothing light waits behind something long (a class on a 2-core Space): light events
# (classify, estimates, views) have their own; loading, merging and exporting theirs; long jobs (adaptation,
# evaluation, routing maps) share a limit sized to the CPU, and a session runs at most one of them at a time
# (app.jobs.long_job). No event draws gradio's progress overlay or error badges on plots and tables: long jobs show
# their queue position and time on their status text only.
LIGHT = {"concurrency_id": "light", "concurrency_limit": 8, "show_progress": "hidden"}
MODELS = {"concurrency_id": "models", "concurrency_limit": 2, "show_progress": "hidden"}
# Long jobs: threads for two per CPU at once (students waiting for a run in flight, or served from the cache, compute
# nothing); what they compute is bounded by the CPU: adaptation steps take one of Shared.compute_slots (one per CPU).
# More threads (8) served cached tables faster but slowed a class's classifications (p95 0.8 -> 1.5 s, 2 cores).
LONG = {"concurrency_id": "long", "concurrency_limit": 2 * max(1, os.cpu_count() or 1), "show_progress": "minimal"}
DEFAULT_METHODS = ("task_arithmetic", "wemoe")
LOSS_NOTE = ("IM also keeps each task's predictions spread over its classes, which stops a weak task from collapsing "
             "onto one class (see README).")


def build_demo(config: AppConfig | None = None) -> gr.Blocks:
    """The merge explorer's Blocks (not launched)."""
    from wemoe.methods import get_method, list_methods

    config = config or AppConfig()
    methods = [get_method(m) for m in list_methods()]
    specs = [(m.name, p) for m in methods for p in m.params]

    # gradio's cache of uploads and served files: every 10 minutes, files older than an hour go (a class fills no disk)
    with gr.Blocks(title="Merge explorer", delete_cache=(600, 3600)) as demo:
        session = gr.State(Session(), delete_callback=close_session)  # deep-copied per session: a fresh Session
        # A second route (/teacher) makes gradio draw a navbar with a 'Home' link on every page: none on this app.
        # 'hidden', not False: gradio 6.31 reads the navbar's settings from the Navbar once it is on the page, and a
        # Navbar(visible=False) never is, so the navbar stayed.
        gr.Navbar(visible="hidden")
        gr.Markdown(texts.TITLE)
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Lesson", id="lesson"):  # what a class sees first (app/lesson_page.py)
                lesson_page = build_lesson(session, config, LIGHT, LONG)
            with gr.Tab("Lab", id="lab") as lab:  # every method, setting and view, for researchers
                gr.Markdown(texts.INTRO)

                # 1. Models -------------------------------------------------------------------------------------------
                with gr.Group(elem_id="panel-models"):
                    gr.Markdown(texts.MODELS)
                    choices = [(label, value) for value, (label, _) in config.zoos.items()]
                    choices.append(("Custom: your base model and experts", CUSTOM))
                    zoo_choice = gr.Radio(choices, value=config.default_zoo, label="Zoo")
                    samples = gr.Number(value=config.samples, precision=0, minimum=0,
                                        label="Test images per task (0 = all)",
                                        info="Fewer images make evaluation and adaptation faster.")
                    with gr.Accordion("Custom zoo", open=False):
                        base_model = gr.Textbox(value="ViT-B-32",
                                                label="Base model (open_clip name, or local-dir:PATH)")
                        base_tag = gr.Textbox(value="openai",
                                              label="Base weights (open_clip tag, checkpoint path, or a "
                                              "Hugging Face CLIPModel: its folder or hub id)")
                        experts_text = gr.Textbox("", lines=4, label="Experts (one 'task: source' per line)",
                                                  placeholder="mnist: tanganke/clip-vit-base-patch32_mnist\n"
                                                              "svhn: /path/svhn.safetensors")
                        expert_files = gr.File(file_count="multiple",
                                               file_types=[".safetensors", ".pt", ".pth", ".bin"],
                                               label="Expert checkpoint files (task = file name unless named above)")
                        tasks_text = gr.Textbox("", lines=3, label="Tasks of experts not named after a registered task "
                                                "(one 'task: source' per line; class names are read from the data)",
                                                placeholder="pets: pets.zip   (an uploaded zip or a folder of "
                                                            "class/xxx.png)\ndigits: hf:ylecun/mnist split=test "
                                                            "image=image label=label")
                        task_files = gr.File(file_count="multiple", file_types=[".zip", ".parquet"],
                                             label="Task image zips or parquet files (task = file name unless "
                                                   "named above)")
                        with gr.Row():
                            read_tasks_button = gr.Button("Read tasks", elem_id="read-tasks")
                        tasks_info = gr.Markdown(elem_id="tasks-info")
                    load_button = gr.Button("Load zoo", variant="primary", elem_id="load-zoo")
                    zoo_info = gr.Markdown("_Nothing loaded yet: press 'Load zoo'._", elem_id="zoo-info")

                # 2. Merge --------------------------------------------------------------------------------------------
                with gr.Group(elem_id="panel-merge"):
                    gr.Markdown(texts.MERGE)
                    method_choice = gr.CheckboxGroup([(m.pretty_name, m.name) for m in methods],
                                                     value=[m for m in DEFAULT_METHODS if m in list_methods()],
                                                     label="Merge methods")
                    with gr.Row():
                        merge_button = gr.Button("Merge (and adapt)", variant="primary", elem_id="merge",
                                                 interactive=False)
                        adapt_button = gr.Button("Adapt more", interactive=False)
                        cancel_button = gr.Button("Cancel", variant="stop")
                    controls = []  # every method's settings, folded: the defaults are the papers'
                    for method in methods:
                        with gr.Accordion(f"{method.pretty_name} settings", open=False):
                            gr.Markdown(f"{method.description} [paper]({method.reference_url})")
                            controls += [param_control(method.name, p) for p in method.params]
                    gr.Markdown(texts.ADAPT)
                    with gr.Row():  # every adaptation control from its declaration (wemoe.adaptation.adapt.SETTINGS)
                        steps = setting_control("steps", config.default_steps, "0 merges without adapting.",
                                                elem_id="steps")
                        lr = setting_control("lr")
                        per_task = setting_control("per_task")
                        seed = setting_control("seed")
                    loss = setting_control("loss", config.default_loss, LOSS_NOTE)
                    split = setting_control("split", None, "The accuracy table scores the test images either way.")
                    target = gr.Dropdown(choices=[], value=None, label="Merge to adapt", allow_custom_value=True)
                    estimate_note = gr.Markdown()
                    merge_status = gr.Markdown(elem_id="merge-status")
                    loss_plot = gr.Plot(figures.empty_figure("The loss curve appears while the routers adapt."),
                                        label="Adaptation loss")

                try_panel = build_try_panel(session, config, LIGHT)  # 3. Try images (app/try_panel.py)

                # 4. Accuracy -----------------------------------------------------------------------------------------
                with gr.Group(elem_id="panel-accuracy"):
                    gr.Markdown(texts.ACCURACY)
                    with gr.Row():
                        oracle = gr.Checkbox(False, label="Also the WEMoE oracle (each task routed to its own expert)")
                        normalized = gr.Checkbox(False, label="Normalized: each task as % of its expert",
                                                 elem_id="normalized")
                        evaluate_button = gr.Button("Evaluate", variant="primary", elem_id="evaluate",
                                                    interactive=False)
                    table = gr.Dataframe(pd.DataFrame({"model": []}), label=views.ACCURACY_LABEL, interactive=False,
                                         elem_id="accuracy")
                    table_note = gr.Markdown()
                    bars = gr.Plot(figures.accuracy_bars(None), label="Accuracy chart")
                    with gr.Row():
                        csv_file = gr.File(label="Results CSV", interactive=False)
                        json_file = gr.File(label="Results JSON", interactive=False)

                # 5. Routing ------------------------------------------------------------------------------------------
                with gr.Group(elem_id="panel-routing"):
                    gr.Markdown(texts.ROUTING)
                    with gr.Row():
                        map_method = gr.Radio([("UMAP", "umap"), ("PCA (fast)", "pca")], value="umap",
                                              label="Feature map")
                        routing_button = gr.Button("Show routing", variant="primary", interactive=False)
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
                        export_button = gr.Button("Export model", interactive=False)
                        with_card = gr.Checkbox(False, label="With its model card (a zip: weights, config, results, "
                                                "README)")
                    model_file = gr.File(label="Model file", interactive=False)
                    build_push_controls(session, export_name, MODELS)  # sign in and push, on a Space with OAuth

        # Events ------------------------------------------------------------------------------------------------
        # Progress shows as status text (merge_status, table_note, routing_note), never as an overlay on the plots;
        # errors go to a toast (and, once a job has shown its progress, to its status line), never as badges on
        # the outputs, which keep their values. Events whose inputs include numbers skip gradio's preprocessing
        # (preprocess=False): the handlers check every value and say which field is wrong.
        @quiet
        def load_event(state, zoo, samples=0, base_model="", base_weights="", experts="", expert_files=None,
                       tasks="", task_files=None, progress=gr.Progress(), request: gr.Request = None):
            state.session_hash = getattr(request, "session_hash", None)  # so that closing the tab frees the session
            if not isinstance(zoo, str):  # what the radio's own check did before preprocess=False
                raise gr.Error(f"Zoo: choose one of {', '.join([*config.zoos, CUSTOM])}, got {zoo!r}.")
            fields = ["" if text is None else str(text) for text in (base_model, base_weights, experts)]
            info = handlers.load_zoo(state, config, zoo, samples, *fields, uploaded(expert_files), progress=progress,
                                     tasks_text="" if tasks is None else str(tasks), task_files=uploaded(task_files))
            examples = inputs.gallery_examples(config, state.bench.task_names)
            return (info, gr.Dropdown(choices=views.task_choices(state), value=inputs.AUTO_TASK),
                    gallery_items(examples),
                    gr.Dropdown(choices=example_choices(examples), value=None),
                    gr.Dropdown(choices=[], value=None), gr.Dropdown(choices=[], value=None),
                    figures.empty_figure("The loss curve appears while the routers adapt."), "",
                    # every status line answers this load, so none keeps the red mark of an earlier failure
                    "", "", "", *[gr.Button(interactive=True)] * len(needs_zoo))

        # buttons that need a loaded zoo: disabled until the first load succeeds (the handlers refuse without one too)
        needs_zoo = [merge_button, adapt_button, evaluate_button, routing_button, export_button]
        load_button.click(load_event, [session, zoo_choice, samples, base_model, base_tag, experts_text, expert_files,
                                       tasks_text, task_files],
                          [zoo_info, try_panel.task_choice, try_panel.gallery, try_panel.example_name, target,
                           export_name, loss_plot, merge_status, table_note, routing_note, estimate_note, *needs_zoo],
                          api_name="load_zoo", preprocess=False, show_progress_on=[zoo_info],
                          **(MODELS | {"show_progress": "full"}))

        @quiet
        def read_tasks_event(tasks="", task_files=None):
            return inputs.read_tasks("" if tasks is None else str(tasks), uploaded(task_files), config.sources)[1]

        # reading tasks unpacks archives: the models queue, so that it never holds the light slots of classifications
        read_tasks_button.click(read_tasks_event, [tasks_text, task_files], [tasks_info], api_name="read_tasks",
                                preprocess=False, **MODELS)

        @quiet
        def merge_event(state, chosen, images_per_task, *values, progress=gr.Progress()):
            params: dict[str, dict] = {}
            for (method, param), value in zip(specs, values, strict=True):
                params.setdefault(method, {})[param.name] = value
            names = ", ".join([chosen] if isinstance(chosen, str) else chosen or []) or "nothing chosen"
            yield f"Merging ({names})...", gr.skip(), gr.skip(), gr.skip()
            # the merge runs beside this generator: a client-side cancel closes it, which stops the merge
            # (jobs.run_beside)
            work = jobs.run_beside(lambda: handlers.merge(state, chosen, params, images_per_task, config.default_steps),
                                   state.request_stop, every=0.5)
            try:
                while True:
                    seconds = next(work)
                    yield f"Merging ({names})... {seconds:.0f} s", gr.skip(), gr.skip(), gr.skip()
            except StopIteration as done:
                message = done.value
            except gr.Error as error:  # the status line says it too, instead of "Merging..."
                yield f"**{error.message}**", gr.skip(), gr.skip(), gr.skip()
                raise
            finally:
                work.close()
            adaptive = views.adaptive_merges(state)
            default = "wemoe" if "wemoe" in adaptive else (adaptive[0] if adaptive else None)
            merges = list(state.bench.merges)
            yield (message, gr.Dropdown(choices=adaptive, value=default),
                   gr.Dropdown(choices=merges, value=default or (merges[-1] if merges else None)),
                   handlers.estimate(state, default, config.default_steps, images_per_task))

        with_signature(merge_event, [f"{m}__{p.name}" for m, p in specs], ["state", "methods", "images_per_task"])
        merge_inputs = [session, method_choice, per_task, *controls]
        merged = merge_button.click(merge_event, merge_inputs, [merge_status, target, export_name, estimate_note],
                                    api_name="merge", preprocess=False, **MODELS)

        # the adaptation events' defaults (what an API call that leaves a setting out gets)
        declared = {name: setting_default(name) for name in ("lr", "per_task", "seed", "split")}

        @quiet
        def adapt_event(state, target, steps=config.default_steps, lr=declared["lr"],
                        images_per_task=declared["per_task"], loss=config.default_loss,
                        seed=declared["seed"], split=declared["split"]):
            yield from reported(handlers.adapt(state, target, steps, lr, images_per_task, loss=loss, seed=seed,
                                               split=split))

        @quiet
        def adapt_after_merge(state, target, steps=config.default_steps, lr=declared["lr"],
                              images_per_task=declared["per_task"], loss=config.default_loss,
                              seed=declared["seed"], split=declared["split"]):
            # adapts only what the merge just made, unless cancelled
            yield from reported(handlers.adapt_after_merge(state, target, steps, lr, images_per_task, loss=loss,
                                                           seed=seed, split=split))

        adapt_inputs = [session, target, steps, lr, per_task, loss, seed, split]
        chained = merged.success(adapt_after_merge, adapt_inputs, [merge_status, loss_plot],
                                 api_name="adapt_after_merge", preprocess=False, show_progress_on=[merge_status],
                                 **LONG)
        adapting = adapt_button.click(adapt_event, adapt_inputs, [merge_status, loss_plot], api_name="adapt",
                                      preprocess=False, show_progress_on=[merge_status], **LONG)
        for name, run in (("estimate_after_merge", chained), ("estimate_after_adapt", adapting)):
            run.then(quiet(handlers.estimate), [session, target, steps, per_task], [estimate_note], api_name=name,
                     preprocess=False, **LIGHT)
        # Cancel sets the session's stop flag (the running merge or adaptation stops at its next check, for API
        # callers too) and drops the page's queued jobs; it never waits in the heavy queue.
        cancel_button.click(quiet(handlers.cancelled), [session, target], [merge_status],
                            cancels=[merged, chained, adapting], api_name="cancel", preprocess=False,
                            show_progress="hidden", concurrency_limit=None)
        for control, name in ((steps, "steps"), (per_task, "per_task"), (target, "target")):
            control.change(quiet(handlers.estimate), [session, target, steps, per_task], [estimate_note],
                           api_name=f"estimate_{name}", preprocess=False, **LIGHT)

        # on ZeroGPU only the computing parts run in the GPU worker: they yield results, the session is updated here
        gpu_chunk()  # adaptation chunks' GPU function, decorated at start-up
        evaluation_scores = on_gpu(duration=120)(jobs.evaluation_scores)
        routing_maps = on_gpu(duration=120)(jobs.routing_maps)

        @quiet
        def evaluate_event(state, oracle=False):
            yield from reported(handlers.evaluate(state, oracle, scores_of=evaluation_scores), width=5, status=2,
                                 first="Evaluating...")

        evaluated = evaluate_button.click(evaluate_event, [session, oracle],
                                          [table, bars, table_note, csv_file, json_file], api_name="evaluate",
                                          preprocess=False, show_progress_on=[table_note], **LONG)
        for event, name in ((evaluated.success, "accuracy_after_evaluate"), (normalized.change, "accuracy_view")):
            event(quiet(views.accuracy_view), [session, normalized], [table], api_name=name, preprocess=False, **LIGHT)

        @quiet
        def routing_event(state, feature_map="umap"):
            yield from reported(handlers.routing(state, feature_map, config, maps_of=routing_maps), width=5, status=4,
                                 first="Routing the test images through the WEMoE model...")

        routing_button.click(routing_event, [session, map_method],
                             [task_heat, curve, entropy, feature_map, routing_note], api_name="routing",
                             preprocess=False, show_progress_on=[routing_note], **LONG)

        @quiet
        def export_event(state, merge, card=False):
            return handlers.export_with_card(state, merge) if card is True else handlers.export(state, merge)

        export_button.click(export_event, [session, export_name, with_card], [model_file], api_name="export",
                            preprocess=False,
                            **MODELS)

        with lab:
            build_analysis_tab(session, LIGHT, LONG, config=config)  # 7. Analysis (app/analysis_tab.py, #20)
        demo.load(lesson_page.open_link, None, lesson_page.link_outputs, api_name="open_link", show_progress="hidden")

        def tab_closed(request: gr.Request):
            config.shared.close(request.session_hash)  # free the closed tab's merges and files now, not in an hour

        demo.unload(tab_closed)
        build_tools(config, LIGHT, LONG)  # the stateless tools (gr.api), what the MCP server serves (app/mcp_tools.py)
    # the teacher's page: the class now and the class board, behind the teacher's code (no link on the students' page)
    with demo.route("Teacher", "/teacher", show_in_navbar=False):
        gr.Navbar(visible="hidden")  # one per page: the teacher's page has no navbar either
        build_teacher_page(config, LIGHT)
    return demo
