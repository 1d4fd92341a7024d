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
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from wemoe.adaptation.adaptive import trainable_parameters
from wemoe.errors import MethodError, WemoeError
from wemoe.params import Param
from wemoe.tasks.classify import entropy, information_maximisation, logits_from_features
from wemoe.tasks.images import TaskImages

LOSSES = {"entropy": entropy, "im": information_maximisation}
"""Adaptation losses on one task's logits: ``entropy`` (the paper's) and ``im`` (a named variant)."""

SETTINGS = (
    Param("steps", int, 300, "Adaptation steps (Adam steps on unlabeled test images).", min=0, max=5000),
    Param("lr", float, 1e-3, "Adam learning rate of the routers or coefficients (the paper: 1e-3).", min=1e-7, max=1.0),
    Param("per_task", int, 16, "Unlabeled test images drawn from every task for each step.", min=1, max=256),
    Param("loss", str, "entropy", "entropy (the paper's) or im (entropy minus the entropy of the mean prediction).",
          choices=tuple(LOSSES)),
    Param("seed", int, 0, "Seed of the images drawn for each step (same seed, same batches).", min=0),
    Param("split", str, "test", "Images adapted on: test (the scored images, as in the paper) or heldout (unlabeled "
          "images never scored: a pocket task's train split, else half of the test set; wemoe.tasks.splits).",
          choices=("test", "heldout")),
)
"""The adaptation settings, declared once: the app builds its controls, the CLI its flags and both their checks."""
DEFAULTS = {p.name: p.default for p in SETTINGS}
DEFAULT_STEPS, DEFAULT_LR, DEFAULT_PER_TASK = DEFAULTS["steps"], DEFAULTS["lr"], DEFAULTS["per_task"]
DEFAULT_LOSS = DEFAULTS["loss"]


