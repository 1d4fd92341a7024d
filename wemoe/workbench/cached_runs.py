"""Adaptation runs shared through a result cache: each run with the same inputs is computed once per process.

:meth:`wemoe.workbench.workbench.Workbench.adapt` delegates here. A run's key (:func:`run_key`) is the merge's key and
its settings; the first workbench to claim it computes the run (:func:`recorded_run`) and leaves its trainable tensors
and records in the cache (:class:`AdaptedState`); one that asks while it runs waits for it (:func:`adapt_once`,
yielding :class:`Waiting` items if asked to; :func:`watch_run` only watches); one that asks later loads the state and
replays the records at once (``from_cache``). A run stopped early or diverged is not cached.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from wemoe.adaptation.adapt import AdaptStep, ChunkRunner, adapt, adapt_in_chunks
from wemoe.moe.layer import release_workspaces
from wemoe.tasks.images import TaskImages
from wemoe.workbench.result_cache import ResultCache
from wemoe.workbench.result_codecs import register_result_type

ADAPT_RUN = ("steps", "lr", "per_task", "loss", "seed", "split")


class AdaptedMerge(Protocol):
    """What a run adapts and records into (a :class:`wemoe.workbench.workbench.MergeResult`)."""

    model: nn.Module
    history: list[AdaptStep]
    adapt_steps: int
    adapt_seconds: float
    key: Hashable | None
    from_cache: bool


@dataclass(frozen=True)
class Waiting:
    """What :meth:`Workbench.adapt` yields (with ``report_waiting``) while another workbench computes the same run."""

    progress: str
    counts_as_step = False  # for loops that count steps (e.g. to cancel at a chunk's end)


@register_result_type  # kept on disk with the result cache's store (wemoe.workbench.result_codecs)
@dataclass(frozen=True)
class AdaptedState:
    """What one finished adaptation run left (the cache's entry): trainable tensors and the run's records."""

    trainable: dict[str, torch.Tensor]
    records: tuple[AdaptStep, ...]


def run_key(merge_key: Hashable | None, settings: Mapping[str, Any]) -> Hashable | None:
    """What an adaptation run with ``settings`` of the merge made under ``merge_key`` depends on (None: not
    reproducible, not shared)."""
    return None if merge_key is None else (merge_key, tuple(settings[k] for k in ADAPT_RUN))


def adapt_once(
    result: AdaptedMerge,
    start: Callable[[], Iterator[AdaptStep]],
    total_steps: int,
    cache: ResultCache | None,
    prefix: Hashable,
    key: Hashable | None,
    stop: Callable[[], bool] | None = None,
    report_waiting: bool = False,
) -> Iterator[AdaptStep | Waiting]:
    """The run ``start()`` begins (:func:`recorded_run`), computed once: its records, from the cache when it
    finished before.

    ``key`` (:func:`run_key`; None: not shared) is kept in ``cache`` under ``(prefix, *key)``. While the same run is
    being computed elsewhere this waits for it; ``stop`` (checked while waiting) gives up, leaving the model as it was;
    ``report_waiting``: meanwhile yield a :class:`Waiting` (the run's progress) every half second. A run that finishes
    here leaves its trainable state in the cache; ``result.key`` is then ``key`` (None if it did not finish).
    """
    full = None if cache is None or key is None else (prefix, *key)
    while full is not None:
        action, found = cache.claim(full)
        if action == "hit":
            yield from _restore(result, found, key)
            return
        if action == "compute":
            break
        if stop is not None and stop():  # the caller gave up waiting (Cancel): nothing happened to the model
            return
        if report_waiting:  # at once, then every half second: the caller holds nothing meanwhile
            yield Waiting(found.progress or "starting")
        found.done.wait(0.5)  # the same run is being computed for someone else: wait for it
    flight = found if full is not None else None
    records: list[AdaptStep] = []
    finished = False
    try:
        for record in start():
            records.append(record)
            if flight is not None:  # what sessions waiting for this same run show
                flight.progress = f"step {record.step}/{total_steps}, loss {record.loss:.3f}"
            yield record
        finished = True
    finally:
        result.key, result.from_cache = (key if finished else None), False
        if flight is not None:
            if finished:
                state = {n: p.detach().cpu().clone() for n, p in result.model.named_parameters() if p.requires_grad}
                cache.finish(full, flight, AdaptedState(state, tuple(records)))
            else:
                cache.abandon(full, flight)


def watch_run(cache: ResultCache, full_key: Hashable, every: float = 0.5) -> Iterator[str]:
    """While the run under ``full_key`` is being computed, its progress every ``every`` seconds (claims nothing)."""
    while (flight := cache.in_flight(full_key)) is not None:
        yield flight.progress or "starting"
        flight.done.wait(every)


def recorded_run(
    result: AdaptedMerge,
    data: Mapping[str, TaskImages],
    heads: Mapping[str, torch.Tensor],
    settings: Mapping[str, Any],
    device: str | None = None,
    fabric: Any = None,
    runner: ChunkRunner | None = None,
    chunk_steps: int = 0,
) -> Iterator[AdaptStep]:
    """Adapt ``result.model`` on ``data`` step by step, recording each step in ``result``: here, on every rank of a
    ``fabric``, or in chunks of ``chunk_steps`` by ``runner`` (see :meth:`Workbench.adapt`)."""
    previous = 0.0
    if runner is not None:
        steps = adapt_in_chunks(result.model, data, heads, settings, chunk_steps or settings["steps"], runner)
    elif fabric is None:
        steps = adapt(result.model, data, heads, device=device, **settings)
    else:
        from wemoe.adaptation.distributed import adapt_distributed

        steps = adapt_distributed(fabric, result.model, data, heads, **settings)
    try:
        for record in steps:
            result.history.append(record)
            result.adapt_steps += 1
            result.adapt_seconds += record.elapsed - previous
            previous = record.elapsed
            yield record
    finally:
        release_workspaces(result.model)  # adaptation batches are large: do not keep their scratch memory


def _restore(result: AdaptedMerge, state: AdaptedState, key: Hashable) -> Iterator[AdaptStep]:
    """Load a finished run's trainable state into ``result.model`` and replay its records (``from_cache``)."""
    with torch.no_grad():
        for name, parameter in result.model.named_parameters():
            if name in state.trainable:
                parameter.copy_(state.trainable[name])
    result.history.extend(state.records)
    result.adapt_steps += len(state.records)
    result.adapt_seconds += state.records[-1].elapsed if state.records else 0.0
    result.key, result.from_cache = key, True
    yield from state.records
