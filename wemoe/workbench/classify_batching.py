"""Classifications from many sessions computed together: while one batch computes, the requests that arrive for the
same models wait, and the next turn takes all of them as one batch.

A class clicking the gallery sends a burst of single images. One at a time, each image's forward passes are GEMMs of a
few dozen rows (ViT-B/32: 50 tokens), far from the rate the same GEMMs reach with a few hundred rows, and every
request also pays the Python overhead of its ~20 tower passes. :class:`ClassifyBatcher` keeps the one-at-a-time turn
(a shared zoo classifies one batch at a time, ``LoadedZoo.classify_turn``) and adds no wait when idle: a request that
finds the turn free computes alone at once; requests that arrive while it is held queue, and whoever computes next
takes every queued request with the same key (the same merges, head and choice of models) and computes them in one
batch. A batch that fails is computed again one request at a time. Each request gets its own images' results: a
classification of one image does not depend on the other images of its batch (its forward passes are per image; tests
compare it with the image classified alone).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch

Result = TypeVar("Result")

MAX_BATCH_IMAGES = 32
"""The most images one batch takes (a class's burst on ViT-B/32: 32 images through ~20 towers is a few seconds)."""


@dataclass(eq=False)
class _Request(Generic[Result]):
    key: Hashable
    images: torch.Tensor
    done: bool = False
    results: list[Result] = field(default_factory=list)
    error: BaseException | None = None


class ClassifyBatcher:
    """One turn at a time for a shared zoo's classifications; requests that wait with equal keys go in one batch.

    ``turn``: the context manager every computation holds (the zoo's ``classify_turn``: a lock of its own, or the
    app's turn shared by several zoos); ``max_images``: the most images per batch. ``batches`` and ``requests`` count
    what was computed (a bench reads them: requests per batch).
    """

    def __init__(self, turn: contextlib.AbstractContextManager | None = None,
                 max_images: int = MAX_BATCH_IMAGES) -> None:
        self.turn = turn if turn is not None else threading.Lock()
        self.max_images = max_images
        self._ready = threading.Condition()
        self._pending: list[_Request] = []
        self._computing = False
        self.batches = 0
        self.requests = 0

    def run(self, key: Hashable | None, images: torch.Tensor,
            compute: Callable[[torch.Tensor], Sequence[Result]]) -> list[Result]:
        """``compute(images)`` (one result per image), computed in the turn, together with the waiting requests of
        the same ``key`` (None: never batched with another request)."""
        request: _Request[Result] = _Request(object() if key is None else key, images)
        with self._ready:
            self._pending.append(request)
            while self._computing and not request.done:
                self._ready.wait()
            if request.done:
                return _answer(request)
            self._computing = True
            group = self._take(request)
        try:
            self._compute(group, compute)
        finally:
            with self._ready:
                self._computing = False
                self._ready.notify_all()
        return _answer(request)

    def _take(self, leader: _Request) -> list[_Request]:
        """The leader and the queued requests of its key, oldest first, within :attr:`max_images` (the leader's
        images always); taken off the queue. Called holding the condition."""
        group, count = [leader], len(leader.images)
        for request in self._pending:
            if request is not leader and request.key == leader.key and count + len(request.images) <= self.max_images:
                group.append(request)
                count += len(request.images)
        self._pending = [r for r in self._pending if all(r is not g for g in group)]
        return group

    def _compute(self, group: list[_Request], compute: Callable[[torch.Tensor], Sequence[Any]]) -> None:
        """Compute the group's images in one call in the turn and give each request its rows. A batch that fails is
        computed again one request at a time, so each request gets its own result or its own error. Called outside
        the condition, by the only thread computing."""
        with self.turn:
            try:
                images = group[0].images if len(group) == 1 else torch.cat([r.images for r in group])
                results = list(compute(images))
            except Exception as error:
                if len(group) == 1:
                    group[0].error, group[0].done = error, True
                    return
                for request in group:
                    self._compute_alone(request, compute)
                return
        start = 0
        for request in group:
            request.results, request.done = results[start : start + len(request.images)], True
            start += len(request.images)
        self.batches += 1
        self.requests += len(group)

    def _compute_alone(self, request: _Request, compute: Callable[[torch.Tensor], Sequence[Any]]) -> None:
        try:
            request.results = list(compute(request.images))
        except Exception as error:
            request.error = error
        request.done = True
        self.batches += 1
        self.requests += 1

def _answer(request: _Request[Result]) -> list[Result]:
    """The request's results, or its error raised."""
    if request.error is not None:
        raise request.error
    return request.results
