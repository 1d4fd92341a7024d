"""A faithful ZeroGPU stand-in for tests: a fake ``spaces`` module whose ``GPU`` decorator runs the function in a
forked child process and passes its result (and every yielded value) back through a pipe.

As on a ZeroGPU Space, whatever the function changes in place (a session's routers, a table written into the
session) stays in the child and is lost; only what it returns or yields comes back. ``duration`` (seconds, or a
callable on the call's arguments) is enforced: a call still running after it is killed and raises, like a ZeroGPU call
that runs out of its time. Install it with ``install(monkeypatch)``; ``calls`` records each call's duration.
"""

from __future__ import annotations

import functools
import inspect
import multiprocessing
import pickle
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any

calls: list[float] = []


class GPUTaskAborted(RuntimeError):
    """The stand-in's version of ZeroGPU's error when a call outlives its duration."""


def _child(conn, fn: Callable, args: tuple, kwargs: dict) -> None:
    import torch

    # the parent's OpenMP thread pool does not survive a fork: a parallel region in the child would wait on it forever
    torch.set_num_threads(1)
    try:
        result = fn(*args, **kwargs)
        if inspect.isgenerator(result):
            for item in result:
                conn.send_bytes(pickle.dumps(("yield", item)))
            result = None
        conn.send_bytes(pickle.dumps(("return", result)))
    except BaseException as error:  # noqa: BLE001 - everything goes back to the caller
        conn.send_bytes(pickle.dumps(("error", (type(error).__name__, str(error), traceback.format_exc()))))
    finally:
        conn.close()


def _results(fn: Callable, duration: float, args: tuple, kwargs: dict):
    parent, child = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("fork").Process(target=_child, args=(child, fn, args, kwargs), daemon=True)
    process.start()
    child.close()
    try:
        while True:
            if not parent.poll(duration):
                raise GPUTaskAborted(f"GPU task aborted: it ran past its duration of {duration:.0f} s.")
            kind, value = pickle.loads(parent.recv_bytes())
            if kind == "yield":
                yield value
            elif kind == "return":
                return value
            else:
                name, message, trace = value
                raise RuntimeError(f"{name} in the GPU worker: {message}\n{trace}")
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        parent.close()


def GPU(fn: Callable | None = None, *, duration: float | Callable[..., float] = 60):  # noqa: N802 - spaces' own name
    """``@GPU`` or ``@GPU(duration=...)``: run the function in a forked child, as ZeroGPU does."""

    def decorate(func: Callable) -> Callable:
        def seconds(args: tuple, kwargs: dict) -> float:
            return float(duration(*args, **kwargs) if callable(duration) else duration)

        if inspect.isgeneratorfunction(func):
            @functools.wraps(func)
            def generator_wrapper(*args: Any, **kwargs: Any):
                calls.append(seconds(args, kwargs))
                yield from _results(func, calls[-1], args, kwargs)

            return generator_wrapper

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any):
            calls.append(seconds(args, kwargs))
            results = _results(func, calls[-1], args, kwargs)
            try:
                while True:
                    next(results)
            except StopIteration as stop:
                return stop.value

        return wrapper

    return decorate(fn) if fn is not None else decorate


def install(monkeypatch) -> types.ModuleType:
    """Make ``import spaces`` give this stand-in and mark the process as a ZeroGPU Space."""
    module = sys.modules[__name__]
    monkeypatch.setitem(sys.modules, "spaces", module)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    calls.clear()
    return module
