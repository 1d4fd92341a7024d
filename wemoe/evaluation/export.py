"""Save and reload merged models as safetensors.

- A static merge (task arithmetic, TIES, AdaMerging's current weights...) is saved as a full open_clip CLIP state
  dict (the zoo's text tower + the merged image tower), loadable with
  ``open_clip.create_model(<architecture>, pretrained="merged.safetensors")``.
- A WEMoE model is saved as the upscaled tower's state dict (merged non-MLP weights, pretrained MLPs, stacked MLP
  task vectors or, with ``rank`` > 0, their low-rank factors, routers) with its WEMoEConfig in the file's metadata;
  :func:`load_wemoe` rebuilds it on a base tower.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from wemoe.adaptation.adaptive import routes, static_form
from wemoe.errors import ZooError
from wemoe.moe.layer import WEMoEConfig, moe_layers, moe_mlp

FORMAT_KEY = "wemoe_format"


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def save_model(clip: nn.Module, model: nn.Module, path: str | Path) -> Path:
    """Save any merge in its format: a routed (WEMoE) model with :func:`save_wemoe`, any other as a full CLIP."""
    return save_wemoe(model, path) if routes(model) else save_static(clip, model, path)


def save_static(clip: nn.Module, tower: nn.Module, path: str | Path) -> Path:
    """Save ``clip`` with its image tower replaced by ``tower``'s static form (an open_clip-loadable safetensors
    file)."""
    tower = static_form(tower)
    state = {k: v for k, v in clip.state_dict().items() if not k.startswith("visual.")}
    state.update({f"visual.{k}": v for k, v in tower.state_dict().items()})
    save_file(_contiguous(state), str(path), metadata={FORMAT_KEY: "open_clip"})
    return Path(path)


def save_wemoe(tower: nn.Module, path: str | Path) -> Path:
    """Save a WEMoE tower (routers + task vectors + merged weights) with its config in the metadata."""
    config: WEMoEConfig = tower.wemoe_config
    metadata = {FORMAT_KEY: "wemoe", "config": json.dumps(config.to_dict())}
    save_file(_contiguous(tower.state_dict()), str(path), metadata=metadata)
    return Path(path)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata header of a safetensors file."""
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


def load_wemoe(path: str | Path, base_visual: nn.Module) -> nn.Module:
    """Rebuild a saved WEMoE tower on a copy of ``base_visual`` (the zoo's pretrained image tower)."""
    metadata = read_metadata(path)
    if metadata.get(FORMAT_KEY) != "wemoe":
        raise ZooError(f"{path} is not a WEMoE model file (saved by wemoe.evaluation.export.save_wemoe).")
    config = WEMoEConfig.from_dict(json.loads(metadata["config"]))  # also files of older versions
    tower = copy.deepcopy(base_visual)
    blocks = tower.transformer.resblocks
    experts = len(config.task_names)
    for index in range(len(blocks)) if config.blocks is None else config.blocks:
        placeholder = [blocks[index].mlp.state_dict()] * experts  # shapes only; load_state_dict fills the values
        blocks[index].mlp = moe_mlp(blocks[index].mlp, placeholder, config)  # exact, or low-rank (config.rank)
    try:
        tower.load_state_dict(load_file(str(path)))
    except RuntimeError as error:
        raise ZooError(f"{path} does not fit this base model: {error}") from None
    tower.eval().requires_grad_(False)
    for layer in moe_layers(tower).values():
        layer.router.requires_grad_(True)
    tower.wemoe_config = config
    return tower
