"""The analysis panel (issue #20): one tab per view of ``wemoe``'s analysis functions, one plotly figure each.

Routing per patch, interference of the task vectors, expert x task cross-accuracy, the lambda sweep, robustness
under corruptions, and cost next to accuracy. Each is a named endpoint (``api_name`` = the view's name) that reads
the session's workbench under its lock; the numbers come from the library (``wemoe.moe.patch_routing``,
``wemoe.analysis.interference``, ``wemoe.analysis.cross_accuracy``, ``wemoe.analysis.sweep``,
``wemoe.analysis.robustness``, ``wemoe.analysis.cost``). The events skip gradio's preprocessing: each view checks every
value it is given (refusals name the field, before any work) and reads an uploaded image as "Try images" reads its
uploads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
import plotly.colors as plotly_colors
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from app import figures
from app.errors import friendly, refuse
from app.events import quiet
from app.inputs import corruption_choice, number, read_upload
from app.jobs import busy
from app.scaling_view import scaling_tab
from app.session import AppConfig, Session
from app.try_panel import image_path, severity_level, shown_value
from wemoe.tasks.corruptions import CORRUPTIONS, corrupt_tensor, normalization
from wemoe.tasks.images import encode_images

# The views' library modules (wemoe.moe.patch_routing, .sweep, .robustness, .cost, ...) import the workbench and the
# routing code: each is imported on the first call, so building the page stays light (tests/app/test_app_startup.py).

PER_TASK = 48  # test images per task each view scores (each view renders in under 3 s on the pocket zoo)
BUILT_IN = ("pretrained", "experts")


def loaded_bench(session: Session):
    if session.bench is None:
        raise refuse("Load a zoo first (step 1).")
    return session.bench


def _short(names: list[str]) -> list[str]:
    return [n.removeprefix("pocket_") for n in names]


DOMINANT = "dominant expert"


def _expert_colours(count: int) -> list[tuple[float, str]]:
    """A stepped colour scale for heatmap values 0..count-1: one distinct colour per expert."""
    palette = plotly_colors.qualitative.Dark24 if count > 10 else plotly_colors.qualitative.D3
    scale = []
    for i in range(count):
        scale += [(i / count, palette[i % len(palette)]), ((i + 1) / count, palette[i % len(palette)])]
    return scale


def _blocks_text(blocks: Sequence[int]) -> str:
    contiguous = list(blocks) == list(range(blocks[0], blocks[-1] + 1))
    return f"{blocks[0]} to {blocks[-1]}" if contiguous and len(blocks) > 2 else ", ".join(map(str, blocks))


def routed_block(layer: Any, blocks: Sequence[int]) -> int:
    """The 'Block' field as -1 (the last routed block; also for None, an empty field) or one of the routed
    ``blocks`` (sorted), else a ``gr.Error`` saying which blocks are routed."""
    hint = f"-1: the last routed block; routed blocks: {_blocks_text(blocks)}"
    chosen = -1 if layer is None else number(layer, "Block", whole=True, minimum=-1, maximum=blocks[-1], hint=hint)
    if chosen != -1 and chosen not in blocks:
        raise refuse(f"Block: enter -1 or a routed block ({_blocks_text(blocks)}), got {shown_value(layer)}.")
    return chosen


def routing_patches_view(session: Session, image: Any = None, layer: float | None = -1, corruption: str = "none",
                         severity: float = 3, shown: str | None = DOMINANT, *,
                         config: AppConfig | None = None) -> tuple[go.Figure, Any]:
    """The upload (or the first test image) with each patch's routing in block ``layer`` laid over it: its dominant
    expert, or the weight of expert ``shown``; beside it the image's routing in that block (the token average). Also
    returns the 'Show' dropdown's choices for this zoo.

    ``image``: a PIL image, or an upload's file (a path or gradio's FileData dict) read as "Try images" reads its
    uploads under ``config``'s limits (``app.inputs.read_upload``); None: the first test image. Every value is
    checked before any work."""
    from wemoe.moe.patch_routing import patch_routing
    from wemoe.moe.routing import require_wemoe

    bench = loaded_bench(session)
    name = bench.routed_merge()
    if name is None:
        raise refuse("Merge with WEMoE first (step 2): routing belongs to the WEMoE routers.")
    names = _short(bench.task_names)
    shown = shown or DOMINANT
    if not isinstance(shown, str) or (shown != DOMINANT and shown not in names):
        raise refuse(f"Show: choose {DOMINANT} or one of the experts {', '.join(names)}, got {shown_value(shown)}.")
    corruption, severity = corruption_choice(corruption, severity_level(severity))
    model = bench.merges[name].model
    layer = routed_block(layer, require_wemoe(model))
    if not isinstance(image, Image.Image):
        path = image_path(image)
        image = None if path is None else read_upload(path, config or AppConfig())
    mean, std = normalization(bench.zoo.preprocess)
    with friendly("Routing the image's patches"), busy(session):
        batch = (encode_images([image], bench.zoo.preprocess) if image is not None
                 else bench.data()[bench.task_names[0]].images[:1])
        if corruption is not None:
            batch = corrupt_tensor(batch, corruption, severity, 0, mean, std)
        found = patch_routing(model, batch, layer)
    pixels = (batch[0].permute(1, 2, 0).numpy() * np.array(std) + np.array(mean)).clip(0, 1) * 255
    grid = found.patch_grid()[0].numpy()  # [g, g, T]
    size = pixels.shape[0] / grid.shape[0]  # pixels per patch: the overlay's cells cover their patches
    place = {"x0": size / 2 - 0.5, "dx": size, "y0": size / 2 - 0.5, "dy": size}
    if shown == DOMINANT:
        dominant = grid.argmax(-1)
        overlay = go.Heatmap(z=dominant, text=[[names[i] for i in row] for row in dominant], texttemplate="%{text}",
                             colorscale=_expert_colours(len(names)), zmin=-0.5, zmax=len(names) - 0.5, opacity=0.55,
                             showscale=False, hovertemplate="patch (%{x:.0f}, %{y:.0f}): %{text}<extra></extra>",
                             **place)
    else:
        weight = grid[..., names.index(shown)]
        overlay = go.Heatmap(z=weight, text=[[f"{v:.2f}" for v in row] for row in weight], texttemplate="%{text}",
                             colorscale="RdBu", zmid=0,
                             opacity=0.6, colorbar={"title": shown, "x": 0.46, "len": 0.8}, **place)
    figure = make_subplots(rows=1, cols=2, column_widths=[0.5, 0.5], horizontal_spacing=0.12,
                           subplot_titles=(f"{shown if shown != DOMINANT else 'dominant expert'} per patch, block "
                                           f"{found.layer}", f"this image's routing in block {found.layer}"))
    figure.add_trace(go.Image(z=pixels.astype(np.uint8), hoverinfo="skip"), row=1, col=1)
    figure.add_trace(overlay, row=1, col=1)
    routing = found.image_routing[0].numpy()
    colours = [c for _, c in _expert_colours(len(names))[::2]]
    figure.add_trace(go.Bar(x=routing, y=names, orientation="h", marker_color=colours, showlegend=False,
                            text=[f"{v:.3f}" for v in routing], textposition="auto"), row=1, col=2)
    figure.update_xaxes(showticklabels=False, row=1, col=1)
    figure.update_yaxes(showticklabels=False, row=1, col=1)
    figure.update_yaxes(autorange="reversed", row=1, col=2)
    figure.update_xaxes(title_text="coefficient (token average)", row=1, col=2)
    figure.update_layout(height=400, margin={"t": 40, "b": 10})
    return figure, gr.Dropdown(choices=[DOMINANT, *names], value=shown)


def interference_view(session: Session, top_k: float = 100.0, block: str | None = "whole") -> tuple[go.Figure, Any]:
    """Cosine similarity of the task vectors (whole, or of one ``block``), the sign-conflict share per block and the
    norms per block; also returns the 'Cosine of' dropdown's choices for this zoo."""
    from wemoe.analysis.interference import WHOLE, interference

    bench = loaded_bench(session)
    top_k = number(top_k, "Percent of each task vector kept", minimum=1, maximum=100)
    block = block or WHOLE
    if not isinstance(block, str):
        raise refuse(f"Cosine of: choose {WHOLE} or one of the blocks (block0, block1, ...), got {shown_value(block)}.")
    with friendly("Comparing the task vectors"):
        found, _ = bench.cached(("interference", float(top_k)), lambda: interference(bench.zoo, top_k))  # per zoo
    if block != WHOLE and block not in found.blocks:
        raise refuse(f"Cosine of: choose {WHOLE} or one of the blocks {', '.join(found.blocks)}, got {block!r}.")
    names = _short(found.task_names)
    titles = (f"cosine similarity ({block})", f"sign conflicts (top {found.top_k:g}%)", "norm per block")
    figure = make_subplots(rows=1, cols=3, subplot_titles=titles)
    cosine = found.cosine_frame(block).values
    figure.add_trace(go.Heatmap(z=cosine, x=names, y=names, colorscale=figures.DIVERGING, zmid=0, zmin=-1, zmax=1,
                                showscale=False,
                                text=[[f"{v:.2f}" for v in row] for row in cosine],
                                texttemplate="%{text}" if len(names) <= 10 else ""),
                     row=1, col=1)
    conflicts = found.conflicts * 100
    figure.add_trace(go.Bar(x=list(conflicts.index), y=list(conflicts.values),
                            text=[f"{v:.1f}" for v in conflicts.values], textposition="auto"), row=1, col=2)
    norms = found.norms.drop(columns=[c for c in ("whole",) if c in found.norms.columns])  # per block: comparable
    figure.add_trace(go.Heatmap(z=norms.values, x=list(norms.columns), y=names, colorscale="Viridis", showscale=False,
                                text=[[f"{v:.2f}" for v in row] for row in norms.values],
                                texttemplate="%{text}" if norms.size <= 120 else ""),
                     row=1, col=3)
    figure.update_yaxes(title_text="% of parameters", row=1, col=2)
    figure.update_layout(height=420, showlegend=False, margin={"t": 40})
    return figure, gr.Dropdown(choices=[WHOLE, *found.blocks], value=block)


