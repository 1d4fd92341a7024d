"""What the WEMoE routers do with images: routing weights per layer, the task they point to, 2-D maps of features.

The routing itself is computed in :meth:`wemoe.moe.layer.Router.forward` (each sample's MLP-input tokens, averaged,
through the router: one weight per expert); this module only reads those weights
(``wemoe.moe.routing_hooks.capture_routing``) and interprets them.

- :func:`features_and_routing`: one pass of a WEMoE tower over images gives each image's features ``[D]`` and its
  routing weights ``[layers, experts]`` (one row per upscaled block).
- Which task an image belongs to, as the routers see it, two ways:
  :func:`guess_task_argmax` takes the expert with the largest layer-averaged weight (needs no reference images, but
  assumes the routers favour "their" expert, which entropy adaptation does not promise);
  :class:`RoutingCentroids` compares the image's whole routing pattern (layers x experts, flattened) with the mean
  pattern of known images of each task and picks the nearest (Euclidean). The app uses the centroids.
- :func:`uninformative_routing`: whether routing can tell tasks apart at all (untrained routers give every expert
  the same weight, NaN weights give nothing): then there is no guess to make.
- :func:`task_average_routing`: the mean routing of each task's images (task x layer x expert), for heatmaps.
- :func:`embed_2d`: a 2-D map of features by UMAP (umap-learn) or PCA, for scatter plots.
- :func:`top_k`: the k most probable classes of any image tower under a zero-shot head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from wemoe.errors import MethodError
from wemoe.moe.layer import moe_layers
from wemoe.moe.routing_hooks import capture_routing
from wemoe.tasks.classify import logits_from_features, stable_top_k
from wemoe.tasks.images import TaskImages


def require_wemoe(tower: nn.Module) -> list[int]:
    """The upscaled block indices of ``tower``; a MethodError if it has none (it is not a WEMoE model)."""
    layers = sorted(moe_layers(tower))
    if not layers:
        raise MethodError("This model has no routers: merge with the wemoe method to see routing.")
    return layers


@torch.no_grad()
def features_and_routing(tower: nn.Module, images: torch.Tensor,
                         batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``[N, D]`` and routing weights ``[N, layers, experts]`` of ``images`` through a WEMoE tower."""
    require_wemoe(tower)
    tower.eval()
    outputs = []
    with capture_routing(tower) as record:
        for start in range(0, len(images), batch_size):
            outputs.append(tower(images[start : start + batch_size]).float().cpu())
    return torch.cat(outputs), record.stacked()


