"""The lesson walked in a real browser (Debian chromium) at desktop and phone widths: every step's main control and
its result shown, at 1280x800 both on one screen; screenshots ``lesson-<step>-<width>.png`` under the artifacts."""

from __future__ import annotations

import pytest

from app import AppConfig
from tests.app_support import ARTIFACTS, BROWSER_MARKS, in_browser

pytestmark = BROWSER_MARKS
SIZES = ((1280, 800), (390, 844))
# step: (its main button, the element its result lands in, the text that says it is there)
STEP_RESULTS = (("#lesson-meet", "#lesson-meet-plot", None), ("#lesson-add", "#lesson-add-plot", None),
                ("#lesson-interfere", "#lesson-interfere-plot", None), ("#lesson-forget", "#lesson-forget-plot", None),
                ("#lesson-route", "#lesson-route-note", "on average"), ("#lesson-try", "#lesson-try-answers", "%"),
                ("#lesson-cost", "#lesson-cost-plot", None))


def _in_view(page, selector: str) -> bool:
    box = page.locator(selector).first.bounding_box()
    size = page.viewport_size
    return box is not None and box["y"] >= 0 and box["y"] + min(box["height"], 40) <= size["height"]


def _tabs_to(page, selector: str, limit: int = 40) -> int:
    """Tab presses from the top of a freshly opened page until the keyboard focus is inside ``selector``."""
    page.locator(selector).wait_for()
    for presses in range(1, limit + 1):
        page.keyboard.press("Tab")
        if page.evaluate(f"() => !!document.activeElement.closest({selector!r})"):
            return presses
    return limit + 1


@pytest.mark.parametrize(("width", "height"), SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_the_lesson_from_first_step_to_last(width, height):
    from playwright.sync_api import expect

    clicks = 0
    with in_browser(AppConfig(samples=48, default_steps=5)) as (demo, browser):
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(demo.local_url)
        assert _tabs_to(page, "#lesson-meet") <= 5  # the lesson's first action, from the first screen
        for index, (button, result, text) in enumerate(STEP_RESULTS):
            if index == 5:  # try your own image: pick the first example
                page.locator("#lesson .gallery-item, #lesson button.gallery").first.click()
                clicks += 1
            page.locator(button).click()
            clicks += 1
            shown = page.locator(result).first
            if text is None:
                expect(shown.locator(".js-plotly-plot")).to_be_visible(timeout=120_000)
            else:
                expect(shown).to_contain_text(text, timeout=180_000)
            if width == 1280:  # from the top of the page, as a student sees the step
                page.evaluate("window.scrollTo(0, 0)")
                page.wait_for_timeout(200)
                assert _in_view(page, button) and _in_view(page, result), f"step {index + 1} needs scrolling"
            page.screenshot(path=str(ARTIFACTS / f"lesson-{index + 1}-{width}.png"))
            # nothing wider than the screen, in the page or inside the result (a table scrolled sideways hides columns)
            wide = page.evaluate("""(selector) => {
                const out = [];
                if (document.documentElement.scrollWidth > window.innerWidth + 1) out.push('page');
                for (const el of document.querySelector(selector).querySelectorAll('*')) {
                    if (el.scrollWidth > el.clientWidth + 1 && el.clientWidth > 0
                        && getComputedStyle(el).overflowX !== 'visible') out.push(el.tagName + '.' + el.className);
                }
                return out; }""", result)
            assert not wide, f"step {index + 1} at {width} px is wider than the screen: {wide}"
            if index == 5:
                shown.screenshot(path=str(ARTIFACTS / f"lesson-6-answers-{width}.png"))
            if index + 1 < len(STEP_RESULTS):
                page.locator(f"#lesson-next-{index + 1}").click()
                clicks += 1
    assert clicks <= 40


def test_the_teacher_sees_what_a_student_added(monkeypatch):
    from playwright.sync_api import expect

    from app.teacher import CODE_ENV

    monkeypatch.setenv(CODE_ENV, "owl-42")
    with in_browser(AppConfig(samples=48, default_steps=5)) as (demo, browser):
        student = browser.new_page(viewport={"width": 1280, "height": 800})
        student.goto(demo.local_url + "?step=2")
        student.locator("#lesson-add").click()
        expect(student.locator("#lesson-add-plot .js-plotly-plot")).to_be_visible(timeout=120_000)
        student.locator("#lesson-board-lambda").click()
        teacher = browser.new_page(viewport={"width": 1280, "height": 800})
        teacher.goto(demo.local_url.rstrip("/") + "/teacher")
        teacher.locator("#teacher-code input").fill("owl-42")
        teacher.locator("#teacher-open").click()  # 2 clicks: the code, Open
        expect(teacher.locator("#teacher-status")).to_contain_text("with the lesson open", timeout=60_000)
        expect(teacher.locator("#teacher-board")).to_contain_text("lambda 0.3", timeout=60_000)
        teacher.screenshot(path=str(ARTIFACTS / "teacher-1-board.png"))