def cross_accuracy_view(session: Session) -> go.Figure:
    """Each expert (rows) on every task (columns), in percent."""
    from wemoe.analysis.cross_accuracy import cross_accuracy
    from wemoe.evaluation.sample_eval import sample_data

    bench = loaded_bench(session)
    with friendly("Scoring every expert on every task"), busy(session):
        table = cross_accuracy(bench.loaded.expert_towers(), sample_data(bench.data(), PER_TASK), bench.heads())
    figure = go.Figure(go.Heatmap(z=table.values, x=_short(list(table.columns)), y=_short(list(table.index)),
                                  text=table.round(1).values, texttemplate="%{text}", colorscale="Viridis"))
    figure.update_layout(title="expert x task accuracy (%)", height=420, yaxis={"autorange": "reversed"})
    return figure


def lambda_sweep_view(session: Session, step: float = 0.1) -> go.Figure:
    """Task arithmetic and TIES accuracy per task as lambda goes from 0 to 1 in steps of ``step``; the chosen lambda
    marked."""
    from wemoe.analysis.sweep import lambda_grid, lambda_sweep

    bench = loaded_bench(session)
    grid = lambda_grid(step)
    with friendly("Sweeping lambda"), busy(session):
        # the sweep depends on the zoo alone (a class computes it once); the lambda marked is this session's merge's
        swept, _ = bench.cached(("lambda_sweep", PER_TASK, grid),
                                lambda: lambda_sweep(bench, lambdas=grid, per_task=PER_TASK))
        swept = dataclasses.replace(swept, chosen={m: float(bench.merges[m].params["lambda"]) if m in bench.merges
                                                   else lam for m, lam in swept.chosen.items()})
    figure = make_subplots(rows=1, cols=2, subplot_titles=tuple(swept.tables), shared_yaxes=True)
    for col, (method, table) in enumerate(swept.tables.items(), start=1):
        for task in table.columns:
            figure.add_trace(go.Scatter(x=table.index, y=table[task], name=task, legendgroup=task, showlegend=col == 1,
                                        line={"width": 4 if task == "average" else 1.5}), row=1, col=col)
        figure.add_vline(x=swept.chosen[method], line_dash="dash", row=1, col=col)
    figure.update_layout(height=420, xaxis_title="lambda", yaxis_title="accuracy (%)")
    return figures.legend_below(figure)


