"""The lesson: every step's verb on a session (the pocket zoo, as a class sees it), its links, and its endpoints."""

from __future__ import annotations

import gradio as gr
import pytest

from app import lesson
from app.session import AppConfig, Session
from tests.app_support import launched, tiny_config, write_examples
from wemoe.zoo_tasks import zoo_task_names

POCKET = zoo_task_names("pocket")


@pytest.fixture(scope="module")
def config():
    return AppConfig(samples=48)


@pytest.fixture
def session():
    made = Session()
    yield made
    made.close()


def test_the_shipped_zoo_names_its_tasks_without_loading():
    assert len(POCKET) == 8 and POCKET[0] == "pocket_digits"
    assert [lesson.plain(t) for t in POCKET[:2]] == ["digits", "shapes"]
    assert lesson.plain("task_arithmetic") == "task arithmetic" and lesson.plain("motion_blur") == "motion blur"


def test_a_step_clicked_first_loads_the_zoo_and_meets_the_chosen_experts(session, config):
    figure, note = lesson.meet(session, config, ["pocket_shapes", "pocket_digits", "pocket_flags"])
    assert session.zoo_name == "pocket" and session.bench.task_names == ["pocket_digits", "pocket_shapes",
                                                                           "pocket_flags"]
    heat = figure.data[0]
    assert list(heat.y) == ["digits", "shapes", "flags"] and list(heat.x) == [*heat.y, "average"]  # plain names
    assert all(heat.z[i][i] == max(row[:3]) for i, row in enumerate(heat.z))  # each expert is best on its own task
    assert "3 experts" in note
    with pytest.raises(gr.Error, match="at least two"):
        lesson.meet(session, config, ["pocket_digits"])
    assert session.bench.task_names == ["pocket_digits", "pocket_shapes", "pocket_flags"]  # kept after the refusal


def test_adding_up_shows_every_task_at_the_lambda(session, config):
    lesson.meet(session, config, ["pocket_digits", "pocket_shapes"])
    bars, sweep, note = lesson.add_up(session, config, 0.4)
    assert [trace.name for trace in bars.data] == ["lambda 0.4"] and list(bars.data[0].x) == ["digits", "shapes",
                                                                                              "average"]
    assert "Average at lambda 0.4" in note and sweep.data
    legend = sweep.layout.legend  # under the plot, on the figure's bottom edge, not beside it
    assert legend.orientation == "h" and legend.yref == "container" and legend.y == 0 and legend.yanchor == "bottom"
    with pytest.raises(gr.Error, match="Lambda: enter a number from 0 to 1"):
        lesson.add_up(session, config, "x")


def test_forgetting_a_task_lowers_it_and_keeps_the_controls(session, config):
    """Negation on the pocket zoo: shapes minus half its task vector falls far below the base; the controls hold."""
    from wemoe.analysis.sweep import per_task_lambdas

    lesson.meet(session, config, None)
    figure, note = lesson.forget(session, config)  # the page's suggestion: shapes, half its task vector
    before, after = (dict(zip(trace.x, trace.y, strict=True)) for trace in figure.data)
    assert after["shapes"] < before["shapes"] - 30, (before, after)
    controls = [t for t in before if t not in ("shapes", "average")]
    assert sum(after[t] - before[t] for t in controls) / len(controls) > -5, (before, after)
    assert "shapes" in note and "->" in note
    direct = per_task_lambdas(session.bench, {"pocket_shapes": -0.5}, per_task=lesson.LESSON_PER_TASK)
    assert round(direct["pocket_shapes"]) == round(after["shapes"])  # the page shows the library's numbers
    with pytest.raises(gr.Error, match="Task to forget"):
        lesson.forget(session, config, "nope", 1.0)
    # the class shares one figure per setting (a class forgetting together built 30 alike at once): another student
    # with the same setting gets this one; another strength or another choice of experts, its own
    other = Session()
    try:
        lesson.meet(other, config, None)
        assert lesson.forget(other, config)[0] is figure
        stronger, _ = lesson.forget(other, config, "pocket_shapes", 1.0)
        assert stronger is not figure and stronger.data[1].y[1] < after["shapes"]
        lesson.meet(other, config, ["pocket_digits", "pocket_shapes"])
        assert list(lesson.forget(other, config)[0].data[0].x) == ["digits", "shapes", "average"]
    finally:
        other.close()


