"""A real browser (Playwright driving Debian's Chromium) runs the default merge, adapts a few steps, tries an image
(and a corruption of it), evaluates, draws every analysis view, and checks the page at a desktop width (1280 px), a
phone width (390 px) and in dark mode.

Screenshots go to the folder named by ``BROWSER_ARTIFACTS`` (default ``test-artifacts/``); their paths are printed
(``pytest -s`` shows them). Under CI=true this test must run; elsewhere it skips when ``/usr/bin/chromium`` is
missing (``apt-get install chromium``). It uses the pocket zoo when it is shipped, else the tiny test zoo.
"""

from pathlib import Path

from app.session import AppConfig
from tests.app_support import ARTIFACTS, BROWSER_MARKS, CHROMIUM, in_browser, tiny_config, write_examples
from wemoe.zoo_tasks import zoo_task_names

ROOT = Path(__file__).resolve().parents[2]
DESKTOP, PHONE = 1280, 390

pytestmark = BROWSER_MARKS


def _config(tmp_path: Path) -> tuple[AppConfig, Path]:
    examples = ROOT / "assets" / "examples"
    # the gallery holds pocket-20's tasks too: the first example of one of the pocket zoo's own tasks
    pocket = [path for task in zoo_task_names("pocket") for path in examples.glob(f"{task}/*.png")]
    if (ROOT / "assets" / "pocket" / "manifest.json").is_file() and pocket:
        return AppConfig(samples=32, default_steps=5), min(pocket)
    config = tiny_config(write_examples(tmp_path / "examples"))
    return config, config.examples_dir / "task0" / "example0.png"


def _shot(page, name: str, selector: str | None = None) -> Path:
    """Screenshot of the element ``selector`` (the whole page when None) under ARTIFACTS; prints the path."""
    path = ARTIFACTS / name
    page.wait_for_timeout(300)  # let plotly and the table settle after a resize
    if selector is None:
        page.screenshot(path=str(path), full_page=True)
    else:
        page.locator(selector).first.scroll_into_view_if_needed()
        page.locator(selector).first.screenshot(path=str(path))
    print(f"browser screenshot: {path}")
    return path


def _box(page, selector: str) -> dict:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not on the page"
    return box


def _overlaps(a: dict, b: dict) -> bool:
    """Whether two boxes share area (touching edges do not count)."""
    horizontal = a["x"] < b["x"] + b["width"] - 1 and b["x"] < a["x"] + a["width"] - 1
    vertical = a["y"] < b["y"] + b["height"] - 1 and b["y"] < a["y"] + a["height"] - 1
    return horizontal and vertical


def _check_average_visible(page) -> None:
    """The accuracy table's 'average' header lies inside the table's visible (unscrolled) area."""
    header = page.locator("#accuracy th").filter(has_text="average").first
    header.wait_for(timeout=10_000)
    cell, table = header.bounding_box(), _box(page, "#accuracy")
    assert cell is not None and cell["width"] > 10, cell
    assert table["x"] - 1 <= cell["x"] and cell["x"] + cell["width"] <= table["x"] + table["width"] + 1, (cell, table)


def _luminance(css: str) -> float:
    parts = [float(v) for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3]]
    linear = [(c / 255) / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in parts]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _check_best_cell_readable(page) -> None:
    """The highlighted best-merge cell's text contrasts with its background (WCAG ratio at least 4.5)."""
    colours = page.evaluate("""() => {
        const marked = document.querySelector('#accuracy [style*="font-weight: bold"]');  // the best merge's cell
        if (!marked) return null;
        const layers = [];  // a translucent cell background over the page's: blend them
        let el = marked;
        while (el) {
            const c = getComputedStyle(el).backgroundColor;
            if (c !== 'rgba(0, 0, 0, 0)') layers.push(c);
            el = el.parentElement;
        }
        return {text: getComputedStyle(marked).color, layers: layers};
    }""")
    assert colours is not None, "no cell of the accuracy table is marked"
    rgb = [255.0, 255.0, 255.0]  # under everything: the browser's white canvas
    for layer in reversed(colours["layers"]):  # paint from the page up to the cell
        values = [float(v) for v in layer[layer.index("(") + 1 : layer.index(")")].split(",")]
        alpha = values[3] if len(values) > 3 else 1.0
        rgb = [alpha * v + (1 - alpha) * r for v, r in zip(values[:3], rgb, strict=True)]
    background = _luminance(f"rgb({rgb[0]}, {rgb[1]}, {rgb[2]})")
    text = _luminance(colours["text"])
    ratio = (max(text, background) + 0.05) / (min(text, background) + 0.05)
    assert ratio >= 4.5, (colours, ratio)


