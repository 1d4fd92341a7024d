"""How the app refuses: a user mistake or a failed step becomes a ``gr.Error`` saying what to do, no traceback."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import gradio as gr

from wemoe.errors import WemoeError

log = logging.getLogger(__name__)


def refuse(message: str, title: str = "Error") -> gr.Error:
    """A ``gr.Error`` for a user mistake (or a cancelled job): gradio shows ``message`` and prints no traceback.

    The event wrappers of ``app.events`` log each refusal as one line.
    """
    return gr.Error(message, title=title, print_exception=False)


@contextlib.contextmanager
def friendly(action: str) -> Iterator[None]:
    """Turn any failure inside into a ``gr.Error`` saying what failed and why.

    A user mistake (``gr.Error``, or a ``WemoeError``: bad parameters, unknown names, a diverged adaptation) is
    passed on as a message without a traceback; only unexpected failures log their traceback.
    """
    try:
        yield
    except gr.Error:
        raise
    except WemoeError as error:
        raise refuse(f"{action}: {error}") from None
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        log.exception("%s failed", action)
        reason = str(error).rstrip(". ") or type(error).__name__
        raise refuse(f"{action} failed: {reason}. Nothing was changed; check the input and try again.") from None


def first_line(error: BaseException, width: int = 200) -> str:
    """An error's first line, at most ``width`` characters (a worker's error carries its whole traceback)."""
    text = str(getattr(error, "message", None) or error or type(error).__name__).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:width]
