"""Shared by the app tests: an AppConfig whose default zoo is a tiny random one (built in a blink), with examples; the
routers' weights of a merge; the app served, with a ``gradio_client`` on it or in a real browser."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.session import AppConfig
from tests.helpers import tiny_task, tiny_zoo

TINY = "tiny"


def tiny_loader(n_experts: int = 3, seed: int = 0):
    """A zoo loader (as in AppConfig.zoos) giving a tiny 3-layer zoo and its tiny tasks."""

    def load(progress):
        progress(0.5, "building the tiny zoo")
        zoo = tiny_zoo(n_experts=n_experts, seed=seed, layers=3)
        return zoo, [tiny_task(name, n_classes=3, n_images=12, seed=i) for i, name in enumerate(zoo.task_names)]

    return load


def write_examples(root: Path, tasks=("task0", "task1", "task2")) -> Path:
    """Two example PNGs per task under ``root/<task>/``."""
    from tests.helpers import tiny_images

    for t, task in enumerate(tasks):
        (root / task).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(tiny_images(2, seed=10 + t)):
            image.save(root / task / f"example{i}.png")
    return root


def tiny_config(examples: Path, **overrides) -> AppConfig:
    """An AppConfig with the tiny zoo as default (and only) zoo, plus a second tiny zoo with another seed."""
    settings = {"zoos": {TINY: ("Tiny test zoo", tiny_loader()), "tiny2": ("Another tiny zoo", tiny_loader(seed=5))},
                "default_zoo": TINY, "samples": 0, "default_steps": 3, "examples_dir": examples, "routing_per_task": 6,
                "centroid_per_task": 6}
    settings.update(overrides)
    return AppConfig(**settings)


def router_state(session: Any, name: str = "wemoe") -> dict[str, Any]:
    """A copy of the routers' weights of the merge ``name`` in ``session``."""
    return {k: v.clone() for k, v in session.bench.merges[name].model.state_dict().items() if ".router." in k}


def same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two state dicts hold the same names and equal tensors."""
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@contextlib.contextmanager
def served(config: AppConfig, **launch: Any) -> Iterator[Any]:
    """The app built from ``config``, launched on 127.0.0.1 with its queue; closed after the block."""
    from app import build_demo
    from app.style import launch_style

    demo = build_demo(config)
    demo.queue()
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", **(launch_style() | launch))
    try:
        yield demo
    finally:
        demo.close()


@contextlib.contextmanager
def launched(config: AppConfig, **launch: Any) -> Iterator[tuple[Any, Any]]:
    """The app built from ``config``, launched on 127.0.0.1 with its queue, and a ``gradio_client`` on it; closed
    after the block."""
    from gradio_client import Client

    with served(config, **launch) as demo:
        yield demo, Client(demo.local_url, verbose=False)


# The browser tests: Playwright driving Debian's Chromium; screenshots under BROWSER_ARTIFACTS (default: test-artifacts/
# in the repository).
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS") or Path(__file__).resolve().parents[1] / "test-artifacts")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists() and not IN_CI,
                       reason="/usr/bin/chromium is missing: install it with `apt-get install chromium` to run the "
                              "browser test"),
]


@contextlib.contextmanager
def in_browser(config: AppConfig) -> Iterator[tuple[Any, Any]]:
    """The app served from ``config`` and a headless Chromium (a Playwright ``Browser``) to open it in, with the
    artifacts folder made; both closed after the block."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with served(config) as demo, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            yield demo, browser
        finally:
            browser.close()