MAX_TASK_SLIDERS = 20  # the largest benchmark of the field (the 20-task ViT suites); more tasks: the CLI


def _uniform_lambda(bench) -> float:
    made = bench.merges.get("task_arithmetic")
    return float(made.params["lambda"]) if made is not None else 0.3


def task_sliders(session: Session) -> list[Any]:
    """The per-task lambda sliders for the loaded zoo: one per task (labelled, at task arithmetic's lambda), the
    rest hidden."""
    bench = loaded_bench(session)
    names = _short(bench.task_names)
    if len(names) > MAX_TASK_SLIDERS:
        raise refuse(f"This zoo has {len(names)} tasks; the page has sliders for {MAX_TASK_SLIDERS}. Use "
                     "`python -m wemoe sweep --task-lambdas ...` for more.")
    start = _uniform_lambda(bench)
    return [gr.Slider(visible=True, label=f"lambda {names[i]}", value=start) if i < len(names)
            else gr.Slider(visible=False) for i in range(MAX_TASK_SLIDERS)]


def per_task_lambdas_view(session: Session, *lambdas: Any) -> go.Figure:
    """Accuracy per task of ``theta_0 + sum_t lambda_t tau_t`` next to task arithmetic's one lambda, on a sample of
    each task's test images.

    ``lambdas``: one per task in the zoo's order, or the page's ``MAX_TASK_SLIDERS`` sliders (the first len(tasks)
    are the tasks'; the hidden rest are checked as numbers when given, and ignored); any other count is refused."""
    from wemoe.analysis.sweep import per_task_lambdas
    from wemoe.evaluation.sample_eval import sample_size

    bench = loaded_bench(session)
    names = bench.task_names
    if len(lambdas) < len(names) or len(lambdas) not in (len(names), MAX_TASK_SLIDERS):
        raise refuse(f"Give one lambda per task: {len(names)} values for the tasks {', '.join(names)} (or the page's "
                     f"{MAX_TASK_SLIDERS} sliders), got {len(lambdas)}.")
    chosen = {t: number(v, f"lambda {t}", minimum=-1.0, maximum=2.0) for t, v in zip(names, lambdas, strict=False)}
    for index, value in enumerate(lambdas[len(names):], start=len(names) + 1):
        if value is not None:  # a hidden slider: no task of this zoo
            number(value, f"lambda slider {index} (no task in this zoo)", minimum=-1.0, maximum=2.0)
    uniform = _uniform_lambda(bench)
    with friendly("Scoring the per-task lambdas"), busy(session):
        mine = per_task_lambdas(bench, chosen, per_task=PER_TASK)
        reference = per_task_lambdas(bench, dict.fromkeys(names, uniform), per_task=PER_TASK)
    columns = _short(list(mine))
    figure = go.Figure([go.Bar(name="your lambdas", x=columns, y=list(mine.values()),
                               text=[f"{v:.1f}" for v in mine.values()], textposition="auto"),
                        go.Bar(name=f"task arithmetic, lambda {uniform:g}", x=columns, y=list(reference.values()),
                               text=[f"{v:.1f}" for v in reference.values()], textposition="auto")])
    scored = sample_size(bench.data(), PER_TASK)  # a zoo loaded with fewer images scores those
    figure.update_layout(barmode="group", height=380, yaxis_title="accuracy (%)",
                         title=f"one lambda per task ({scored} test images per task)")
    return figure