def resolve_settings(values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The adaptation settings: defaults overridden by ``values``, each parsed and range-checked (MethodError)."""
    values = dict(values or {})
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise MethodError(f"Adaptation has no setting {unknown[0]!r}. Its settings: {', '.join(DEFAULTS)}.")
    return {p.name: p.parse(values.get(p.name, p.default), "adapt") for p in SETTINGS}


class AdaptationDiverged(WemoeError):
    """Adaptation stopped because its loss or gradients stopped being finite; the model keeps the last finite step."""

    def __init__(self, step: int, steps: int, what: str, lr: float) -> None:
        self.step_kept = step - 1
        super().__init__(
            f"Adaptation stopped at step {step} of {steps}: the {what} became NaN or infinite (learning rate {lr:g} "
            f"is probably too large; the paper uses 1e-3). The parameters are kept as after step {self.step_kept}."
        )


class AdaptationOutOfMemory(WemoeError):
    """The device ran out of memory during a step; the model is back on the CPU with the last finished step."""

    def __init__(self, step: int, steps: int, per_task: int, device: torch.device) -> None:
        self.step_kept = step - 1
        fewer = max(1, per_task // 2)
        super().__init__(
            f"The {device.type.upper()} ran out of memory at adaptation step {step} of {steps} ({per_task} images per "
            f"task per step). The model is back on the CPU with the parameters of step {self.step_kept}. Adapt again "
            f"with fewer images per task (e.g. {fewer}), or free the device's memory first."
        )


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


def _batch_loss(
    model: nn.Module,
    data: Mapping[str, TaskImages],
    task_heads: Mapping[str, torch.Tensor],
    per_task: int,
    generator: torch.Generator,
    objective,
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One step's loss: ``per_task`` images drawn from every task, one batch through the model, summed objective."""
    tasks = list(task_heads)
    picks = {t: torch.randint(len(data[t]), (per_task,), generator=generator) for t in tasks}
    batch = torch.cat([data[t].images[picks[t]] for t in tasks]).to(device)
    features = model(batch)
    per_task_entropy = {}
    total = torch.zeros((), device=device)
    for i, t in enumerate(tasks):
        task_logits = logits_from_features(features[i * per_task : (i + 1) * per_task], task_heads[t])
        per_task_entropy[t] = float(entropy(task_logits.detach()))
        total = total + objective(task_logits)
    return total, per_task_entropy


def time_step(
    model: nn.Module,
    data: Mapping[str, TaskImages],
    heads: Mapping[str, torch.Tensor],
    per_task: int = DEFAULT_PER_TASK,
    device: str | torch.device | None = None,
    repeats: int = 2,
) -> float:
    """Seconds of one adaptation step's work (forward and backward of one batch) on ``device``; the model is unchanged.

    The fastest of ``repeats`` runs: the first run of a shape pays one-off costs (allocations, kernel builds), so one
    run alone overestimates every later step.
    """
    settings = resolve_settings({"per_task": per_task})
    params = trainable_parameters(model)
    device = torch.device(device) if device is not None else default_device()
    task_heads = {t: heads[t].to(device) for t in data}
    generator = torch.Generator().manual_seed(0)
    model.to(device)
    best = float("inf")
    try:
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            total, _ = _batch_loss(model, data, task_heads, settings["per_task"], generator, entropy, device)
            torch.autograd.grad(total, params, allow_unused=True)  # gradients computed, none stored
            best = min(best, time.perf_counter() - start)
    finally:
        model.to("cpu")
    return best


@dataclass
class Checkpoint:
    """Everything a run needs to go on where it stopped, as CPU tensors (picklable, device-free): the steps done,
    the trainable tensors by name, Adam's state, the batch generator's state and the seconds spent."""

    settings: dict[str, Any]
    step: int
    trainable: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    generator: torch.Tensor
    elapsed: float = 0.0

    @property
    def done(self) -> bool:
        """Whether every requested step has run."""
        return self.step >= self.settings["steps"]


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


class AdaptationRun:
    """One adaptation run that can stop after any step and go on later, on another device or in another process.

    ``run(k)`` takes up to ``k`` more steps; ``checkpoint()`` gives the state to go on from (CPU tensors);
    ``AdaptationRun.resume(model, ..., checkpoint)`` continues a checkpointed run on a model with the same
    architecture. A run cut into chunks gives bitwise the results of the same run in one go (same batches, same Adam
    state), which is what ZeroGPU needs: each GPU call gets a checkpoint and returns the next one.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Mapping[str, TaskImages],
        heads: Mapping[str, torch.Tensor],
        settings: Mapping[str, Any] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        """``settings``: the adaptation settings (checked against :data:`SETTINGS`; defaults for the rest)."""
        self.settings = resolve_settings(settings)
        self.model, self.data = model, data
        self.params = dict((n, p) for n, p in model.named_parameters() if p.requires_grad)
        if not self.params:
            raise ValueError("This model has nothing to adapt: merge with an adaptive method (wemoe, adamerging) "
                             "first.")
        self.device = torch.device(device) if device is not None else default_device()
        self.heads = {t: heads[t].to(self.device) for t in data}
        self.generator = torch.Generator().manual_seed(self.settings["seed"])
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=self.settings["lr"])
        self.step = 0
        self.elapsed = 0.0

    @classmethod
    def resume(
        cls,
        model: nn.Module,
        data: Mapping[str, TaskImages],
        heads: Mapping[str, torch.Tensor],
        checkpoint: Checkpoint,
        device: str | torch.device | None = None,
    ) -> AdaptationRun:
        """The run of ``checkpoint`` continued on ``model`` (its trainable tensors are set from the checkpoint)."""
        run = cls(model, data, heads, checkpoint.settings, device)
        with torch.no_grad():
            for name, value in checkpoint.trainable.items():
                run.params[name].copy_(value)
        run.optimizer.load_state_dict(checkpoint.optimizer)
        run.generator.set_state(checkpoint.generator)
        run.step, run.elapsed = checkpoint.step, checkpoint.elapsed
        return run

    def checkpoint(self) -> Checkpoint:
        """The state to go on from, as CPU tensors."""
        trainable = {n: p.detach().to("cpu", copy=True) for n, p in self.params.items()}
        return Checkpoint(dict(self.settings), self.step, trainable, _to_cpu(self.optimizer.state_dict()),
                          self.generator.get_state(), self.elapsed)

    def _step_loss(self, per_task: int, objective) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """One step's ``(loss to backpropagate, loss to report, mean entropy by task)`` (the same loss here; a
        distributed run backpropagates its rank's share and reports the whole batch's loss)."""
        total, per_task_entropy = _batch_loss(
            self.model, self.data, self.heads, per_task, self.generator, objective, self.device
        )
        return total, total.detach(), per_task_entropy

    def _backward(self, total: torch.Tensor) -> None:
        """The step's gradients into ``.grad`` of the trainable parameters."""
        total.backward()

    def run(self, k: int | None = None) -> Iterator[AdaptStep]:
        """Take up to ``k`` more steps (default: to the end), yielding an AdaptStep after each.

        The model is on the run's device while it runs and back on the CPU after, also when the caller stops early.
        """
        steps, lr, per_task = self.settings["steps"], self.settings["lr"], self.settings["per_task"]
        objective = LOSSES[self.settings["loss"]]
        last = steps if k is None else min(steps, self.step + k)
        params = list(self.params.values())
        self.model.to(self.device)
        start = time.perf_counter() - self.elapsed
        try:
            while self.step < last:
                step = self.step + 1
                before = [p.detach().clone() for p in params]
                try:
                    total, loss, per_task_entropy = self._step_loss(per_task, objective)
                    if not torch.isfinite(loss):
                        raise AdaptationDiverged(step, steps, "loss", lr)
                    self.optimizer.zero_grad(set_to_none=True)
                    self._backward(total)
                    if not all(torch.isfinite(p.grad).all() for p in params if p.grad is not None):
                        raise AdaptationDiverged(step, steps, "gradient", lr)
                    self.optimizer.step()
                except torch.OutOfMemoryError:
                    with torch.no_grad():  # an optimizer step cut short may have moved some parameters
                        for p, kept in zip(params, before, strict=True):
                            p.copy_(kept)
                    self.optimizer.zero_grad(set_to_none=True)
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
                    raise AdaptationOutOfMemory(step, steps, per_task, self.device) from None
                if not all(torch.isfinite(p).all() for p in params):
                    with torch.no_grad():
                        for p, kept in zip(params, before, strict=True):
                            p.copy_(kept)
                    raise AdaptationDiverged(step, steps, "parameters", lr)
                self.step, self.elapsed = step, time.perf_counter() - start
                yield AdaptStep(step, float(loss), per_task_entropy, self.elapsed)
        finally:
            self.model.to("cpu")


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
    split: str = "test",
) -> Iterator[AdaptStep]:
    """Adapt ``model`` in place for ``steps`` steps; yields an AdaptStep after each (0 steps yields nothing).

    ``split`` only records which images ``data`` holds (the caller chooses them, e.g.
    ``LoadedZoo.adaptation_data(split)``).

    The settings are checked against :data:`SETTINGS` first (MethodError). The model is moved to ``device``
    (default: CUDA if available) for the run and back to the CPU at the end, including when the caller stops early.
    A step whose loss or gradients are not finite is not taken: :class:`AdaptationDiverged` is raised and the model
    keeps the parameters of the last finite step. :class:`AdaptationRun` is the same run, resumable in chunks.
    """
    settings = {"steps": steps, "lr": lr, "per_task": per_task, "loss": loss, "seed": seed, "split": split}
    yield from AdaptationRun(model, data, heads, settings, device).run()