ANALYSIS_VIEWS = (("Routing per patch", "routing_patches"), ("Interference", "interference"),
                  ("Cross-accuracy", "cross_accuracy"), ("Lambda sweep", "lambda_sweep"), ("Robustness", "robustness"),
                  ("Cost", "cost"))


def _check_analysis_views(page) -> None:
    """Each view of "7. Analysis" (#20) draws its figure in the page; a screenshot of each."""
    from playwright.sync_api import expect

    for number, (tab, view) in enumerate(ANALYSIS_VIEWS, start=1):
        page.locator("#panel-analysis").get_by_role("tab", name=tab, exact=True).click()
        page.locator(f"#run-{view}").click()
        plot = page.locator(f"#view-{view} .js-plotly-plot")
        expect(plot).to_be_visible(timeout=60_000)
        expect(page.locator(f"#view-{view} .main-svg").first).to_be_visible()
        assert page.locator(f"#view-{view} .trace, #view-{view} .hm, #view-{view} image").count() > 0, view
        _shot(page, f"browser-analysis-{number}-{view}.png", f"#view-{view}")
        if view == "lambda_sweep":
            _check_task_sliders(page)


def _check_task_sliders(page) -> None:
    """One lambda per task: the sliders appear for the zoo's tasks, the bars are drawn, and dragging a slider to 0
    re-scores (the bars change)."""
    from playwright.sync_api import expect

    page.locator("#run-task_lambdas").click()
    plot = page.locator("#view-per_task_lambdas .js-plotly-plot")
    expect(plot).to_be_visible(timeout=60_000)
    first = page.locator("#panel-analysis input[type=range]").filter(visible=True).first
    expect(first).to_be_visible()
    page.wait_for_timeout(500)
    before = page.locator("#view-per_task_lambdas .bars text, #view-per_task_lambdas .bartext").all_inner_texts()
    box = first.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 3 + 1, box["y"] + box["height"] / 2)  # about lambda 0: press, release
    expect(page.locator("#view-per_task_lambdas .bartext").first).to_be_visible(timeout=30_000)
    page.wait_for_function("""([selector, before]) => {
        const texts = [...document.querySelectorAll(selector)].map(e => e.textContent);
        return texts.length > 0 && texts.join('|') !== before.join('|');
    }""", arg=["#view-per_task_lambdas .bartext", before], timeout=30_000)
    _shot(page, "browser-analysis-4b-per_task_lambdas.png", "#panel-analysis")


def _check_corruption(page) -> None:
    """Choosing a corruption in "Try images" reclassifies the image shown, corrupted (the preview changes)."""
    from playwright.sync_api import expect

    before = page.locator("#preview img").first.get_attribute("src")
    box = page.locator("#try-corruption input").first
    box.click()
    page.get_by_role("option", name="pixelate", exact=True).click()
    expect(page.locator("#preview img").first).not_to_have_attribute("src", before or "", timeout=30_000)
    _shot(page, f"browser-3b-try-pixelate-{DESKTOP}.png", "#panel-try")


