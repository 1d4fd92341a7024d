"""Task vectors (Ilharco et al., "Editing Models with Task Arithmetic"): tau = theta_finetuned - theta_pretrained.

A TaskVector is a state dict you can add, negate, scale, sum and apply to pretrained weights. Only floating-point
tensors take part in the arithmetic; integer buffers (e.g. position ids, counters) are not "learned directions":
they are carried over unchanged from the pretrained weights when a vector is applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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
