"""Routing per patch: each token's routing weights in one WEMoE layer, before the router averages them.

:class:`wemoe.moe.layer.Router` maps every MLP-input token of an image to ``T`` weights and averages them over the
tokens; the average is the image's routing. Here the per-token weights are kept (``capture_routing(per_token=True)``),
so a view can show which part of the image pulls the routing towards which expert. Token 0 is the class token; the rest
are the patches, row by row (``patch_grid`` lays them out as the image's ``grid x grid`` patches).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from wemoe.errors import WemoeError
from wemoe.moe.routing import require_wemoe
from wemoe.moe.routing_hooks import capture_routing


@dataclass
class PatchRouting:
    """Per-token routing weights of images in one layer: ``weights[n, token, expert]`` (token 0: the class token)."""

    layer: int
    task_names: list[str]
    weights: torch.Tensor  # [N, tokens, T]

    @property
    def image_routing(self) -> torch.Tensor:
        """The images' routing in this layer ``[N, T]``: the token average (what the MLP is built from)."""
        return self.weights.mean(dim=1)

    def patch_grid(self) -> torch.Tensor:
        """The patch tokens' weights as the image's patch grid ``[N, grid, grid, T]`` (class token left out)."""
        patches = self.weights[:, 1:]
        grid = math.isqrt(patches.shape[1])
        if grid * grid != patches.shape[1]:
            raise ValueError(f"{patches.shape[1]} patch tokens do not form a square grid.")
        return patches.reshape(len(patches), grid, grid, -1)

    def dominant_expert(self) -> torch.Tensor:
        """Per image and patch, the index of the expert with the largest weight ``[N, grid, grid]``."""
        return self.patch_grid().argmax(dim=-1)

    def to_dict(self, image: int = 0) -> dict:
        """One image's patch routing as plain lists (JSON-ready)."""
        grid = self.patch_grid()[image]
        return {
            "layer": self.layer,
            "experts": self.task_names,
            "class_token": [round(float(v), 6) for v in self.weights[image, 0]],
            "patches": [[[round(float(v), 6) for v in cell] for cell in row] for row in grid],
            "dominant": [[self.task_names[i] for i in row] for row in self.dominant_expert()[image].tolist()],
            "image_routing": [round(float(v), 6) for v in self.image_routing[image]],
        }


@torch.no_grad()
def patch_routing(tower: nn.Module, images: torch.Tensor, layer: int | None = None) -> PatchRouting:
    """Per-token routing weights of preprocessed ``images`` ``[N, 3, H, W]`` in the upscaled block ``layer``
    (default: the last upscaled block; negative indices count from the last upscaled block)."""
    layers = require_wemoe(tower)
    chosen = _layer(layers, layer)
    tower.eval()
    with capture_routing(tower, per_token=True) as record:
        tower(images)
    config = getattr(tower, "wemoe_config", None)
    experts = record.layers[chosen].shape[-1]
    names = (list(config.task_names) if config is not None and config.task_names
             else [f"expert{i}" for i in range(experts)])
    return PatchRouting(chosen, names, record.layers[chosen].float())


def _layer(layers: Sequence[int], layer: int | None) -> int:
    if layer is None:
        return layers[-1]
    if layer in layers:
        return layer
    if layer < 0 and -len(layers) <= layer:
        return layers[layer]
    raise WemoeError(f"Block {layer} has no router: the upscaled blocks are {', '.join(map(str, layers))} (or -1 to "
                     f"-{len(layers)}, counted from the last).")
