"""The lesson's page: seven steps in a ``gr.Walkthrough``, each two or three plain sentences, a question, what to
notice, one main control and its result, and a link that opens the step with its settings (``app.lesson``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app import challenge_page, inputs, lesson, lesson_lambdas, lesson_size
from app.events import quiet
from app.session import AppConfig, Session
from app.shared import PRESENT_EVERY_S
from wemoe.zoo_tasks import zoo_task_names

TEXT = {
    "meet": ("Each expert is the same small CLIP model, fine-tuned on one task. Below, every expert is scored on every "
             "task. Untick experts to merge fewer of them later.",
             "Is an expert any good at the other experts' tasks?",
             "the diagonal: each expert is best on its own task."),
    "add": ("A task vector is what fine-tuning changed: expert minus base. Task arithmetic adds them all to the base, "
            "each scaled by one number, lambda.",
            "Which lambda gives the best average? Why does it fall after that?",
            "every task rises at first, then tasks start to collapse as the vectors pile up."),
    "interfere": ("Merged changes can help or fight each other. Cosine near 0 means two experts changed different "
                  "things; a sign conflict means they pushed one weight in opposite directions.",
                  "Which pairs of experts would you expect to hurt each other most?",
                  "the share of conflicts drops when only the largest changes are kept (what TIES does)."),
    "forget": ("Subtracting a task vector makes the model forget that task, while the other tasks (the controls) "
               "should stay where they were.",
               "How much do you have to subtract before the other tasks suffer too?",
               "the forgotten task falls fast; the controls barely move."),
    "route": ("One merged model for every image is a compromise. WEMoE keeps every expert's MLP changes and lets a "
              "small router mix them per image; the routers learn from unlabeled test images in a few seconds.",
              "Does the router send each task's images to that task's expert?",
              "the loss falls as the routers learn; in the heatmap each task lights up its own expert."),
    "try": ("Your own image goes through every model: the base, the experts, and the merges you made.",
            "Which expert does the router pick for your image, and does the merged model agree with it?",
            "a drawing or photo far from every task confuses the router too."),
    "cost": ("Merging saves memory and time: one model instead of one per task. Routing costs a little more.",
             "Which model would you deploy on a phone, and which on a server?",
             "WEMoE is nearly as good as the experts for a fraction of their parameters."),
}


def default_tasks(config: AppConfig) -> list[str]:
    """The default zoo's tasks, read without loading it (the pocket zoos' manifests, a preset's list); empty for a
    zoo only its loader knows (it is loaded by the first step)."""
    return zoo_task_names(config.default_zoo)


ROUTE_STEPS_MIN, ROUTE_STEPS_MAX = 10, 200  # step 5's slider: each value the class picks is one shared run


def stamp(session: Any, request: gr.Request | None) -> None:
    """Tie the session to its browser tab (gradio's session id): the board's per-student limit and closing the tab
    (``demo.unload``) need it, and a lesson step may be the tab's first call."""
    if session is not None and request is not None and getattr(session, "session_hash", None) is None:
        session.session_hash = getattr(request, "session_hash", None)


def _text(step: str) -> str:
    intro, question, notice = TEXT[step]
    return f"{intro}\n\n**Question:** {question}\n\n*What to notice:* {notice}"


def build_lesson(session: gr.State, config: AppConfig, light: dict, long: dict) -> LessonPage:
    """The lesson's steps and their events (the lesson is the first tab; the lab the second)."""
    tasks = default_tasks(config)
    sized = lesson_size.settings(config)  # the lesson's steps on this machine (the paper's where they fit)
    plain_tasks = [(lesson.plain(t), t) for t in tasks]
    light, long = light | {"preprocess": False}, long | {"preprocess": False}
    first_forget = lesson.FORGET_FIRST if lesson.FORGET_FIRST in tasks else (tasks[0] if tasks else None)
    warm_note = gr.Markdown(config.shared.warm.text(), elem_id="lesson-warm")
    warm_timer = gr.Timer(2.0)  # stops at its first tick with no warm-up running
    nexts: list[gr.Button] = []
    boards: dict[str, gr.Button] = {}
    board_notes: dict[str, gr.Markdown] = {}
    challenge_notes: dict[str, gr.Markdown] = {}  # the class challenge, beside the board buttons
    with gr.Walkthrough(selected=0, elem_id="lesson") as walk:
        with gr.Step(lesson.TITLES["meet"], id=0):
            gr.Markdown(_text("meet"))
            with gr.Row():  # the step's button first: 5 Tab presses from the top of the page, not 13 (the checkboxes)
                meet_button = gr.Button("Meet the experts", variant="primary", scale=1, elem_id="lesson-meet")
                experts = gr.CheckboxGroup(plain_tasks, value=tasks, label="Experts to merge", scale=3,
                                           elem_id="lesson-experts")
            meet_note = gr.Markdown()
            nickname = gr.Textbox(label="Your nickname on the class board (optional, plain text)", max_lines=1,
                                  max_length=24, elem_id="lesson-nickname")
            meet_plot = gr.Plot(label="Each expert on every task", elem_id="lesson-meet-plot")
            nexts.append(gr.Button(f"Next: {lesson.TITLES[lesson.STEPS[1]]}", size="sm", elem_id="lesson-next-1"))
        with gr.Step(lesson.TITLES["add"], id=1):
            gr.Markdown(_text("add"))
            with gr.Row():
                lam = gr.Slider(0.0, 1.0, value=lesson.DEFAULT_LAMBDA, step=0.05, label="Lambda", scale=3,
                                elem_id="lesson-lambda")
                add_button = gr.Button("Add them up", variant="primary", scale=1, elem_id="lesson-add")
            add_note = gr.Markdown()
            with gr.Row():
                add_plot = gr.Plot(label="Every task at your lambda", elem_id="lesson-add-plot")
                sweep_plot = gr.Plot(label="Every lambda from 0 to 1")
            with gr.Row():
                boards["lambda"] = gr.Button("Add this to the class board", size="sm", elem_id="lesson-board-lambda")
                board_notes["lambda"] = gr.Markdown()
            challenge_notes["lambda"] = challenge_page.student_note("lambda")
            per_task = lesson_lambdas.build_controls(tasks)
            boards["lambdas"], board_notes["lambdas"] = per_task.board, per_task.board_note
            challenge_notes["lambdas"] = challenge_page.student_note("lambdas")
            nexts.append(gr.Button(f"Next: {lesson.TITLES[lesson.STEPS[2]]}", size="sm", elem_id="lesson-next-2"))
        with gr.Step(lesson.TITLES["interfere"], id=2):
            gr.Markdown(_text("interfere"))
            with gr.Row():
                keep = gr.Slider(1, 100, value=20, step=1, label="Keep the largest % of each expert's changes",
                                 scale=3)
                interfere_button = gr.Button("Compare their changes", variant="primary", scale=1,
                                             elem_id="lesson-interfere")
            interfere_note = gr.Markdown()
            interfere_plot = gr.Plot(label="How the experts' changes overlap", elem_id="lesson-interfere-plot")
            nexts.append(gr.Button(f"Next: {lesson.TITLES[lesson.STEPS[3]]}", size="sm", elem_id="lesson-next-3"))
        with gr.Step(lesson.TITLES["forget"], id=3):
            gr.Markdown(_text("forget"))
            with gr.Row():
                forgotten = gr.Dropdown(plain_tasks, value=first_forget, label="Task to forget",
                                        scale=2)
                strength = gr.Slider(0.0, 2.0, value=lesson.DEFAULT_FORGET, step=0.1, label="How much to subtract",
                                     scale=2)
                forget_button = gr.Button("Forget it", variant="primary", scale=1, elem_id="lesson-forget")
            forget_note = gr.Markdown()
            forget_plot = gr.Plot(label="Before and after", elem_id="lesson-forget-plot")
            with gr.Row():
                boards["forget"] = gr.Button("Add this to the class board", size="sm", elem_id="lesson-board-forget")
                board_notes["forget"] = gr.Markdown()
            challenge_notes["forget"] = challenge_page.student_note("forget")
            nexts.append(gr.Button(f"Next: {lesson.TITLES[lesson.STEPS[4]]}", size="sm", elem_id="lesson-next-4"))
        with gr.Step(lesson.TITLES["route"], id=4):
            gr.Markdown(_text("route"))
            with gr.Row(equal_height=True):  # the button first: the step's main control, then how long it learns
                route_button = gr.Button("Merge with WEMoE and let the routers learn", variant="primary", scale=2,
                                         elem_id="lesson-route")
                route_steps = gr.Slider(min(ROUTE_STEPS_MIN, sized.steps), ROUTE_STEPS_MAX,
                                        value=sized.steps, step=1,
                                        label="Adaptation steps (more: slower, often better)", scale=3,
                                        elem_id="lesson-steps")
            gr.Markdown(lesson_size.note(config), elem_id="lesson-size-note")  # empty with the paper's settings
            route_note = gr.Markdown(elem_id="lesson-route-note")
            with gr.Row():
                loss_plot = gr.Plot(lesson.loss_placeholder(), label="The routers' loss", elem_id="lesson-loss")
                routing_plot = gr.Plot(label="Which expert each task's images use", elem_id="lesson-route-plot")
            with gr.Row():
                boards["wemoe"] = gr.Button("Add this to the class board", size="sm", elem_id="lesson-board-wemoe")
                board_notes["wemoe"] = gr.Markdown()
            challenge_notes["wemoe"] = challenge_page.student_note("wemoe")
            nexts.append(gr.Button(f"Next: {lesson.TITLES[lesson.STEPS[5]]}", size="sm", elem_id="lesson-next-5"))
        with gr.Step(lesson.TITLES["try"], id=5):
            gr.Markdown(_text("try"))
            with gr.Row():
                image = gr.Image(type="filepath", label="Your image", height=150, sources=["upload", "clipboard"],
                                 elem_id="lesson-image")
                with gr.Column():
                    try_button = gr.Button("Ask every model", variant="primary", elem_id="lesson-try")
                    # a second image without finding the image's small x (a drop on the image works too)
                    another = gr.UploadButton("Choose an image file", file_types=["image"], size="sm",
                                              elem_id="lesson-another")
                    guess = gr.Markdown()
            examples = [path for path, _ in inputs.gallery_examples(config, tasks or None)][:: 2][:8]
            if examples:
                gr.Examples(examples, inputs=[image], label="Or pick an example")
            with gr.Row():
                seen = gr.Image(label="What the models see", height=120, interactive=False)
                answers = gr.Dataframe(label="The answers", interactive=False, wrap=True, elem_id="lesson-try-answers")
                heat = gr.Plot(label="Routing of your image")
            nexts.append(gr.Button(f"Next: {lesson.TITLES[lesson.STEPS[6]]}", size="sm", elem_id="lesson-next-6"))
        with gr.Step(lesson.TITLES["cost"], id=6):
            gr.Markdown(_text("cost"))
            cost_button = gr.Button("Show what each model costs", variant="primary", elem_id="lesson-cost")
            cost_note = gr.Markdown()
            cost_plot = gr.Plot(label="Accuracy against cost", elem_id="lesson-cost-plot")
        link_note = gr.Markdown(elem_id="lesson-link-note")
    with gr.Row(equal_height=True):
        share_button = gr.Button("Link to this step", size="sm", scale=1, elem_id="lesson-share")
        share_box = gr.Textbox(label="Copy this link: it opens your step with your settings", buttons=["copy"],
                               interactive=False, scale=4, max_lines=1, elem_id="lesson-link")

    def warm_event():
        text = config.shared.warm.text()
        return text, gr.Timer(active=bool(text))

    warm_timer.tick(warm_event, None, [warm_note, warm_timer], api_name="lesson_warm", show_progress="hidden",
                    queue=False)

    def here_event(state, request: gr.Request = None):
        """The page is open (the teacher's count of students now): no computation, no output."""
        if isinstance(state, Session):
            stamp(state, request)
            config.shared.here(state)

    presence = gr.Timer(PRESENT_EVERY_S)
    presence.tick(here_event, [session], None, api_name="lesson_here", show_progress="hidden", queue=False,
                  preprocess=False)

    for index, button in enumerate(nexts, start=1):
        button.click(lambda i=index: gr.Walkthrough(selected=i), None, [walk], api_name=f"lesson_next_{index}",
                     show_progress="hidden", queue=False)

    challenge_page.wire_student_notes(config, challenge_notes)

    for kind, button in boards.items():
        @quiet
        def board_event(state, name=None, request: gr.Request = None, kind=kind):  # request: its place
            stamp(state, request)
            return lesson.add_to_board(state, kind, name)

        api = "submit_to_board" if kind == "lambda" else f"submit_to_board_{kind}"
        # an instant handler, as the page's ticks: without the queue (whose messages cost the server more than the
        # handler), so that a class adding to the board together takes less from its clicks
        button.click(board_event, [session, nickname], [board_notes[kind]], api_name=api, queue=False,
                     show_progress="hidden", preprocess=False)

    @quiet
    def meet_event(state, chosen=None, request: gr.Request = None):
        stamp(state, request)
        return lesson.meet(state, config, chosen)

    meet_button.click(meet_event, [session, experts], [meet_plot, meet_note], api_name="lesson_meet",
                      show_progress_on=[meet_note], **long)

    @quiet
    def add_event(state, lam_value=lesson.DEFAULT_LAMBDA, request: gr.Request = None):
        stamp(state, request)
        return lesson.add_up(state, config, lam_value)

    add_button.click(add_event, [session, lam], [add_plot, sweep_plot, add_note], api_name="lesson_add",
                     show_progress_on=[add_note], **long)
    lesson_lambdas.wire(per_task, session, config, tasks, add_plot, long)

    @quiet
    def interfere_event(state, keep_percent=20, request: gr.Request = None):
        stamp(state, request)
        return lesson.interfere(state, config, keep_percent)

    interfere_button.click(interfere_event, [session, keep], [interfere_plot, interfere_note],
                           api_name="lesson_interfere", **light)

    @quiet
    def forget_event(state, task=None, amount=lesson.DEFAULT_FORGET, request: gr.Request = None):
        stamp(state, request)
        return lesson.forget(state, config, task, amount)

    forget_button.click(forget_event, [session, forgotten, strength], [forget_plot, forget_note],
                        api_name="lesson_forget", show_progress_on=[forget_note], **long)

    @quiet
    def route_event(state, steps=None, request: gr.Request = None):
        stamp(state, request)
        yield from lesson.route(state, config, steps)

    route_button.click(route_event, [session, route_steps], [route_note, loss_plot, routing_plot],
                       api_name="lesson_route",
                       show_progress_on=[route_note], **long)

    @quiet
    def try_event(state, picture=None, request: gr.Request = None):
        stamp(state, request)
        shown, table, words, routing = lesson.try_image(state, config, picture)
        return shown, table, words, routing

    try_button.click(try_event, [session, image], [seen, answers, guess, heat], api_name="lesson_try", **light)
    # in the page only: the file becomes the image
    another.upload(None, [another], [image], js="(file) => file", show_progress="hidden")

    @quiet
    def cost_event(state, request: gr.Request = None):
        stamp(state, request)
        return lesson.cost(state, config)

    cost_button.click(cost_event, [session], [cost_plot, cost_note], api_name="lesson_cost",
                      show_progress_on=[cost_note], **long)

    def share_event(request: gr.Request, state, chosen=None, lam_value=None, task=None, amount=None, *per_task_values):
        """The link to the step this tab ran last, with the values its controls show now (step 2's per-task lambdas
        too, those set away from the default)."""
        headers = getattr(request, "headers", None) or {}
        step = getattr(state, "lesson_step", None)
        return lesson.share_link(headers.get("referer", ""), step, tasks, chosen, lam_value, task, amount,
                                 per_task_values)

    # the per-task sliders named by their tasks in the API (the request first: gradio passes it by its position)
    share_event.__signature__ = inspect.Signature([
        *list(inspect.signature(share_event).parameters.values())[:6], *lesson_lambdas.task_parameters(tasks, None)])
    share_button.click(share_event, [session, experts, lam, forgotten, strength, *per_task.sliders], [share_box],
                       api_name="lesson_link", preprocess=False, show_progress="hidden", queue=False)

    def open_link(request: gr.Request):
        """A link's step and settings (defaults, and one message, for values the lesson cannot use)."""
        query = dict(getattr(request, "query_params", None) or {})
        link = lesson.read_link(query, tasks)
        note = lesson.problems_note(link)
        if note:
            gr.Warning(note)
        return (gr.Walkthrough(selected=link.index), link.experts or tasks, link.lam,
                link.forget or first_forget, link.strength, f"_{note}_" if note else "",
                *lesson_lambdas.link_values(per_task, tasks, link.lambdas))

    return LessonPage(walk, open_link, [walk, experts, lam, forgotten, strength, link_note, per_task.box,
                                        *per_task.sliders])


@dataclass
class LessonPage:
    """The lesson's walkthrough, and what the page's load event calls to open a link (``demo.load``)."""

    walk: gr.Walkthrough
    open_link: Callable[[gr.Request], tuple]
    link_outputs: list[Any]
