"""Make the README screenshot: the app on a pocket zoo, merged and adapted, with an example image classified.

    python -m app.make_screenshot [--zoo assets/pocket] [--examples assets/examples] [--steps 100]
        [--example pocket_shapes] [--out assets/screenshot.png]

Needs Debian's chromium (``apt-get install chromium``) and python playwright. Also writes the routing-per-patch
analysis view of the same image (``*-analysis.png``), and full-page and per-panel screenshots next to ``--out``
(``*-full.png``, ``*-merge.png``, ``*-accuracy.png``) unless ``--only-main``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import wemoe  # noqa: F401  (before open_clip)
from app import build_demo
from app.session import EXAMPLES_DIR, ROOT, AppConfig, pocket_label
from app.style import launch_style

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def main() -> None:
    """Drive the app in Chromium and save the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", default=None, help="pocket zoo folder (default: the shipped assets/pocket)")
    parser.add_argument("--examples", type=Path, default=EXAMPLES_DIR)
    parser.add_argument("--steps", default="100", help="adaptation steps")
    parser.add_argument("--example", default="pocket_shapes",
                        help="classify the first example whose path contains this")
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "screenshot.png")
    parser.add_argument("--only-main", action="store_true")
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    def loader(progress):
        from wemoe.pocket import load_pocket_zoo

        return (load_pocket_zoo(args.zoo, progress=progress) if args.zoo else load_pocket_zoo(progress=progress)), None

    config = AppConfig(zoos={"pocket": (pocket_label(args.zoo), loader)}, examples_dir=args.examples)
    demo = build_demo(config)
    demo.queue()
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_style())
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(demo.local_url)
            page.get_by_role("tab", name="Lab").click()  # the lesson is the first tab; the full panels are the lab
            page.locator("#load-zoo").click()
            expect(page.locator("#zoo-info")).to_contain_text("Loaded:", timeout=300_000)
            steps = page.get_by_label("number input for Adaptation steps")
            steps.fill(args.steps)
            steps.press("Enter")
            page.locator("#merge").click()
            expect(page.locator("#merge-status")).to_contain_text("Adapted wemoe", timeout=900_000)
            examples = sorted(Path(args.examples).glob("*/*.png"))
            example = next((f for f in examples if args.example in str(f)), examples[0])
            page.locator("#upload input[type=file]").set_input_files(str(example))
            expect(page.locator("#guess")).to_contain_text("guess", timeout=120_000)
            page.wait_for_timeout(1500)
            page.locator("#panel-try").first.screenshot(path=str(args.out))
            stem = args.out.with_suffix("")
            # the analysis view the README shows: where in this image the adapted routers look
            page.locator("#panel-analysis").get_by_role("tab", name="Routing per patch", exact=True).click()
            page.locator("#panel-analysis input[type=file]").first.set_input_files(str(example))
            page.wait_for_timeout(1000)
            page.locator("#run-routing_patches").click()
            expect(page.locator("#view-routing_patches .js-plotly-plot")).to_be_visible(timeout=120_000)
            page.wait_for_timeout(1500)
            page.locator("#panel-analysis").first.screenshot(path=f"{stem}-analysis.png")
            if not args.only_main:
                page.locator("#evaluate").click()
                expect(page.locator("#panel-accuracy").first).to_contain_text("Test images per task", timeout=300_000)
                page.wait_for_timeout(1500)
                page.locator("#panel-merge").first.screenshot(path=f"{stem}-merge.png")
                page.locator("#panel-accuracy").first.screenshot(path=f"{stem}-accuracy.png")
                page.screenshot(path=f"{stem}-full.png", full_page=True)
            browser.close()
    finally:
        demo.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
