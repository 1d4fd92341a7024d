"""Test-time adaptation: train a merge's trainable parameters (WEMoE routers, AdaMerging coefficients) by entropy.

Each step draws ``per_task`` unlabeled test images from every task, runs them through the model in one batch
(routing stays per sample), and minimises the sum over tasks of the mean entropy of each task's predictions under
its own zero-shot head, with Adam: the paper's loss, ``loss="entropy"``. ``loss="im"`` is a named variant (not the
paper's): information maximisation, entropy minus the entropy of each task's batch-mean prediction, which stops a
task from collapsing onto one class. ``adapt`` is a generator: it yields after every step, so a caller can show
progress and stop between steps; the model keeps the parameters of the last finished step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from wemoe.classify import entropy, information_maximisation, logits_from_features
from wemoe.task_images import TaskImages


DEFAULT_STEPS = 300
DEFAULT_LR = 1e-3
DEFAULT_PER_TASK = 16
LOSSES = {"entropy": entropy, "im": information_maximisation}
"""Adaptation losses on one task's logits: ``entropy`` (the paper's) and ``im`` (a named variant)."""
DEFAULT_LOSS = "entropy"


@dataclass
class AdaptStep:
    """What one adaptation step did."""

    step: int
    loss: float
    entropy: dict[str, float]
    elapsed: float


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters adaptation trains (those that require grad)."""
    return [p for p in model.parameters() if p.requires_grad]


def adapt(
    model: nn.Module,
    data: Mapping[str, TaskImages],
    heads: Mapping[str, torch.Tensor],
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    per_task: int = DEFAULT_PER_TASK,
    seed: int = 0,
    device: str | torch.device | None = None,
    loss: str = DEFAULT_LOSS,
) -> Iterator[AdaptStep]:
    """Adapt ``model`` in place for ``steps`` steps; yields an AdaptStep after each (0 steps yields nothing).

    The model is moved to ``device`` (default: CUDA if available) for the run and back to the CPU at the end,
    including when the caller stops early.
    """
    if loss not in LOSSES:
        raise ValueError(f"Unknown adaptation loss {loss!r}; choose one of {sorted(LOSSES)}.")
    objective = LOSSES[loss]
    params = trainable_parameters(model)
    if not params:
        raise ValueError("This model has nothing to adapt: merge with an adaptive method (wemoe, adamerging) first.")
    device = torch.device(device) if device is not None else default_device()
    tasks = list(data)
    generator = torch.Generator().manual_seed(seed)
    task_heads = {t: heads[t].to(device) for t in tasks}
    optimizer = torch.optim.Adam(params, lr=lr)
    model.to(device)
    start = time.perf_counter()
    try:
        for step in range(1, steps + 1):
            picks = {t: torch.randint(len(data[t]), (per_task,), generator=generator) for t in tasks}
            batch = torch.cat([data[t].images[picks[t]] for t in tasks]).to(device)
            features = model(batch)
            per_task_entropy = {}
            total = torch.zeros((), device=device)
            for i, t in enumerate(tasks):
                task_logits = logits_from_features(features[i * per_task : (i + 1) * per_task], task_heads[t])
                per_task_entropy[t] = float(entropy(task_logits.detach()))
                total = total + objective(task_logits)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            yield AdaptStep(step, float(total.detach()), per_task_entropy, time.perf_counter() - start)
    finally:
        model.to("cpu")


def run_adaptation(model: nn.Module, data, heads, **kwargs) -> list[AdaptStep]:
    """Run :func:`adapt` to the end and return every step's record."""
    return list(adapt(model, data, heads, **kwargs))
