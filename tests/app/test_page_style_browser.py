"""The page's look in a real browser (Debian chromium), before any zoo is loaded: no navbar on either page, a focus
ring on a checkbox reached by Tab, no thick frame around the lab's plots, plotly's text in the page's colour in dark
mode, a second image in the lesson without the image's small x; screenshots ``style-*.png`` under the artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import AppConfig
from tests.app_support import ARTIFACTS, BROWSER_MARKS, in_browser

pytestmark = BROWSER_MARKS
EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"

# every gradio block holding a plot: its border width and the outline of any choice label holding the focus
PLOT_BORDERS = """() => [...document.querySelectorAll('.block')].filter(b => b.querySelector('.js-plotly-plot'))
    .map(b => parseFloat(getComputedStyle(b).borderTopWidth))"""
FOCUSED_CHOICE = """() => { const label = document.activeElement.closest('label'); const s = getComputedStyle(label);
    return [document.activeElement.type, s.outlineStyle, parseFloat(s.outlineWidth)]; }"""
# plotly's own text on the lab's placeholder figures, and the page's text colour
PLOT_TEXT = """() => [getComputedStyle(document.querySelector('.js-plotly-plot .annotation-text')).fill,
    getComputedStyle(document.querySelector('.prose, .md') || document.body).color]"""


def _luminance(css: str) -> float:
    red, green, blue = (float(v) / 255 for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def test_the_page_has_no_navbar_rings_the_focus_and_frames_no_plot():
    from playwright.sync_api import expect

    with in_browser(AppConfig(samples=48, default_steps=5)) as (demo, browser):
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        for path in ("", "teacher"):  # one route more than the lesson made gradio draw a 'Home' link on both
            page.goto(demo.local_url.rstrip("/") + "/" + path)
            page.locator("#teacher-code" if path else "#lesson-meet").wait_for()
            page.wait_for_timeout(500)
            assert page.get_by_role("link", name="Home").count() == 0 and page.locator(".nav-holder").count() == 0
        page.goto(demo.local_url)
        page.locator("#lesson-meet").focus()
        for _ in range(3):  # past the button, onto the experts' checkboxes
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement.type") == "checkbox":
                break
        kind, style, width = page.evaluate(FOCUSED_CHOICE)
        assert kind == "checkbox" and style == "solid" and width >= 2
        page.screenshot(path=str(ARTIFACTS / "style-1-focus-1280.png"))
        page.get_by_role("tab", name="Lab").click()
        page.locator("#heatmap .js-plotly-plot").wait_for()
        borders = page.evaluate(PLOT_BORDERS)
        assert len(borders) >= 3 and max(borders) <= 1, borders  # was 3 px in the text colour inside a group
        page.locator("#panel-try").first.screenshot(path=str(ARTIFACTS / "style-2-lab-plots-1280.png"))
        page.evaluate("() => document.body.classList.add('dark')")  # what ?__theme=dark does
        page.wait_for_timeout(300)
        text, body = page.evaluate(PLOT_TEXT)
        assert _luminance(text) > 0.5 and abs(_luminance(text) - _luminance(body)) < 0.1, (text, body)
        page.locator("#panel-try").first.screenshot(path=str(ARTIFACTS / "style-3-lab-dark-1280.png"))

        lesson = browser.new_page(viewport={"width": 390, "height": 844})
        lesson.goto(demo.local_url + "?step=6")
        first, second = sorted(EXAMPLES.glob("*/*.png"))[:2]
        lesson.locator("#lesson-image input[type=file]").set_input_files(str(first))
        expect(lesson.locator("#lesson-image img")).to_be_visible(timeout=30_000)
        shown = lesson.locator("#lesson-image img").first.get_attribute("src")
        with lesson.expect_file_chooser() as chooser:  # the second image: one button, no small x to find
            lesson.locator("#lesson-another").click()
        chooser.value.set_files(str(second))
        expect(lesson.locator("#lesson-image img").first).not_to_have_attribute("src", shown or "", timeout=30_000)
        assert second.name in (lesson.locator("#lesson-image img").first.get_attribute("src") or "")
        lesson.screenshot(path=str(ARTIFACTS / "style-4-second-image-390.png"))


# the predictions table at 390 px: the table's width, its box's, and the page's (the page must not scroll sideways)
TABLE_WIDTHS = """(id) => { const wrap = document.querySelector('#' + id + ' .table-wrap');
    return [wrap.querySelector('table').scrollWidth, wrap.clientWidth, document.documentElement.scrollWidth]; }"""


@pytest.mark.parametrize("table_id", ["predictions", "lesson-try-answers"])
def test_the_predictions_of_an_image_without_a_task_fit_a_phone(table_id):
    """The joint head's long labels ("flags: the Netherlands (78.9%)") made the compact predictions (the merge and
    pretrained) a 528 px table in a 322 px box on a phone: their labels now wrap and both columns fit; every model's
    columns scroll inside the table's box, never the page. The same for the lesson's answers (step 6)."""
    import gradio as gr
    import pandas as pd
    from playwright.sync_api import sync_playwright

    from app.style import launch_style
    from tests.app_support import CHROMIUM

    compact = pd.DataFrame({
        "wemoe": ["flags: the Netherlands (78.9%)", "clothing: trousers (11.0%)", "charts: venn diagram (5.4%)",
                  "letters: Z (0.3%)", "sketches: lighthouse (0.1%)"],
        "pretrained": ["flags: Ireland (78.9%)", "flags: Belgium (11.0%)", "flags: Italy (5.4%)",
                       "clothing: trousers (4.1%)", "letters: Z (0.3%)"]})
    every = pd.concat([pd.DataFrame({"rank": range(1, 6)}), compact, compact.set_axis(["task_arithmetic", "ties"],
                                                                                       axis=1)], axis=1)
    with gr.Blocks() as demo:
        table = gr.Dataframe(compact, label="Top-5 predictions", interactive=False, wrap=True, elem_id=table_id)
        show_every = gr.Button("every model", elem_id="every")
        show_every.click(lambda: every, None, table)
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", **launch_style())
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.goto(demo.local_url)
            page.locator(f"#{table_id} table").first.wait_for()
            page.wait_for_timeout(500)
            table_width, box_width, page_width = page.evaluate(TABLE_WIDTHS, table_id)
            assert table_width <= box_width + 1 and page_width == 390, (table_width, box_width, page_width)
            page.screenshot(path=str(ARTIFACTS / f"style-5-{table_id}-390.png"))
            if table_id != "predictions":  # every model is the lab's
                return
            page.locator("#every").click()
            page.get_by_text("task_arithmetic").first.wait_for()
            page.wait_for_timeout(500)
            table_width, box_width, page_width = page.evaluate(TABLE_WIDTHS, table_id)
            assert table_width > box_width and page_width == 390, (table_width, box_width, page_width)
            browser.close()
    finally:
        demo.close()