def _models(bench) -> list[str]:
    return [*BUILT_IN[:1], *bench.merges]


def robustness_view(session: Session, corruption: str = "gaussian_noise", severity: float = 3) -> go.Figure:
    """Every model's accuracy, clean and under ``corruption`` at ``severity`` (bars: the average; hover: per task);
    with a WEMoE merge, also how its routing moves per task: the share of images whose task guess survives, the
    share guessed right clean and corrupted (``wemoe.analysis.robustness.routing_shift``; hover: the routing
    distance)."""
    from wemoe.analysis.robustness import robustness_table, routing_shift

    bench = loaded_bench(session)
    corruption, severity = corruption_choice(corruption, severity_level(severity))
    if corruption is None:
        raise refuse(f"Choose a corruption: one of {', '.join(CORRUPTIONS)}.")
    routed = bench.routed_merge()
    with friendly("Scoring the corrupted images"), busy(session):
        table = robustness_table(bench, _models(bench), [corruption], severity, PER_TASK)
        shift = routing_shift(bench, routed, corruption, severity, PER_TASK) if routed else None
    title = f"{corruption}, severity {severity}"
    titles = ["average accuracy (%)", *([f"{routed} routing: task guess (%)"] if shift is not None else [])]
    figure = make_subplots(rows=1, cols=len(titles), subplot_titles=titles)
    tasks = [c for c in table.columns if c != "average"]
    for condition in table.index.get_level_values(0).unique():
        rows = table.loc[condition]
        hover = ["<br>".join(f"{short}: {rows.loc[m, t]:.1f}" for short, t in zip(_short(tasks), tasks, strict=True))
                 for m in rows.index]
        figure.add_trace(go.Bar(name=condition, x=list(rows.index), y=list(rows["average"]), hovertext=hover,
                                text=[f"{v:.1f}" for v in rows["average"]], textposition="auto"), row=1, col=1)
    if shift is not None:
        labels = _short(list(shift.index))
        distance = [f"routing distance {d:.3f}" for d in shift["distance"]]
        for column, label in (("guess_right_clean", "right, clean"), ("guess_right_corrupted", "right, corrupted"),
                              ("guess_survives", "guess survives")):
            figure.add_trace(go.Bar(name=label, x=labels, y=list(shift[column]), hovertext=distance,
                                    text=[f"{v:.0f}" for v in shift[column]], textposition="auto"), row=1, col=2)
    figure.update_layout(barmode="group", title=title, height=420)
    return figures.legend_below(figure)