def test_the_other_steps_answer(session, config):
    lesson.meet(session, config, ["pocket_digits", "pocket_shapes"])
    figure, _ = lesson.interfere(session, config, 20)
    assert figure.data
    updates = list(lesson.route(session, config, steps=2))
    assert updates[-1][0].startswith("Adapted WEMoE (routed): 2 steps") and "wemoe" in session.bench.merges
    assert not any("wemoe" in status or "pocket_" in status for status, *_ in updates)  # plain words on the page
    heat = updates[-1][2].data[0]
    assert heat.zmid == 0 and heat.zmin == -heat.zmax  # a diverging scale centred on 0, as step 3's cosines
    example = sorted((config.examples_dir / "pocket_digits").iterdir())[0]
    shown, table, words, heat = lesson.try_image(session, config, str(example))
    assert "guess" in words and heat is not None
    # the answers in plain words: the merge's and the expert's names, not their code names
    assert list(table.columns) == ["WEMoE (routed)", f"{lesson.plain(words.split('guess: ')[1].split('**')[0])} expert"]
    assert "wemoe" not in words and "pocket_" not in words
    assert heat.layout.title.text == "Routing of this image (WEMoE (routed))"
    figure, note = lesson.cost(session, config)
    assert figure.data and "WEMoE" in note


def test_a_link_opens_its_step_with_its_settings():
    link = lesson.read_link({"step": "4", "experts": "pocket_shapes,pocket_digits", "lambda": "0.5",
                             "forget": "pocket_shapes", "strength": "1.5"}, POCKET)
    assert (link.step, link.experts, link.lam, link.forget, link.strength) == (
        "forget", ["pocket_digits", "pocket_shapes"], 0.5, "pocket_shapes", 1.5)
    assert not link.problems and lesson.problems_note(link) == ""
    url = lesson.link_for("http://host/?x=1", "forget", link.experts, 0.5, "pocket_shapes", 1.5)
    assert url == ("http://host/?step=4&experts=pocket_digits,pocket_shapes&lambda=0.5&forget=pocket_shapes"
                   "&strength=1.5")
    from urllib.parse import parse_qsl, urlparse

    again = lesson.read_link(dict(parse_qsl(urlparse(url).query)), POCKET)
    assert again == link  # the round trip


def test_the_link_a_student_copies_opens_their_step_with_their_settings():
    from urllib.parse import parse_qsl, urlparse

    url = lesson.share_link("https://space.example/?step=1", "forget", POCKET, ["pocket_shapes", "pocket_digits"],
                            0.45, "pocket_shapes", 1.5)
    assert url.startswith("https://space.example/?step=4&")
    link = lesson.read_link(dict(parse_qsl(urlparse(url).query)), POCKET)
    assert (link.step, link.experts, link.lam, link.forget, link.strength, link.problems) == (
        "forget", ["pocket_digits", "pocket_shapes"], 0.45, "pocket_shapes", 1.5, [])
    # values the lesson cannot use are left out (the link opens with the defaults), never passed on
    url = lesson.share_link(None, "nowhere", POCKET, ["pocket_digits", "<b>x</b>"], "abc", "/etc/passwd", 9.0)
    assert url == "?step=1"
    assert lesson.share_link("", "add", POCKET, list(POCKET), 0.3) == "?step=2&lambda=0.3"  # every expert: no list


@pytest.mark.parametrize("query", [{"step": "99"}, {"experts": "pocket_digits"}, {"experts": "x,y"},
                                   {"lambda": "abc"}, {"lambda": "nan"}, {"lambda": "7"}, {"forget": "/etc/passwd"},
                                   {"strength": "-1"}])
def test_a_link_with_bad_values_opens_with_defaults_and_one_message(query):
    link = lesson.read_link(query, POCKET)
    assert (link.step, link.experts, link.lam, link.forget, link.strength) == (
        "meet", [], lesson.DEFAULT_LAMBDA, None, lesson.DEFAULT_FORGET)
    assert len(link.problems) == 1 and lesson.problems_note(link).startswith("This link had values")


