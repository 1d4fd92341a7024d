"""The lesson: what a class sees first, model merging in seven short steps, one idea and one main control each.

(1) meet the experts, (2) add them up, (3) why they interfere, (4) forget a task, (5) route per image, (6) try your
own image, (7) what it costs. Each step's verb is a plain function over a :class:`~app.session.Session` (callable
without a browser, and a named endpoint ``lesson_<step>``); it loads the default zoo first when the session has none,
so a step clicked first does what comes before it. The words are plain: experts and models by their plain names,
never a parameter's code name (the lab keeps those). A link (:func:`read_link`, :func:`link_for`) opens a step with
its experts and settings.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from app import figures, handlers, lesson_size
from app.analysis_tab import cost_view, interference_view, lambda_sweep_view
from app.errors import friendly, refuse
from app.inputs import adapt_setting, adapt_value, number
from app.jobs import busy
from app.session import AppConfig, Session

STEPS = ("meet", "add", "interfere", "forget", "route", "try", "cost")
TITLES = {"meet": "1. Meet the experts", "add": "2. Add them up", "interfere": "3. Why they interfere",
          "forget": "4. Forget a task", "route": "5. Route per image", "try": "6. Try your own image",
          "cost": "7. What it costs"}
DEFAULT_LAMBDA = 0.3
DEFAULT_FORGET = 0.5  # pocket zoo: the forgotten task falls 20-45 points, the others move 0-6
FORGET_FIRST = "pocket_shapes"  # the task the page suggests forgetting (a clear case on the pocket zoo)
LESSON_PER_TASK = 64  # test images per task that a lesson step scores (seconds on a free CPU Space)
LESSON_PLOT_HEIGHT = 320  # px: with the step's words and control, one 1280x800 screen
MANY_EXPERTS = 10  # step 1's table of more experts than this grows a row per expert and shows whole numbers
MODEL_WORDS = {"task_arithmetic": "task arithmetic", "ties": "TIES", "wemoe": "WEMoE (routed)",
               "pretrained": "pretrained (zero-shot)", "experts": "each task's expert", "wemoe_oracle": "oracle"}


def plain(name: str) -> str:
    """A task, model or corruption name in plain words: ``pocket_digits`` -> ``digits``, ``task_arithmetic`` ->
    ``task arithmetic``."""
    return MODEL_WORDS.get(name) or name.removeprefix("pocket_").replace("_", " ")


def bench_of(session: Session, config: AppConfig, progress: Any = None) -> Any:
    """The session's workbench, loading the app's default zoo first when none is loaded (a step clicked before the
    zoo it needs does that first)."""
    if session.bench is None:
        handlers.load_zoo(session, config, config.default_zoo,
                          progress=progress if progress is not None else handlers.no_progress)
    return handlers.loaded_bench(session)


def expert_choices(session: Session, config: AppConfig) -> list[tuple[str, str]]:
    """(plain name, task name) of every expert of the session's zoo (all of them, not only those chosen)."""
    bench = bench_of(session, config)
    return [(plain(t), t) for t in bench.loaded.whole.task_names]


# Steps ------------------------------------------------------------------------------------------------------------


def meet(session: Session, config: AppConfig, experts: Sequence[str] | None = None) -> tuple[go.Figure, str]:
    """Step 1: the chosen experts (None or all: every one) become the session's, and each is scored on every task."""
    bench = bench_of(session, config)
    session.lesson_step = "meet"
    everyone = bench.loaded.whole.task_names
    chosen = list(experts) if experts else everyone
    if not isinstance(experts, (list, tuple, type(None))) or not all(isinstance(e, str) for e in chosen):
        raise refuse(f"Experts: choose at least two of {', '.join(map(plain, everyone))}.")
    if sorted(chosen) != sorted(bench.task_names):
        handlers.choose_experts(session, chosen)
    figure = fit(expert_table_figure(session), expert_table_height(session))
    names = ", ".join(plain(t) for t in session.bench.task_names)
    return figure, f"**{len(session.bench.task_names)} experts:** {names}. Each is best on its own task (the diagonal)."