def cost_view(session: Session) -> go.Figure:
    """Average accuracy against extra parameters (vs one model) and against adaptation seconds, per model."""
    from wemoe.analysis.cost import cost_table

    bench = loaded_bench(session)
    with friendly("Measuring the cost of each merge"), busy(session):
        # once per model state for the whole class (the evaluation's cells where the sample is every image)
        scores = bench.sample_scores([*BUILT_IN, *bench.merges], PER_TASK)
        accuracy = pd.DataFrame.from_dict(scores, orient="index")
        table = cost_table(bench, accuracy)
    figure = make_subplots(rows=1, cols=2, shared_yaxes=True,
                           subplot_titles=("extra parameters (x one model)", "adaptation seconds"))
    for col, column in ((1, "extra_vs_one_model"), (2, "adapt_seconds")):
        figure.add_trace(go.Scatter(x=table[column], y=table["average_accuracy"], text=list(table.index),
                                    mode="markers+text", textposition="top center", showlegend=False), row=1, col=col)
    for col, column in ((1, "extra_vs_one_model"), (2, "adapt_seconds")):  # room for the labels at both ends
        low, high = float(table[column].min()), float(table[column].max())
        pad = 0.15 * (high - low or 1.0)
        figure.update_xaxes(range=[low - pad, high + pad], row=1, col=col)
    figure.update_layout(height=400, yaxis_title="average accuracy (%)")
    return figure


