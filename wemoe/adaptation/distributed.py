"""Adaptation on several devices with Lightning Fabric (DDP): every rank takes its share of each step's images.

Every rank holds the same merge and the same test images and draws, from the same seeded generator, the very picks
one process would draw (``per_task`` images of every task); rank ``r`` of ``W`` keeps the ``r``-th of ``W`` near-equal
slices of every task's picks, so the ranks' batches together are exactly the one-process batch. DDP averages the
ranks' gradients, so each rank's loss is scaled for that average to be the one-process gradient:

- ``entropy``: ``W / per_task`` times the sum of its images' entropies (one process takes each task's mean);
- ``im``: the same, plus the term of each task's batch-mean prediction, which is not a sum over images: the ranks'
  per-task sums of probabilities are added up with torch's differentiable all-reduce
  (``torch.distributed._functional_collectives.all_reduce``, whose backward adds up the ranks' gradients), so every
  rank holds the whole batch's mean prediction, and DDP's average of the ranks' gradients is again the one-process
  gradient.

The processes and the process group are Fabric's (``Fabric(strategy="ddp").launch()``: it starts the other ranks by
running the same command again, or takes them from ``torchrun``/SLURM); this module only validates the request
(:func:`check_devices`, before any work), starts Fabric (:func:`start_fabric`) and runs the adaptation
(:class:`DistributedAdaptationRun`, :func:`adapt_distributed`). Every rank reports the same whole-batch loss.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from wemoe.adaptation.adapt import AdaptationRun, AdaptStep
from wemoe.errors import MethodError, WemoeError
from wemoe.tasks.classify import logits_from_features
from wemoe.tasks.images import TaskImages

if TYPE_CHECKING:
    from lightning_fabric import Fabric

ACCELERATORS = ("auto", "cpu", "cuda")
"""``--accelerator`` values: ``auto`` is CUDA when this machine has a GPU, else CPU."""
STRATEGIES = ("ddp",)
"""``--strategy`` values: Fabric's DDP (one process per device, gradients all-reduced)."""
LOSSES = ("entropy", "im")
"""The adaptation losses a distributed run splits over ranks exactly."""


class DeviceError(WemoeError):
    """The requested devices, accelerator or strategy cannot run on this machine."""


def resolve_accelerator(accelerator: str) -> str:
    """``cpu`` or ``cuda``: ``auto`` is CUDA when a GPU is visible, else CPU (DeviceError for anything else)."""
    if accelerator not in ACCELERATORS:
        raise DeviceError(f"--accelerator {accelerator!r} is not one of {', '.join(ACCELERATORS)}.")
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return accelerator


def check_devices(devices: int, accelerator: str = "auto", strategy: str = "ddp", per_task: int | None = None) -> str:
    """Check a ``--devices/--accelerator/--strategy`` request against this machine (one-line DeviceError) before any
    work; returns the accelerator (``cpu`` or ``cuda``). Counting GPUs does not initialise CUDA.

    ``per_task``: the images drawn from every task per step, which must give every rank at least one.
    """
    if devices < 1:
        raise DeviceError(f"--devices {devices}: give 1 or more devices.")
    if strategy not in STRATEGIES:
        raise DeviceError(f"--strategy {strategy!r} is not one of {', '.join(STRATEGIES)}.")
    resolved = resolve_accelerator(accelerator)
    if resolved == "cuda":
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if devices > gpus:
            have = f"has {gpus} CUDA GPU{'s' if gpus != 1 else ''}" if gpus else "has no CUDA GPU"
            fix = f"use --devices {gpus} or fewer, or --accelerator cpu" if gpus else "use --accelerator cpu"
            raise DeviceError(f"--devices {devices} --accelerator cuda: this machine {have}; {fix}.")
    if per_task is not None and devices > per_task:
        raise DeviceError(f"--devices {devices} with --per-task {per_task}: every device needs at least one image of "
                          f"every task per step; use --per-task {devices} or more.")
    return resolved


def start_fabric(devices: int, accelerator: str = "auto", strategy: str = "ddp") -> Fabric:
    """A launched Fabric for ``devices`` processes (checked first by :func:`check_devices`).

    Launching starts ranks 1..N-1 by running this process's command again (``python -m wemoe ...``), each with its
    ``LOCAL_RANK``; under ``torchrun`` or SLURM the ranks already exist and Fabric joins them. Buffers (the experts'
    frozen weight stacks) are not re-broadcast at every forward: every rank builds the same merge, and DDP copies
    rank 0's parameters and buffers to the others once, when the model is set up.
    """
    resolved = check_devices(devices, accelerator, strategy)
    from lightning_fabric import Fabric
    from lightning_fabric.strategies import DDPStrategy

    fabric = Fabric(accelerator=resolved, devices=devices, strategy=DDPStrategy(forward_sync_buffers=False))
    fabric.launch()
    return fabric