def test_every_lesson_step_is_an_endpoint(tmp_path):
    """Through gradio_client, the tiny zoo: each step's endpoint answers, and a bad value is refused by name."""
    config = tiny_config(write_examples(tmp_path / "examples"))
    with launched(config) as (_, client):
        client.predict(chosen=["task0", "task1"], api_name="/lesson_meet")
        *_, note = client.predict(lam_value=0.5, api_name="/lesson_add")
        assert "Average at lambda 0.5" in note
        client.predict(keep_percent=20, api_name="/lesson_interfere")
        _, note = client.predict(task="task1", amount=1.0, api_name="/lesson_forget")
        assert "task1" in note
        status, *_ = client.predict(api_name="/lesson_route")
        assert status.startswith("Adapted WEMoE (routed)")
        with pytest.raises(Exception, match="Adaptation steps"):
            client.predict(steps=0, api_name="/lesson_route")  # the slider's range, checked before any work
        status, *_ = client.predict(steps=2, api_name="/lesson_route")
        assert "2 steps" in status
        client.predict(api_name="/lesson_cost")
        link = client.predict(chosen=["task0", "task1"], lam_value=0.5, task="task1", amount=1.0,
                              api_name="/lesson_link")
        assert link.startswith("?step=7")  # the step this tab ran last (the client sends no page address)
        with pytest.raises(Exception, match="Lambda: enter a number from 0 to 1"):
            client.predict(lam_value="x", api_name="/lesson_add")


def test_step_5_names_every_task_and_expert_with_twenty():
    """#33 item 4: with twenty experts plotly labelled every third task of step 5's heatmap; every name now, and a
    row's worth taller per task beyond lesson.MANY_EXPERTS (as step 1's table)."""
    tasks = [f"pocket_task{i}" for i in range(20)]
    weights = [[0.3 + 0.01 * (i == j) for j in range(20)] for i in range(20)]
    figure = lesson.routing_by_task_figure(weights, tasks, tasks)
    names = [lesson.plain(t) for t in tasks]
    assert list(figure.layout.yaxis.tickvals) == names and list(figure.layout.xaxis.tickvals) == names
    assert figure.layout.height == lesson.LESSON_PLOT_HEIGHT + 16 * (20 - lesson.MANY_EXPERTS)
    assert figure.data[0].texttemplate == ""  # 400 cells: no numbers written in them
    few = lesson.routing_by_task_figure([row[:3] for row in weights[:3]], tasks[:3], tasks[:3])
    assert few.layout.height == lesson.LESSON_PLOT_HEIGHT and few.data[0].texttemplate == "%{text}"
    assert few.data[0].zmid == 0 and few.data[0].zmax == -few.data[0].zmin == pytest.approx(0.31)


def test_step_5_reads_on_a_phone_with_twenty_experts():
    """On a phone (390 px, a plot ~320 px wide) step 5's title was cut after 'weight of eac' and the twenty expert
    names ran into each other: the title is two lines of at most 34 characters, the colour bar lies across the top
    (a bar beside the columns took ~80 px of their width), and the names are in type small enough for 13 px
    columns."""
    tasks = zoo_task_names("pocket-20") or [f"pocket_task{i}" for i in range(20)]
    weights = [[0.1 * ((i + j) % 5) - 0.2 for j in range(len(tasks))] for i in range(len(tasks))]
    figure = lesson.routing_by_task_figure(weights, tasks, tasks)
    lines = figure.layout.title.text.split("<br>")
    assert len(lines) == 2 and max(len(line) for line in lines) <= 34, lines
    assert figure.data[0].colorbar.orientation == "h"
    assert figure.layout.xaxis.tickfont.size <= 10 and figure.layout.yaxis.tickfont.size <= 10
    assert figure.layout.margin.t >= 100  # the title's two lines and the colour bar above the cells
    assert list(figure.layout.xaxis.tickvals) == [lesson.plain(t) for t in tasks]  # still every expert named


def test_plain_words_replace_whole_names_only():
    """A task whose name holds a model's code name (``cities`` holds ``ties``) keeps it; whole names change."""
    from app.lesson import in_plain_words

    text = "ties beat task_arithmetic on pocket_digits; cities stayed cities, wemoe_oracle too."
    assert in_plain_words(text, ["pocket_digits", "cities"]) == (
        "TIES beat task arithmetic on digits; cities stayed cities, oracle too.")
    assert in_plain_words("WEMoE: 3 steps", []) == "WEMoE: 3 steps"
