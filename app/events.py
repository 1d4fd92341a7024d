"""How the page's events call the handlers: refusals logged as one line, a job's progress and refusal on its status
text, named API parameters, gallery clicks and raw file values read the same through the page and the API."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

log = logging.getLogger(__name__)


def quiet(fn: Callable) -> Callable:
    """An event function whose refusals (``gr.Error``: user mistakes, cancelled jobs) are logged as one line each
    and reach gradio without a traceback on the console. Generators stay generators (gradio streams them)."""

    def refused(error: gr.Error) -> gr.Error:
        log.warning("%s refused: %s", fn.__name__, error.message)
        return gr.Error(error.message, duration=error.duration, visible=error.visible, title=error.title,
                        print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error as error:
                raise refused(error) from None
        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error as error:
            raise refused(error) from None
    return call


class GalleryClick(gr.EventData):
    """What a gallery's select event says (``index``: the image clicked); ``index`` is None when the event comes
    through the API, which sends no event data (gr.SelectData would fail there)."""

    def __init__(self, target, data) -> None:
        super().__init__(target, data)
        self.index = data.get("index") if isinstance(data, dict) else None


def reported(updates: Iterator[tuple], width: int = 2, status: int = 0, first: str | None = None) -> Iterator[tuple]:
    """A job's updates (tuples of ``width`` outputs, item ``status`` its status text), after ``first`` on the status.

    A refusal after something was shown also goes to the status line (instead of a stale progress text), then on
    to gradio's toast; the other outputs keep their values.
    """

    def only(text: str) -> tuple:
        return tuple(text if i == status else gr.skip() for i in range(width))

    shown = first is not None
    if shown:
        yield only(first)
    try:
        for update in updates:
            shown = True
            yield update
    except gr.Error as error:
        if shown:
            yield only(f"**{error.message}**")
        raise


def with_signature(fn: Callable, names: list[str], leading: list[str]) -> Callable:
    """Give ``fn(*args, progress)`` a signature with one named parameter per input (names shown in the API)."""
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in [*leading, *names]]
    params.append(inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=gr.Progress()))
    fn.__signature__ = inspect.Signature(params)
    return fn


def uploaded(files: Any) -> list[str]:
    """Paths of a gr.File's value without preprocessing: one or more paths or FileData dicts."""
    if isinstance(files, (str, dict)):
        files = [files]
    return [f.get("path") if isinstance(f, dict) else f for f in (files or [])]
