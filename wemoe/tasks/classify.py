"""From an image tower and a zero-shot head to logits and predictions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def logits_from_features(features: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """``normalize(features) @ head.T``: the head already carries the logit scale."""
    return F.normalize(features, dim=-1) @ head.T


def stable_top_k(probabilities: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest values along the last dimension and their indices, equal values in index order.

    ``Tensor.topk`` leaves the order of ties to the backend (it differed between an AMD and an Intel CPU); tied
    classes are common in a joint head (two tasks with a class of the same name), so a stable sort keeps the first,
    as ``argmax`` does."""
    values, indices = probabilities.sort(dim=-1, descending=True, stable=True)
    return values[..., :k], indices[..., :k]


def logits(tower: nn.Module, images: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """Logits of ``images`` under ``head`` through the image tower."""
    return logits_from_features(tower(images), head)


def entropy(logits_: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of the softmax predictions."""
    log_probs = logits_.log_softmax(dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1).mean()


def information_maximisation(logits_: torch.Tensor) -> torch.Tensor:
    """Mean entropy minus the entropy of the mean prediction (as in SHOT): low when each prediction is confident
    *and* the batch spreads over the classes, so collapsing every image onto one class is penalised."""
    log_probs = logits_.log_softmax(dim=-1)
    mean = log_probs.exp().mean(dim=0)
    return entropy(logits_) + (mean * mean.clamp_min(1e-12).log()).sum()


@torch.no_grad()
def predict(tower: nn.Module, images: torch.Tensor, head: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted class indices, in batches."""
    device = head.device
    return torch.cat([logits(tower, images[i : i + batch_size].to(device), head).argmax(-1).cpu()
                      for i in range(0, len(images), batch_size)])