def routing_weights(tower: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Routing weights ``[N, layers, experts]`` of ``images`` (rows in the order of :func:`moe_layers`)."""
    return features_and_routing(tower, images, batch_size)[1]


def guess_task_argmax(routing: torch.Tensor, task_names: Sequence[str]) -> list[str]:
    """Per image, the task of the expert with the largest weight averaged over layers. ``routing``: ``[N, L, T]``."""
    if routing.shape[-1] != len(task_names):
        raise ValueError(f"Routing has {routing.shape[-1]} experts but {len(task_names)} task names were given.")
    return [task_names[i] for i in routing.mean(dim=1).argmax(dim=-1).tolist()]


def uninformative_routing(
    routing: torch.Tensor, centroids: torch.Tensor | None = None, tolerance: float = 1e-4
) -> str | None:
    """Why ``routing`` cannot point to a task, or None when it can.

    Routing weights ``[..., layers, experts]`` carry no information about an image's task when they are not finite
    (NaN or infinite), or when in every layer all experts get the same weight up to ``tolerance`` (WEMoE's untrained
    routers give every expert ``lambda_``). With ``centroids`` (``[tasks, ...]``, each task's mean routing, e.g.
    :attr:`RoutingCentroids.centroids`) the routing is also uninformative when every task's images are routed alike:
    no two centroids differ by more than ``tolerance`` in any weight. The reason is a short phrase for messages.
    """
    routing = torch.as_tensor(routing)
    if routing.numel() == 0:
        return "there are no routing weights"
    if not bool(torch.isfinite(routing).all()):
        return "the routing weights are not numbers (NaN or infinite)"
    spread = routing.amax(dim=-1) - routing.amin(dim=-1)  # per layer (and image): the largest gap between experts
    if float(spread.max()) <= tolerance:
        return "the routers give every expert the same weight (they are not adapted yet)"
    if centroids is not None:
        centroids = torch.as_tensor(centroids).reshape(len(centroids), -1)
        if not bool(torch.isfinite(centroids).all()):
            return "the routing of the tasks' test images is not numbers (NaN or infinite)"
        if len(centroids) > 1 and float((centroids.amax(dim=0) - centroids.amin(dim=0)).max()) <= tolerance:
            return "the images of every task are routed alike"
    return None


@dataclass
class RoutingCentroids:
    """The mean routing pattern (layers x experts, flattened) of each task's known images."""

    task_names: list[str]
    centroids: torch.Tensor  # [tasks, L * T]

    @classmethod
    def fit(cls, routing_by_task: Mapping[str, torch.Tensor]) -> RoutingCentroids:
        """Centroids from each task's routing weights ``[N_t, L, T]`` (every task needs at least one image)."""
        empty = [t for t, r in routing_by_task.items() if len(r) == 0]
        if empty:
            raise ValueError(f"No images to learn the routing of task(s) {empty}.")
        names = list(routing_by_task)
        return cls(names, torch.stack([r.reshape(len(r), -1).mean(0) for r in routing_by_task.values()]))

    def distances(self, routing: torch.Tensor) -> torch.Tensor:
        """Euclidean distance of each image's routing ``[N, L, T]`` to each task's centroid: ``[N, tasks]``."""
        return torch.cdist(routing.reshape(len(routing), -1).float(), self.centroids.float())

    def predict(self, routing: torch.Tensor) -> list[str]:
        """The task of the nearest centroid, per image."""
        return [self.task_names[i] for i in self.distances(routing).argmin(dim=-1).tolist()]

    def scores(self, routing: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """A softmax over negative distances ``[N, tasks]`` (how clearly each image sits near one task).

        ``temperature`` defaults to the median distance between centroids (so scores do not depend on the scale).
        """
        d = self.distances(routing)
        if temperature is None:
            between = torch.cdist(self.centroids.float(), self.centroids.float())
            off = between[~torch.eye(len(between), dtype=torch.bool)]
            temperature = float(off.median()) if off.numel() and float(off.median()) > 0 else 1.0
        return torch.softmax(-d / temperature, dim=-1)


@dataclass
class RoutingAnalysis:
    """Features and routing of labelled images from several tasks through one WEMoE tower."""

    task_names: list[str]  # the experts' tasks, in the routers' order
    layers: list[int]  # upscaled block indices, one per routing row
    labels: list[str]  # true task of each image
    features: torch.Tensor  # [N, D]
    routing: torch.Tensor  # [N, L, T]

    def by_task(self) -> dict[str, torch.Tensor]:
        """Routing ``[N_t, L, T]`` of each task's images."""
        labels = np.asarray(self.labels)
        return {t: self.routing[torch.from_numpy(labels == t)] for t in dict.fromkeys(self.labels)}

    def task_average(self) -> torch.Tensor:
        """Mean routing ``[tasks, L, T]`` of each task present, in the order of first appearance."""
        return torch.stack([r.mean(0) for r in self.by_task().values()])

    def dominant_expert(self) -> list[str]:
        """Per image, the task of the expert with the largest layer-averaged routing weight."""
        return guess_task_argmax(self.routing, self.task_names)

    def centroids(self) -> RoutingCentroids:
        """Nearest-centroid task classifier learned from these images' routing."""
        return RoutingCentroids.fit(self.by_task())


def analyse_routing(
    tower: nn.Module, data: Mapping[str, TaskImages], per_task: int | None = None, batch_size: int = 256
) -> RoutingAnalysis:
    """Run (the first ``per_task``) images of every task through ``tower`` and keep their features and routing."""
    layers = require_wemoe(tower)
    config = getattr(tower, "wemoe_config", None)
    task_names = list(config.task_names) if config is not None and config.task_names else list(data)
    chunks = {t: d.images[:per_task] if per_task is not None else d.images for t, d in data.items()}
    labels = [t for t, images in chunks.items() for _ in range(len(images))]
    if not labels:
        raise ValueError("No images to analyse.")
    features, routing = features_and_routing(tower, torch.cat(list(chunks.values())), batch_size)
    return RoutingAnalysis(task_names, layers, labels, features, routing)


def task_average_routing(
    tower: nn.Module, data: Mapping[str, TaskImages], per_task: int | None = None
) -> dict[str, torch.Tensor]:
    """Mean routing ``[layers, experts]`` of each task's images."""
    analysis = analyse_routing(tower, data, per_task)
    return {t: r.mean(0) for t, r in analysis.by_task().items()}


def pca_2d(features: torch.Tensor | np.ndarray) -> np.ndarray:
    """The first two principal components ``[N, 2]`` (sign fixed so the largest loading is positive)."""
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    x = x - x.mean(0)
    if len(x) < 2:
        return np.zeros((len(x), 2))
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    components = v[:2].T
    signs = torch.sign(components[components.abs().argmax(0), torch.arange(components.shape[1])])
    projected = x @ (components * torch.where(signs == 0, 1.0, signs))
    if projected.shape[1] < 2:
        projected = torch.cat([projected, torch.zeros(len(x), 2 - projected.shape[1], dtype=x.dtype)], dim=1)
    return projected.numpy()


def umap_2d(features: torch.Tensor | np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """A 2-D UMAP (umap-learn, cosine metric) of ``features`` ``[N, 2]``; PCA for fewer than 5 points."""
    x = np.asarray(features, dtype=np.float32)
    if len(x) < 5:
        return pca_2d(x)
    import umap  # slow to import (numba): only when asked

    reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(x) - 1), metric="cosine", random_state=seed,
                        n_jobs=1)
    return np.asarray(reducer.fit_transform(x))


def embed_2d(features: torch.Tensor | np.ndarray, method: str = "umap", seed: int = 0) -> np.ndarray:
    """Features ``[N, D]`` mapped to ``[N, 2]`` by ``"umap"`` or ``"pca"``."""
    if method == "umap":
        return umap_2d(features, seed)
    if method == "pca":
        return pca_2d(features)
    raise ValueError(f"Unknown 2-D embedding {method!r}: use 'umap' or 'pca'.")


@torch.no_grad()
def top_k(
    tower: nn.Module, images: torch.Tensor, head: torch.Tensor, classnames: Sequence[str], k: int = 5
) -> list[list[tuple[str, float]]]:
    """Per image, the ``k`` most probable classes and their probabilities under ``head`` (softmax of the logits)."""
    tower.eval()
    return top_k_from_features(tower(images), head, classnames, k)


def top_k_from_features(
    features: torch.Tensor, head: torch.Tensor, classnames: Sequence[str], k: int = 5
) -> list[list[tuple[str, float]]]:
    """:func:`top_k` from image features already computed (e.g. by :func:`features_and_routing`)."""
    if head.shape[0] != len(classnames):
        raise ValueError(f"The head has {head.shape[0]} classes but {len(classnames)} class names were given.")
    probabilities = logits_from_features(features.float(), head.float()).softmax(dim=-1)
    values, indices = stable_top_k(probabilities, min(k, len(classnames)))
    return [[(classnames[i], float(p)) for p, i in zip(vs.tolist(), ix.tolist(), strict=True)]
            for vs, ix in zip(values, indices, strict=True)]