def test_default_merge_adapt_try_an_image_and_evaluate(tmp_path):
    from playwright.sync_api import expect

    assert CHROMIUM.exists(), "CI must install chromium (.ci/run does): the browser test may not skip there"
    config, example = _config(tmp_path)
    with in_browser(config) as (demo, browser):
        page = browser.new_page(viewport={"width": DESKTOP, "height": 900})
        page.goto(demo.local_url)
        page.get_by_role("tab", name="Lab").click()  # the lesson is the first tab; the full panels are the lab
        page.locator("#load-zoo").click()
        expect(page.locator("#zoo-info")).to_contain_text("Loaded:", timeout=120_000)
        _shot(page, "browser-1-loaded.png")

        steps = page.get_by_label("number input for Adaptation steps")
        steps.fill("3")
        steps.press("Enter")
        page.locator("#merge").click()
        expect(page.locator("#merge-status")).to_contain_text("Adapted wemoe: 3 steps", timeout=120_000)
        _shot(page, "browser-2-merged-adapted.png", "#panel-merge")

        page.locator("#upload input[type=file]").set_input_files(str(example))
        expect(page.locator("#predictions")).to_contain_text("%", timeout=60_000)
        expect(page.locator("#guess")).to_contain_text("guess", timeout=60_000)
        expect(page.locator("#heatmap .js-plotly-plot")).to_be_visible(timeout=60_000)
        expect(page.locator("#heatmap")).to_contain_text("block 0")
        _shot(page, f"browser-3-try-{DESKTOP}.png", "#panel-try")
        _check_corruption(page)

        page.locator("#evaluate").click()
        expect(page.locator("#panel-accuracy").first).to_contain_text("Test images per task", timeout=120_000)
        _shot(page, f"browser-4-accuracy-{DESKTOP}.png", "#panel-accuracy")
        _check_average_visible(page)
        _check_best_cell_readable(page)
        page.locator("#normalized input").check()  # each task as % of its expert: the experts' row reads 100.0
        expect(page.locator("#panel-accuracy").first).to_contain_text("Normalized accuracy", timeout=30_000)
        expect(page.locator("#accuracy")).to_contain_text("100.0")
        _shot(page, f"browser-4b-accuracy-normalized-{DESKTOP}.png", "#panel-accuracy")
        page.locator("#normalized input").uncheck()
        expect(page.locator("#panel-accuracy").first).not_to_contain_text("Normalized accuracy", timeout=30_000)

        _check_analysis_views(page)

        dark = browser.new_page(viewport={"width": 400, "height": 300})
        dark.goto(demo.local_url + "?__theme=dark")  # what ?__theme=dark does: gradio puts class 'dark' on <body>
        expect(dark.locator("body")).to_have_class("dark", timeout=30_000)
        dark.close()
        page.evaluate("() => document.body.classList.add('dark')")  # the same on the page with the results
        _shot(page, f"browser-5-try-{DESKTOP}-dark.png", "#panel-try")
        _shot(page, f"browser-6-accuracy-{DESKTOP}-dark.png", "#panel-accuracy")
        _check_best_cell_readable(page)
        page.evaluate("() => document.body.classList.remove('dark')")

        page.set_viewport_size({"width": PHONE, "height": 844})
        page.wait_for_timeout(1500)
        _shot(page, f"browser-7-try-{PHONE}.png", "#panel-try")
        _shot(page, f"browser-8-accuracy-{PHONE}.png", "#panel-accuracy")
        columns = [_box(page, s) for s in ("#try-inputs", "#try-sketch", "#try-result")]
        for i, a in enumerate(columns):
            assert a["x"] >= -1 and a["x"] + a["width"] <= PHONE + 1, f"column {i} of the try panel is cut off: {a}"
            for j, b in enumerate(columns[i + 1 :], start=i + 1):
                assert not _overlaps(a, b), f"try-panel columns {i} and {j} overlap at {PHONE} px: {a} {b}"
        predictions = _box(page, "#predictions")
        assert predictions["x"] + predictions["width"] <= PHONE + 1, predictions
        last = page.locator("#predictions th").last.bounding_box()
        assert last is not None and last["x"] + last["width"] <= predictions["x"] + predictions["width"] + 1, (
            f"the predictions table is wider than the phone screen: last column {last}, table {predictions}")