def run_adaptation(model: nn.Module, data, heads, **kwargs) -> list[AdaptStep]:
    """Run :func:`adapt` to the end and return every step's record."""
    return list(adapt(model, data, heads, **kwargs))


ChunkRunner = Callable[[nn.Module, Mapping[str, TaskImages], Mapping[str, torch.Tensor], Checkpoint, int], Iterable]
"""Runs up to k steps of a checkpointed run somewhere (a ZeroGPU worker) and yields its AdaptSteps, then the new
Checkpoint; whatever it changes in place may be lost (a forked process)."""


def run_chunk(
    model: nn.Module,
    data: Mapping[str, TaskImages],
    heads: Mapping[str, torch.Tensor],
    checkpoint: Checkpoint,
    k: int,
    device: str | torch.device | None = None,
) -> Iterator[AdaptStep | Checkpoint]:
    """Up to ``k`` steps of ``checkpoint``'s run on ``model``: yields each AdaptStep, then the new Checkpoint."""
    run = AdaptationRun.resume(model, data, heads, checkpoint, device)
    yield from run.run(k)
    yield run.checkpoint()


def adapt_in_chunks(
    model: nn.Module,
    data: Mapping[str, TaskImages],
    heads: Mapping[str, torch.Tensor],
    settings: Mapping[str, Any],
    chunk_steps: int,
    runner: ChunkRunner = run_chunk,
) -> Iterator[AdaptStep]:
    """Adapt ``model`` in chunks of ``chunk_steps`` steps, each run by ``runner`` from a checkpoint (e.g. in a ZeroGPU
    worker, which returns its state instead of changing ``model``); equal, bit for bit, to one uninterrupted run.

    A chunk's steps are yielded once its checkpoint is back and loaded into ``model``, so a chunk that fails (out of
    GPU time) leaves the model at the last finished chunk, and every step yielded is a step the model has.
    """
    checkpoint = AdaptationRun(model, data, heads, settings, device="cpu").checkpoint()
    named = dict(model.named_parameters())
    while not checkpoint.done:
        records: list[AdaptStep] = []
        for item in runner(model, data, heads, checkpoint, max(1, chunk_steps)):
            if isinstance(item, Checkpoint):
                checkpoint = item
            else:
                records.append(item)
        with torch.no_grad():
            for name, value in checkpoint.trainable.items():
                named[name].copy_(value)
        if not records:
            raise RuntimeError("An adaptation chunk returned no steps: the worker stopped before its first step.")
        yield from records