def finish_fabric(fabric: Fabric, failed: bool = False) -> None:
    """Leave the process group; the rank that started the others then waits for them to end, or, when its own
    command ``failed`` (they may be waiting for it in a collective), stops them."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for process in getattr(fabric.strategy.launcher, "procs", []):  # only the processes this one started
        if failed:
            process.terminate()
        process.wait()


def share(n: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s slice of ``n`` items split over ``world`` ranks (the first ``n % world`` ranks get one more)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def is_main_process() -> bool:
    """Whether this process is rank 0 of its process group, or not in one (only it prints and writes files)."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class DistributedAdaptationRun(AdaptationRun):
    """An :class:`~wemoe.adaptation.adapt.AdaptationRun` on one rank of a Fabric DDP group: the same settings, batches,
    Adam steps and non-finite guards, each rank computing its share of every step's batch.

    The model is wrapped in DDP (``fabric.setup_module``: moved to this rank's device, rank 0's tensors copied to
    every rank); the optimizer and batch generator are the run's own and step identically on every rank, since the
    all-reduced gradients are the same everywhere. Run it to the end with one ``run()`` on CUDA: the model goes back
    to the CPU after each call.
    """

    def __init__(
        self,
        fabric: Fabric,
        model: nn.Module,
        data: Mapping[str, TaskImages],
        heads: Mapping[str, torch.Tensor],
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        """``fabric``: a launched Fabric (:func:`start_fabric`); ``settings`` as for AdaptationRun."""
        super().__init__(model, data, heads, settings, device=fabric.device)
        self.fabric = fabric
        self.rank, self.world = fabric.global_rank, fabric.world_size
        if self.settings["loss"] not in LOSSES:
            raise MethodError(f"Adaptation on several devices supports the losses {', '.join(LOSSES)}.")
        if self.settings["per_task"] < self.world:
            raise MethodError(f"per_task {self.settings['per_task']} is fewer than the {self.world} devices: every "
                              "device needs at least one image of every task per step.")
        self.module = fabric.setup_module(model)

    def _step_loss(self, per_task: int, objective) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        tasks = list(self.heads)
        # the one-process picks (same generator, same order), of which this rank keeps its slice of every task
        picks = {t: torch.randint(len(self.data[t]), (per_task,), generator=self.generator) for t in tasks}
        mine = share(per_task, self.rank, self.world)
        size = mine.stop - mine.start
        batch = torch.cat([self.data[t].images[picks[t][mine]] for t in tasks]).to(self.device)
        features = self.module(batch)
        scale = self.world / per_task  # DDP averages W ranks' gradients of each task's mean over per_task images
        total = torch.zeros((), device=self.device)
        entropy_sums, prob_sums = [], []
        for i, t in enumerate(tasks):
            log_probs = logits_from_features(features[i * size : (i + 1) * size], self.heads[t]).log_softmax(dim=-1)
            probs = log_probs.exp()
            entropies = -(probs * log_probs).sum(dim=-1)
            total = total + scale * entropies.sum()
            entropy_sums.append(entropies.detach().sum())
            prob_sums.append(probs.sum(dim=0))
        if self.settings["loss"] == "im":
            import torch.distributed._functional_collectives as collectives

            # differentiable all-reduce (its backward all-reduces the gradients): every rank gets the batch's sums
            summed = collectives.all_reduce(torch.cat(prob_sums), "sum", torch.distributed.group.WORLD)
            for chunk in summed.split([len(p) for p in prob_sums]):
                mean = chunk / per_task
                total = total + (mean * mean.clamp_min(1e-12).log()).sum()
        report = self.fabric.all_reduce(torch.stack([total.detach(), *entropy_sums]), reduce_op="sum")
        per_task_entropy = {t: float(report[i + 1]) / per_task for i, t in enumerate(tasks)}
        return total, report[0] / self.world, per_task_entropy

    def _backward(self, total: torch.Tensor) -> None:
        self.fabric.backward(total)  # DDP all-reduces (averages) the trainable parameters' gradients


def adapt_distributed(
    fabric: Fabric,
    model: nn.Module,
    data: Mapping[str, TaskImages],
    heads: Mapping[str, torch.Tensor],
    **settings: Any,
) -> Iterator[AdaptStep]:
    """:func:`wemoe.adaptation.adapt.adapt` on every rank of ``fabric`` (call it on all ranks with the same arguments);
    yields the whole batch's AdaptStep after each step, the same on every rank."""
    yield from DistributedAdaptationRun(fabric, model, data, heads, settings).run()
