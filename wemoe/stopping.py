"""Stopping a long computation between its steps: a stop check set for the calling thread's context.

A caller that can be cancelled (the app's Cancel, a script's timeout) runs the work inside :func:`stopping` with a
check (``threading.Event().is_set``, say); code with loops (a method's Adam steps, a merge's matrices, a wait for
another session's result) calls :func:`check_stop` between steps, which raises :class:`Stopped` once the check is
true. Nothing is half-applied: the caller gets the exception instead of a result. Without :func:`stopping`,
:func:`check_stop` does nothing, so library calls from scripts run to the end as before.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

from wemoe.errors import WemoeError

_STOP: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar("wemoe_stop", default=None)


class Stopped(WemoeError):
    """The computation was stopped between two of its steps (nothing was kept)."""


@contextlib.contextmanager
def stopping(check: Callable[[], bool] | None) -> Iterator[None]:
    """Within the block, :func:`check_stop` raises :class:`Stopped` once ``check()`` is true (None: never)."""
    token = _STOP.set(check)
    try:
        yield
    finally:
        _STOP.reset(token)


def check_stop() -> None:
    """Raise :class:`Stopped` if the current context's stop check (:func:`stopping`) says so; else nothing."""
    check = _STOP.get()
    if check is not None and check():
        raise Stopped("stopped before the end: nothing was kept.")