def expert_table_figure(session: Session) -> go.Figure:
    """Every chosen expert on every chosen task (a heatmap in plain names), computed once per subset for the class."""
    from wemoe.analysis.cross_accuracy import cross_accuracy
    from wemoe.evaluation.sample_eval import sample_data

    bench = session.bench
    with friendly("Scoring every expert on every task"), busy(session):
        table, _ = bench.cached(("lesson_experts", LESSON_PER_TASK), lambda: cross_accuracy(
            bench.loaded.expert_towers(), sample_data(bench.data(), LESSON_PER_TASK), bench.heads()))
    columns, rows = [plain(c) for c in table.columns], [plain(r) for r in table.index]
    many = len(rows) > MANY_EXPERTS  # whole numbers in smaller type, every name labelled, a row per name
    figure = go.Figure(go.Heatmap(z=table.values, x=columns, y=rows, text=table.round(0 if many else 1).values,
                                  texttemplate="%{text}", textfont={"size": 9} if many else {}, colorscale="Viridis"))
    figure.update_layout(title="each expert (rows) on every task (columns), % correct",
                         yaxis={"autorange": "reversed", "tickmode": "array", "tickvals": rows},
                         xaxis={"tickmode": "array", "tickvals": columns})
    return figure


def expert_table_height(session: Session) -> int:
    """Step 1's figure height: the lesson's height, taller by a row's worth per expert above :data:`MANY_EXPERTS`."""
    return LESSON_PLOT_HEIGHT + 16 * max(0, len(session.bench.task_names) - MANY_EXPERTS)


def task_scores(session: Session, lambdas: Mapping[str, float]) -> dict[str, float]:
    """Accuracy per task (and ``average``) of ``base + sum_t lambda_t tau_t`` on the lesson's sample of test images,
    computed once per setting for the class (the process's result cache)."""
    from wemoe.analysis.sweep import per_task_lambdas

    bench = session.bench
    key = ("lesson_lambdas", tuple(sorted((t, float(v)) for t, v in lambdas.items())), LESSON_PER_TASK)
    return bench.cached(key, lambda: per_task_lambdas(bench, lambdas, per_task=LESSON_PER_TASK))[0]


def add_up(session: Session, config: AppConfig, lam: Any = DEFAULT_LAMBDA) -> tuple[go.Figure, go.Figure, str]:
    """Step 2: task arithmetic at one lambda (accuracy per task), beside the sweep of lambda from 0 to 1."""

    lam = number(lam, "Lambda", minimum=0.0, maximum=1.0)
    bench = bench_of(session, config)
    session.lesson_step = "add"
    with friendly("Adding the experts up"), busy(session):
        scores = task_scores(session, dict.fromkeys(bench.task_names, lam))
    session.findings["lambda"] = {"average": scores["average"], "setting": f"lambda {lam:g}, {_experts(bench)}",
                                  "details": {"experts": list(bench.task_names), "lambda": lam}}
    bars = _bars({f"lambda {lam:g}": scores}, f"task arithmetic: base + {lam:g} x (sum of the task vectors)")
    sweep = fit(lambda_sweep_view(session, lesson_size.settings(config).sweep_step))
    for title in sweep.layout.annotations:  # the subplots are named by method: in plain words on the lesson
        title.text = plain(title.text)
    sweep.for_each_trace(lambda trace: trace.update(name=plain(trace.name)))
    return bars, sweep, f"Average at lambda {lam:g}: **{scores['average']:.1f}%**."


def interfere(session: Session, config: AppConfig, keep: Any = 20) -> tuple[go.Figure, str]:
    """Step 3: how alike the task vectors are (cosine) and where their signs conflict, keeping the top ``keep`` %."""
    bench_of(session, config)
    session.lesson_step = "interfere"
    figure, _ = interference_view(session, keep, "whole")
    return fit(figure), ("Near 0: the experts changed different things. A high share of sign conflicts: adding "
                         "them cancels out; TIES keeps only the largest changes and the majority sign.")


