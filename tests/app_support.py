"""Shared by the app tests: an AppConfig whose default zoo is a tiny random one (built in a blink), with examples."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@contextlib.contextmanager
def launched(config: AppConfig, **launch: Any) -> Iterator[tuple[Any, Any]]:
    """The app built from ``config``, launched on 127.0.0.1 with its queue, and a ``gradio_client`` on it; closed
    after the block."""
    from gradio_client import Client

    from app import build_demo

    demo = build_demo(config)
    demo.queue()
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", **launch)
    try:
        yield demo, Client(demo.local_url, verbose=False)
    finally:
        demo.close()
