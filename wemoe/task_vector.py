"""Task vectors (Ilharco et al., "Editing Models with Task Arithmetic"): tau = theta_finetuned - theta_pretrained.

A TaskVector is a state dict you can add, negate, scale, sum and apply to pretrained weights. Only floating-point
tensors take part in the arithmetic; integer buffers (e.g. position ids, counters) are not "learned directions":
they are carried over unchanged from the pretrained weights when a vector is applied.

A zoo's task vectors need not be held at once: :func:`lazy_task_vectors` computes each tensor of each when it is read,
and :func:`summed` adds vectors one tensor at a time, so that task arithmetic over eight ViT-B/32 experts holds one
tower of sums, not eight towers of differences (the values are bit for bit those of ``sum(task_vectors(...))``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import torch

StateDict = dict[str, torch.Tensor]


def _is_float(tensor: torch.Tensor) -> bool:
    return torch.is_floating_point(tensor)


class TaskVector:
    """A direction in weight space, one tensor per floating-point parameter name."""

    def __init__(self, vector: Mapping[str, torch.Tensor]) -> None:
        self.vector: StateDict = dict(vector)

    @classmethod
    def from_states(cls, pretrained: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor]) -> TaskVector:
        """``finetuned - pretrained`` for every floating-point tensor (integer buffers are skipped)."""
        missing = [k for k in pretrained if _is_float(pretrained[k]) and k not in finetuned]
        if missing:
            raise KeyError(f"Fine-tuned weights lack {len(missing)} pretrained parameters, e.g. {missing[:3]}")
        return cls({k: finetuned[k].float() - v.float() for k, v in pretrained.items() if _is_float(v)})

    def keys(self) -> list[str]:
        """Parameter names."""
        return list(self.vector)

    def numel(self, key: str) -> int:
        """Entries of tensor ``key``."""
        return self.vector[key].numel()

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.vector[key]

    def _zip(self, other: TaskVector) -> Iterable[tuple[str, torch.Tensor, torch.Tensor]]:
        if self.vector.keys() != other.vector.keys():
            raise KeyError("Task vectors have different parameter names; were they made from the same base?")
        return ((k, v, other.vector[k]) for k, v in self.vector.items())

    def __add__(self, other: TaskVector | int) -> TaskVector:
        if isinstance(other, int) and other == 0:  # so that sum(vectors) works
            return self
        return TaskVector({k: a + b for k, a, b in self._zip(other)})

    __radd__ = __add__

    def __neg__(self) -> TaskVector:
        return TaskVector({k: -v for k, v in self.vector.items()})

    def __sub__(self, other: TaskVector) -> TaskVector:
        return self + (-other)

    def __mul__(self, scale: float) -> TaskVector:
        return TaskVector({k: v * scale for k, v in self.vector.items()})

    __rmul__ = __mul__

    def map(self, fn) -> TaskVector:
        """A new vector with ``fn(name, tensor)`` applied to every tensor."""
        return TaskVector({k: fn(k, v) for k, v in self.vector.items()})

    def norm(self) -> float:
        """The Euclidean norm over all tensors."""
        return float(torch.sqrt(sum((v.double() ** 2).sum() for v in self.vector.values())))

    def apply_to(self, pretrained: Mapping[str, torch.Tensor], scale: float = 1.0) -> StateDict:
        """``pretrained + scale * self`` as a new state dict, in the pretrained dtypes; integer buffers copied as they
        are."""
        merged: StateDict = {}
        for key, value in pretrained.items():
            if _is_float(value) and key in self.vector:
                merged[key] = (value.float() + scale * self.vector[key]).to(value.dtype)
            else:
                merged[key] = value.clone()
        return merged


def task_vectors(pretrained: Mapping[str, torch.Tensor],
                 experts: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, TaskVector]:
    """One task vector per expert, in the experts' order."""
    return {name: TaskVector.from_states(pretrained, state) for name, state in experts.items()}


class VectorLike(Protocol):
    """What per-tensor merges read of a task vector: its parameter names and one tensor by name."""

    def keys(self) -> list[str]: ...

    def numel(self, key: str) -> int: ...

    def __getitem__(self, key: str) -> torch.Tensor: ...


class LazyTaskVector:
    """``finetuned - pretrained`` of one expert, each tensor computed when it is read (the same values as
    :meth:`TaskVector.from_states`'s, never held whole); read-only views of both states are kept, not copies."""

    def __init__(self, pretrained: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor]) -> None:
        missing = [k for k in pretrained if _is_float(pretrained[k]) and k not in finetuned]
        if missing:
            raise KeyError(f"Fine-tuned weights lack {len(missing)} pretrained parameters, e.g. {missing[:3]}")
        self.pretrained, self.finetuned = pretrained, finetuned

    def keys(self) -> list[str]:
        """Parameter names (the pretrained floating-point tensors', in their order)."""
        return [k for k, v in self.pretrained.items() if _is_float(v)]

    def numel(self, key: str) -> int:
        """Entries of tensor ``key`` (not computed)."""
        return self.pretrained[key].numel()

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.finetuned[key].float() - self.pretrained[key].float()


def lazy_task_vectors(pretrained: Mapping[str, torch.Tensor],
                      experts: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, LazyTaskVector]:
    """One :class:`LazyTaskVector` per expert, in the experts' order (nothing computed yet)."""
    return {name: LazyTaskVector(pretrained, state) for name, state in experts.items()}


def summed(vectors: Sequence[VectorLike], weights: Sequence[float] | None = None) -> TaskVector:
    """``sum_t weights[t] * vectors[t]`` (no weights: ``sum_t vectors[t]``), one tensor at a time: bit for bit
    ``sum(vectors)`` or ``sum(v * w for v, w in zip(vectors, weights))`` over task vectors, holding one tensor of
    each vector at a time (lazy vectors: never a whole task vector)."""
    if not vectors:
        raise ValueError("summed needs at least one task vector.")
    if weights is not None and len(weights) != len(vectors):
        raise ValueError(f"{len(weights)} weights for {len(vectors)} task vectors.")
    out: StateDict = {}
    keys = vectors[0].keys()
    for key in keys:
        total: torch.Tensor | None = None
        for index, vector in enumerate(vectors):
            tensor = vector[key] if weights is None else vector[key] * weights[index]
            total = tensor if total is None else total + tensor
        out[key] = total
    return TaskVector(out)


def merged_state(base: Mapping[str, torch.Tensor], experts: Mapping[str, Mapping[str, torch.Tensor]],
                 lambda_: float, skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Task arithmetic ``theta_0 + lambda_ * sum_t tau_t`` of ``base``, one tensor at a time (the values of
    ``sum(task_vectors(base, experts).values()).apply_to(base, lambda_)``, bit for bit, without holding every task
    vector); integer buffers and the tensors whose names start with one of ``skip`` (replaced afterwards) keep
    ``base``'s."""
    merged: dict[str, torch.Tensor] = {}
    for key, value in base.items():
        if not torch.is_floating_point(value) or (skip and key.startswith(skip)):
            merged[key] = value
            continue
        missing = [name for name, state in experts.items() if key not in state]
        if missing:
            raise KeyError(f"Fine-tuned weights of {missing} lack the pretrained parameter {key!r}.")
        total: torch.Tensor | None = None
        for state in experts.values():
            vector = state[key].float() - value.float()
            total = vector if total is None else total + vector
        merged[key] = value.clone() if total is None else (value.float() + lambda_ * total).to(value.dtype)
    return merged