def forget(session: Session, config: AppConfig, task: Any = None, strength: Any = DEFAULT_FORGET
           ) -> tuple[go.Figure, str]:
    """Step 4: subtract ``strength`` times one task's vector from the base model: that task's accuracy next to the
    base model's, and every other task's (the controls)."""

    bench = bench_of(session, config)
    if task in (None, ""):
        task = FORGET_FIRST if FORGET_FIRST in bench.task_names else bench.task_names[0]
    if not isinstance(task, str) or task not in bench.task_names:
        raise refuse(f"Task to forget: choose one of {', '.join(map(plain, bench.task_names))}, got {task!r}.")
    strength = number(strength, "How much to subtract", minimum=0.0, maximum=2.0)
    with friendly("Forgetting a task"), busy(session):
        before, after = task_scores(session, {}), task_scores(session, {task: -strength})
    # one figure per setting for the class, as its scores (a class forgetting together built 30 alike at once)
    figure, _ = bench.cached(("lesson_forget_figure", task, float(strength), LESSON_PER_TASK), lambda: _bars(
        {"base model": before, f"minus {strength:g} x {plain(task)}": after},
        f"forgetting {plain(task)}: base - {strength:g} x its task vector"))
    others = [t for t in bench.task_names if t != task]
    kept = sum(after[t] - before[t] for t in others) / max(1, len(others))
    session.lesson_step = "forget"
    session.findings["forget"] = {"average": after["average"], "forgotten": after[task],
                                  "controls": sum(after[t] for t in others) / max(1, len(others)),
                                  "setting": f"{plain(task)} minus {strength:g}",
                                  "details": {"experts": list(bench.task_names), "forget": task, "strength": strength,
                                              "lowest": min((after[t] for t in others), default=100.0)}}
    return figure, (f"{plain(task)}: {before[task]:.1f}% -> **{after[task]:.1f}%**; the other tasks moved "
                    f"{kept:+.1f} points on average.")


def route(session: Session, config: AppConfig, steps: Any = None, progress: Any = None
          ) -> Iterator[tuple[str, Any, Any]]:
    """Step 5: merge with WEMoE and adapt its routers live, yielding (status, loss curve, routing per task)."""
    bench = bench_of(session, config)
    session.lesson_step = "route"
    # checked before any work: a class challenge ("best WEMoE within N steps") sets it on the page
    sized = lesson_size.settings(config)  # the paper's settings, or smaller ones this machine affords
    steps = sized.steps if steps is None else adapt_value("steps", steps, minimum=1)
    yield "Merging with WEMoE (each block's MLP gets a router)...", gr.skip(), gr.skip()
    # the lesson's settings, as the warm-up (app.warm) ran them: a class gets this run from the cache; the merge
    # times its adaptation step at them too (the page's 16 images per task: a 5 GB step on ViT-B/32, timed again)
    lr, per_task = adapt_setting("lr").default, sized.per_task
    handlers.merge(session, ["task_arithmetic", "wemoe"], {}, per_task, default_steps=steps)
    status = ""
    for status, curve in handlers.adapt(session, "wemoe", steps, lr, per_task, config.default_loss):
        status = in_plain_words(status, bench.task_names)  # "Adapted WEMoE (routed)", never the method's code name
        yield status, curve, gr.skip()
    heat = routing_by_task(session, config)
    scores = merged_scores(session, ["task_arithmetic", "wemoe"])
    session.findings["wemoe"] = {"average": scores["wemoe"], "setting": f"{steps} steps, {_experts(bench)}",
                                 "details": {"experts": list(bench.task_names), "steps": steps}}
    yield (f"{status}\n\n**WEMoE: {scores['wemoe']:.1f}%** on average, task arithmetic "
           f"{scores['task_arithmetic']:.1f}% ({scored_images(bench)} test images per task)."), gr.skip(), heat


def merged_scores(session: Session, names: Sequence[str]) -> dict[str, float]:
    """The average accuracy (percent) of the session's merges ``names`` on the lesson's sample of test images (the
    evaluation's cells where the sample is every loaded image: step 7 and the lab's table then reuse them)."""
    bench = session.bench
    with friendly("Scoring the merges"), busy(session):
        return {name: row["average"] for name, row in bench.sample_scores(names, LESSON_PER_TASK).items()}


def scored_images(bench: Any) -> int:
    """Test images per task the lesson's steps score: :data:`LESSON_PER_TASK`, or fewer where the zoo was loaded with
    fewer (a lesson sized for a CPU loads its own count)."""
    from wemoe.evaluation.sample_eval import sample_size

    return sample_size(bench.data(), LESSON_PER_TASK)


def _experts(bench: Any) -> str:
    return f"{len(bench.task_names)} experts"


def routing_by_task(session: Session, config: AppConfig) -> go.Figure:
    """Each task's test images (rows) against the experts (columns): the routers' weight, averaged over the images
    and the layers (one heatmap; the lab shows it layer by layer). The diagonal lights up when routing works."""
    bench = bench_of(session, config)
    name = bench.routed_merge()
    if name is None:
        raise refuse("Merge with WEMoE first (the button above): routing belongs to its routers.")
    with friendly("Routing the test images"), busy(session):
        analysis, _ = bench.routing_analysis(name, config.routing_per_task)
    by_task = analysis.by_task()
    weights = [[float(v) for v in by_task[t].mean(dim=(0, 1))] for t in by_task]
    return routing_by_task_figure(weights, list(by_task), analysis.task_names)


