"""A real browser (Playwright driving Debian's Chromium) runs the default merge, adapts a few steps, tries an image.

Screenshots of every step go to ``test-artifacts/``. Under CI=true this test must run; elsewhere it skips when
``/usr/bin/chromium`` is missing (``apt-get install chromium``). It uses the pocket zoo when it is shipped, else
the tiny test zoo.
"""

import os
from pathlib import Path

import pytest

from app import build_demo
from app.session import AppConfig
from tests.app_support import tiny_config, write_examples

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists() and not IN_CI,
                       reason="/usr/bin/chromium is missing: install it with `apt-get install chromium` to run the browser test"),
]


def _config(tmp_path: Path) -> tuple[AppConfig, Path]:
    examples = ROOT / "assets" / "examples"
    if (ROOT / "assets" / "pocket" / "manifest.json").is_file() and any(examples.glob("*/*.png")):
        return AppConfig(samples=32, default_steps=5), min(examples.glob("*/*.png"))
    config = tiny_config(write_examples(tmp_path / "examples"))
    return config, config.examples_dir / "task0" / "example0.png"


def test_default_merge_adapt_and_try_an_image(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.exists(), "CI must install chromium (.ci/run does): the browser test may not skip there"
    config, example = _config(tmp_path)
    ARTIFACTS.mkdir(exist_ok=True)
    demo = build_demo(config)
    demo.queue()
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(demo.local_url)
            page.locator("#load-zoo").click()
            expect(page.locator("#zoo-info")).to_contain_text("Loaded:", timeout=120_000)
            page.screenshot(path=str(ARTIFACTS / "browser-1-loaded.png"), full_page=True)

            steps = page.get_by_label("number input for Adaptation steps")
            steps.fill("3")
            steps.press("Enter")
            page.locator("#merge").click()
            expect(page.locator("#merge-status")).to_contain_text("Adapted wemoe: 3 steps", timeout=120_000)
            page.screenshot(path=str(ARTIFACTS / "browser-2-merged-adapted.png"), full_page=True)

            page.locator("#upload input[type=file]").set_input_files(str(example))
            expect(page.locator("#predictions")).to_contain_text("%", timeout=60_000)
            expect(page.locator("#guess")).to_contain_text("routers think this image is from", timeout=60_000)
            heatmap = page.locator("#heatmap .js-plotly-plot")
            expect(heatmap).to_be_visible(timeout=60_000)
            expect(page.locator("#heatmap")).to_contain_text("block 0")
            page.locator("#predictions").scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "browser-3-prediction.png"), full_page=True)
            browser.close()
    finally:
        demo.close()