def build_analysis_tab(session: gr.State, light: dict, long: dict, config: AppConfig | None = None) -> None:
    """The analysis panel and its six named events (call inside the Blocks); ``config``: the app's limits on an
    uploaded image (``AppConfig.max_image_size``, ``max_pixels``; default: ``AppConfig()``'s)."""
    config = config or AppConfig()
    with gr.Group(elem_id="panel-analysis"):
        gr.Markdown("## 7. Analysis: where routing looks, why tasks interfere, whether it holds up")
        with gr.Tabs():
            with gr.Tab("Routing per patch"):
                with gr.Row():
                    image = gr.Image(type="pil", label="Image (empty: the first test image)", height=240)
                    with gr.Column():
                        layer = gr.Number(value=-1, precision=0, label="Block (-1: the last routed block)")
                        corruption = gr.Dropdown(["none", *CORRUPTIONS], value="none", label="Corruption")
                        severity = gr.Slider(1, 5, value=3, step=1, label="Severity")
                        shown = gr.Dropdown([DOMINANT], value=DOMINANT, label="Show", allow_custom_value=True,
                                            info="Each patch's dominant expert, or one expert's weight per patch.")
                        patches_button = gr.Button("Show routing per patch", elem_id="run-routing_patches")
                patches_plot = gr.Plot(label="Routing per patch", elem_id="view-routing_patches")
            with gr.Tab("Interference"):
                top_k = gr.Slider(1, 100, value=100, step=1, label="Percent of each task vector kept (TIES: 20)")
                cosine_of = gr.Dropdown(["whole"], value="whole", label="Cosine of", allow_custom_value=True,
                                        info="The whole task vectors, or one block's part of them.")
                interference_button = gr.Button("Compare the task vectors", elem_id="run-interference")
                interference_plot = gr.Plot(label="Interference", elem_id="view-interference")
            with gr.Tab("Cross-accuracy"):
                cross_button = gr.Button("Score every expert on every task", elem_id="run-cross_accuracy")
                cross_plot = gr.Plot(label="Cross-accuracy", elem_id="view-cross_accuracy")
            with gr.Tab("Lambda sweep"):
                sweep_button = gr.Button("Sweep lambda", elem_id="run-lambda_sweep")
                sweep_plot = gr.Plot(label="Lambda sweep", elem_id="view-lambda_sweep")
                sliders_button = gr.Button("One lambda per task: show the sliders", elem_id="run-task_lambdas")
                with gr.Row(elem_id="task-lambdas"):  # one per task of the zoo; moving one re-scores a sample of each
                    sliders = [gr.Slider(-1, 2, value=0.3, step=0.05, visible=False, min_width=160)
                               for _ in range(MAX_TASK_SLIDERS)]
                task_lambdas_plot = gr.Plot(label="One lambda per task", elem_id="view-per_task_lambdas")
            with gr.Tab("Robustness"):
                with gr.Row():
                    robust_corruption = gr.Dropdown(list(CORRUPTIONS), value="gaussian_noise", label="Corruption")
                    robust_severity = gr.Slider(1, 5, value=3, step=1, label="Severity")
                robust_button = gr.Button("Score every merge on corrupted images", elem_id="run-robustness")
                robust_plot = gr.Plot(label="Robustness", elem_id="view-robustness")
            with gr.Tab("Cost"):
                cost_button = gr.Button("Accuracy against cost", elem_id="run-cost")
                cost_plot = gr.Plot(label="Cost", elem_id="view-cost")
            with gr.Tab("Number of tasks"):  # a shipped result: minutes to compute (app/scaling_view.py, #33)
                scaling_tab()
        status = gr.Markdown("")  # the long views' place in the queue: never an overlay (or an error badge) on a plot
    long = long | {"show_progress_on": [status]}
    # every view checks its own values (preprocess=False): a bad one is refused naming its field, no traceback
    light, long = light | {"preprocess": False}, long | {"preprocess": False}

    @quiet
    def routing_patches(session, image=None, layer=-1, corruption="none", severity=3, shown=DOMINANT):
        return routing_patches_view(session, image, layer, corruption, severity, shown, config=config)

    patches_button.click(routing_patches, [session, image, layer, corruption, severity, shown], [patches_plot, shown],
                         api_name="routing_patches", **light)
    interference_button.click(quiet(interference_view), [session, top_k, cosine_of], [interference_plot, cosine_of],
                              api_name="interference", **light)
    cross_button.click(quiet(cross_accuracy_view), [session], [cross_plot], api_name="cross_accuracy", **long)
    sweep_button.click(quiet(lambda_sweep_view), [session], [sweep_plot], api_name="lambda_sweep", **long)
    shown = sliders_button.click(quiet(task_sliders), [session], sliders, api_name="task_sliders", **light)
    gr.on([s.release for s in sliders], quiet(per_task_lambdas_view), [session, *sliders], [task_lambdas_plot],
          api_name="per_task_lambdas", **light)
    shown.success(quiet(per_task_lambdas_view), [session, *sliders], [task_lambdas_plot],
                  api_visibility="undocumented", **light)  # the first bars, at task arithmetic's lambda
    robust_button.click(quiet(robustness_view), [session, robust_corruption, robust_severity], [robust_plot],
                        api_name="robustness", **long)
    cost_button.click(quiet(cost_view), [session], [cost_plot], api_name="cost", **long)