def routing_by_task_figure(weights: Sequence[Sequence[float]], tasks: Sequence[str], experts: Sequence[str]
                           ) -> go.Figure:
    """Step 5's heatmap: ``weights[i][j]``, the routers' average weight of expert ``j`` on task ``i``'s images,
    centred on 0; every task and expert named (a row's worth taller per task above :data:`MANY_EXPERTS`, the names
    in smaller type: plotly stands them upright where they would overlap), the values written in the cells up to
    eight tasks. It reads on a phone (390 px): a title of two short lines, and the colour bar across the top, not
    beside the columns it would squeeze."""
    reach = max(1e-6, max(abs(v) for row in weights for v in row))  # centred on 0, as step 3's cosines and the lab's
    y_labels, x_labels = [plain(t) for t in tasks], [plain(t) for t in experts]
    many = len(experts) > MANY_EXPERTS
    names = {"size": 10} if many else {}  # 20 upright names in 12 px ran into each other on a phone's 13 px columns
    figure = go.Figure(go.Heatmap(z=weights, x=x_labels, y=y_labels,
                                  colorscale=figures.DIVERGING, zmid=0, zmin=-reach, zmax=reach,
                                  text=[[f"{v:.2f}" for v in row] for row in weights],
                                  texttemplate="%{text}" if len(tasks) <= 8 else "",
                                  colorbar={"orientation": "h", "x": 0, "xanchor": "left", "y": 1.01,
                                            "yanchor": "bottom", "len": 1, "thickness": 10,
                                            "tickfont": {"size": 10}, "title": {"text": "weight", "side": "right"}}))
    figure.update_layout(title={"text": "Weight of each expert (columns)<br>on each task's images (rows)",
                                "font": {"size": 15}, "x": 0.02, "xanchor": "left"},
                         yaxis={"autorange": "reversed", "tickmode": "array", "tickvals": y_labels,
                                "tickfont": names},
                         xaxis={"title": "expert", "tickmode": "array", "tickvals": x_labels, "tickfont": names})
    fit(figure, LESSON_PLOT_HEIGHT + 16 * max(0, len(tasks) - MANY_EXPERTS))
    figure.update_layout(margin={"t": 130})  # below the plot's label: the title's two lines, then the colour bar
    return figure


def try_image(session: Session, config: AppConfig, image: Any) -> tuple[Any, Any, str, Any]:
    """Step 6: an uploaded or example image through every model: (image as seen, the answers, the routers' guess,
    its routing heatmap)."""
    from app.try_panel import in_words, read_image

    bench_of(session, config)
    session.lesson_step = "try"
    picture = read_image(image, config)
    shown, table, words, heat = in_words(session, handlers.predict(session, picture, None, config))
    return shown, plain_columns(table), words, heat  # the guess and the heatmap's title in plain words


def plain_columns(table: pd.DataFrame) -> pd.DataFrame:
    """The predictions table with its columns in plain words: ``WEMoE (routed)``, ``clothing expert`` (the lab's
    ``wemoe``, ``expert clothing``)."""
    def column(name: str) -> str:
        task = name.removeprefix("expert ")
        return f"{plain(task)} expert" if task != name else plain(name)

    return table.rename(columns=column)


def in_plain_words(text: str, names: Sequence[str]) -> str:
    """``text`` with the code names of tasks and models in plain words: whole names only (a task called ``cities``
    keeps its ``ties``), the longest first."""
    wanted = sorted({*names, *MODEL_WORDS}, key=len, reverse=True)
    if not wanted:
        return text
    pattern = re.compile(r"(?<!\w)(" + "|".join(map(re.escape, wanted)) + r")(?!\w)")
    return pattern.sub(lambda found: plain(found.group(1)), text)


def cost(session: Session, config: AppConfig) -> tuple[go.Figure, str]:
    """Step 7: average accuracy against extra parameters and adaptation time, per model (merges made so far)."""
    bench = bench_of(session, config)
    session.lesson_step = "cost"
    if "task_arithmetic" not in bench.merges:
        handlers.merge(session, ["task_arithmetic"], {})
    names = ", ".join(plain(m) for m in bench.merges)
    return fit(cost_view(session)), (f"The base model, the experts (one model per task) and your merges ({names}): "
                                     "up and to the left is better.")


