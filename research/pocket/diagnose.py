"""Diagnostics that tell whether entropy adaptation can find the routing on a zoo (about 10 s on the pocket zoo).

Entropy adaptation only works where each task's entropy falls as routing moves from task arithmetic toward the
oracle (each task routed to its own expert). Two measurements say so:

- ``path``: entropy and accuracy of every task along the straight line from uniform routing ``lambda`` to the
  one-hot oracle;
- ``entropy_gradients``: ``G[t, s] = d(mean entropy of task t under head t) / d(r_s)`` at the task-arithmetic point
  (one routing weight per expert shared by every layer). The routers can learn the routing only if, in each row,
  the most negative entry is the diagonal one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from wemoe.moe.routing_hooks import force_routing
from wemoe.tasks.classify import entropy, logits_from_features


def _forward(tower: nn.Module, weights: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    with force_routing(tower, weights):
        return tower(images)


@torch.no_grad()
def path(
    tower: nn.Module,
    data: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    heads: Mapping[str, torch.Tensor],
    lambda_: float,
    alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
) -> dict[str, list[tuple[float, float, float]]]:
    """Per task, ``(alpha, entropy, accuracy %)`` for routing ``(1 - alpha) * lambda * 1 + alpha * one_hot(task)``."""
    tasks = list(data)
    result = {}
    for t, task in enumerate(tasks):
        images, labels = data[task]
        rows = []
        for alpha in alphas:
            weights = torch.full((len(tasks),), (1 - alpha) * lambda_)
            weights[t] += alpha
            logits = logits_from_features(_forward(tower, weights, images), heads[task])
            rows.append((alpha, float(entropy(logits)), 100.0 * float((logits.argmax(-1) == labels).float().mean())))
        result[task] = rows
    return result


def entropy_gradients(
    tower: nn.Module,
    data: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    heads: Mapping[str, torch.Tensor],
    lambda_: float,
) -> torch.Tensor:
    """``G[t, s]``: gradient of task t's mean entropy (under head t) w.r.t. expert s's shared routing weight."""
    tasks = list(data)
    rows = []
    for task in tasks:
        weights = torch.full((len(tasks),), lambda_, requires_grad=True)
        h = entropy(logits_from_features(_forward(tower, weights, data[task][0]), heads[task]))
        (grad,) = torch.autograd.grad(h, weights)
        rows.append(grad)
    return torch.stack(rows)


def diagonal_wins(gradients: torch.Tensor) -> list[bool]:
    """For each task, whether its own expert has the most negative entropy gradient in its row."""
    return [bool(int(row.argmin()) == t) for t, row in enumerate(gradients)]