def fit(figure: go.Figure, height: int = LESSON_PLOT_HEIGHT) -> go.Figure:
    """A lesson figure sized so that a step's text, control and result fit on one 1280x800 screen."""
    figure.update_layout(height=height, margin={"t": 50, "l": 50, "r": 10, "b": 40})
    return figure


def _bars(rows: Mapping[str, Mapping[str, float]], title: str) -> go.Figure:
    figure = go.Figure([go.Bar(name=name, x=[plain(t) for t in scores], y=list(scores.values()),
                               text=[f"{v:.0f}" for v in scores.values()], textposition="auto")
                        for name, scores in rows.items()])
    figure.update_layout(barmode="group", height=LESSON_PLOT_HEIGHT, yaxis={"title": "% correct", "range": [0, 100]},
                         title=title,
                         legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"},
                         margin={"t": 60, "l": 50, "r": 10, "b": 40})
    return figure


# Links ------------------------------------------------------------------------------------------------------------


@dataclass
class LessonLink:
    """What a link opens: a step and its settings (defaults where the link said nothing or something wrong)."""

    step: str = STEPS[0]
    experts: list[str] = field(default_factory=list)  # empty: every expert
    lam: float = DEFAULT_LAMBDA
    forget: str | None = None
    strength: float = DEFAULT_FORGET
    lambdas: dict[str, float] = field(default_factory=dict)  # step 2's per-task lambdas (empty: none given)
    problems: list[str] = field(default_factory=list)

    @property
    def index(self) -> int:
        """The step's position (0-based)."""
        return STEPS.index(self.step)


def read_link(query: Mapping[str, str], tasks: Sequence[str]) -> LessonLink:
    """The lesson state a link's query (``step``, ``experts``, ``lambda``, ``forget``, ``strength``, ``lambdas`` as
    ``task:value,...``) asks for, each checked; a missing value is the default, a wrong one the default plus a line in
    ``problems``."""
    link = LessonLink()
    step = query.get("step")
    if step is not None:
        by_number = {str(i + 1): s for i, s in enumerate(STEPS)}
        if step in STEPS or step in by_number:
            link.step = by_number.get(step, step)
        else:
            link.problems.append(f"step {step!r} (steps are 1-7)")
    experts = [e for e in (query.get("experts") or "").split(",") if e]
    if experts:
        unknown = [e for e in experts if e not in tasks]
        if unknown or len(set(experts)) < 2:
            link.problems.append(f"experts {','.join(experts)!r} (at least two of {', '.join(tasks)})")
        else:
            link.experts = [t for t in tasks if t in experts]
    link.lam = _link_number(query, "lambda", DEFAULT_LAMBDA, 0.0, 1.0, link.problems)
    link.strength = _link_number(query, "strength", DEFAULT_FORGET, 0.0, 2.0, link.problems)
    forgotten = query.get("forget")
    if forgotten is not None:
        if forgotten in tasks:
            link.forget = forgotten
        else:
            link.problems.append(f"forget {forgotten!r} (one of {', '.join(tasks)})")
    if query.get("lambdas"):
        link.lambdas = _link_lambdas(query["lambdas"], tasks, link.problems)
    return link


def _link_lambdas(text: str, tasks: Sequence[str], problems: list[str]) -> dict[str, float]:
    """``task:value,...`` as per-task lambdas (each task known, each value from 0 to 1); {} plus a problem if not."""
    found: dict[str, float] = {}
    for pair in text.split(","):
        task, _, value = pair.partition(":")
        try:
            number_value = float(value)
        except ValueError:
            number_value = float("nan")
        if task not in tasks or not 0.0 <= number_value <= 1.0:
            problems.append(f"lambdas {text!r} (task:value pairs, a task of {', '.join(tasks)} and a value from 0 "
                            "to 1)")
            return {}
        found[task] = number_value
    return found


def _link_number(query: Mapping[str, str], key: str, default: float, low: float, high: float,
                 problems: list[str]) -> float:
    if key not in query:
        return default
    try:
        value = float(query[key])
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # NaN fails too
        problems.append(f"{key} {query[key]!r} (a number from {low:g} to {high:g})")
        return default
    return value


def link_for(base: str, step: str, experts: Sequence[str] = (), lam: float | None = None, forget: str | None = None,
             strength: float | None = None, lambdas: Mapping[str, float] | None = None) -> str:
    """The link that opens ``step`` with these settings (only those given)."""
    query = {"step": str(STEPS.index(step) + 1)}
    if experts:
        query["experts"] = ",".join(experts)
    for key, value in (("lambda", lam), ("forget", forget), ("strength", strength)):
        if value is not None:
            query[key] = f"{value:g}" if isinstance(value, float) else str(value)
    if lambdas:
        query["lambdas"] = ",".join(f"{task}:{float(value):g}" for task, value in lambdas.items())
    return f"{base.split('?')[0]}?{urlencode(query, safe=',:')}"


def share_link(base: str, step: Any, tasks: Sequence[str], experts: Any = None, lam: Any = None, forget: Any = None,
               strength: Any = None, lambdas: Any = None) -> str:
    """The link a student copies to share where they are: ``step`` (a step's name; anything else: the first) with
    the page's values, each checked as :func:`read_link` checks a link (a wrong one is left out, so the link opens
    with its default). ``lambdas``: step 2's per-task lambdas (one per task of ``tasks``, in their order, or a
    mapping task -> lambda); the link names those set away from the lesson's default (a task it does not name opens
    at the default). ``base``: the page's address (its query is dropped)."""
    query = {"step": step if step in STEPS else STEPS[0],
             "experts": ",".join(experts) if isinstance(experts, (list, tuple)) and all(
                 isinstance(e, str) for e in experts) else ""}
    for key, value in (("lambda", lam), ("strength", strength)):
        if _is_number(value):
            query[key] = f"{float(value):g}"
    if isinstance(forget, str):
        query["forget"] = forget
    set_lambdas = _set_lambdas(lambdas, tasks)
    if set_lambdas:
        query["lambdas"] = ",".join(f"{task}:{value:g}" for task, value in set_lambdas.items())
    link = read_link(query, tasks)

    def kept(key: str, value: float) -> float | None:  # a value given and usable, else left out
        return value if key in query and float(query[key]) == value else None

    return link_for(base if isinstance(base, str) else "", link.step,
                    link.experts if link.experts and len(link.experts) < len(tasks) else (),
                    kept("lambda", link.lam), link.forget, kept("strength", link.strength), link.lambdas)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _set_lambdas(values: Any, tasks: Sequence[str]) -> dict[str, float]:
    """The per-task lambdas in ``values`` (see :func:`share_link`) that are numbers from 0 to 1 away from the
    default, in the tasks' order; anything else is left out."""
    if isinstance(values, Mapping):
        given = values
    elif isinstance(values, (list, tuple)) and len(values) == len(tasks):
        given = dict(zip(tasks, values, strict=True))
    else:
        return {}
    return {task: float(given[task]) for task in tasks
            if _is_number(given.get(task)) and 0.0 <= given[task] <= 1.0 and float(given[task]) != DEFAULT_LAMBDA}


def problems_note(link: LessonLink) -> str:
    """The one message of a link with wrong values ("" when none)."""
    if not link.problems:
        return ""
    return ("This link had values the lesson cannot use, so it opened with the defaults instead: "
            + "; ".join(link.problems) + ".")


def loss_placeholder() -> go.Figure:
    """The loss chart before step 5 runs."""
    return figures.empty_figure("The routers' loss appears here while they adapt.")



def add_to_board(session: Session, kind: Any, nickname: Any = None) -> str:
    """Put the session's last lesson result of ``kind`` (``lambda``, ``forget`` or ``wemoe``) on the class board."""
    from app.board import KINDS, BoardError

    if kind not in KINDS:
        raise refuse(f"Class board: one of {', '.join(KINDS)}, got {kind!r}.")
    found = session.findings.get(kind)
    if found is None:
        raise refuse(f"Nothing to add yet: run this step first ({KINDS[kind]}), then add it to the class board.")
    if session.shared is None:
        raise refuse("Load a zoo first: the class board belongs to this Space's class.")
    try:
        entry = session.shared.board.submit(kind, round(found["average"], 2), found["setting"], session.session_hash,
                                            nickname, found.get("forgotten"), found.get("controls"),
                                            details=found.get("details"))
    except BoardError as error:
        raise refuse(f"Class board: {error}") from None
    who = f" as {entry.nickname}" if entry.nickname else " (anonymous)"
    return f"Added to the class board{who}: {entry.setting}, {entry.average:.1f}% average."
