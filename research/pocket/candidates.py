"""One loader for every candidate pocket zoo the research scripts look at.

A candidate is either the shipped zoo (``None``), a built zoo folder (one with ``manifest.json``, as written by
``python -m wemoe.pocket.build``), or a research run folder (``/tmp/pocket_runs/<tag>`` by default) holding

- ``config.json`` (optional): the tiny-CLIP open_clip config, when it differs from ``wemoe/pocket/pocket_clip.json``;
- ``clip.safetensors``: the pretrained base CLIP;
- ``<task>.safetensors``: one expert image tower per pocket task.

A run folder's missing files are trained (and cached there) when settings to train them are given.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import wemoe  # noqa: F401  (before open_clip)
from wemoe.pocket import load_pocket_zoo
from wemoe.pocket.loader import MANIFEST
from wemoe.pocket.tasks import TASK_NAMES
from wemoe.pocket.train import ExpertSettings, PretrainSettings, create_pocket_clip, finetune_expert, pretrain
from wemoe.zoo.zoo import Zoo

RUNS = Path("/tmp/pocket_runs")
"""Where the research scripts cache their run folders (``RUNS / tag``)."""


def _save(state: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def load_candidate(
    run: str | Path | None = None,
    pretrain_settings: PretrainSettings | None = None,
    expert_settings: ExpertSettings | None = None,
    config: dict | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> Zoo:
    """The candidate zoo ``run`` names: None (the shipped zoo), a built zoo folder, or a research run folder.

    In a run folder, ``config.json`` wins over ``config`` (which is written there when the folder has none);
    a missing ``clip.safetensors`` is pretrained with ``pretrain_settings`` and a missing expert fine-tuned with
    ``expert_settings`` (the model's random initialisation uses ``seed``), each then saved in the folder. Without
    the settings a missing file raises FileNotFoundError.
    """
    if run is None:
        return load_pocket_zoo()
    root = Path(run)
    if (root / MANIFEST).is_file():
        return load_pocket_zoo(root)
    config_path = root / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
    elif config is not None:
        root.mkdir(parents=True, exist_ok=True)
        config_path.write_text(json.dumps(config))
    clip, preprocess, tokenizer = create_pocket_clip(config, seed=seed)
    clip_path = root / "clip.safetensors"
    if clip_path.is_file():
        clip.load_state_dict(load_file(str(clip_path)))
    elif pretrain_settings is None:
        raise FileNotFoundError(f"{clip_path} is missing: train the candidate with research/pocket/pocket_research.py")
    else:
        start = time.time()
        pretrain(clip, tokenizer, pretrain_settings, log=log)
        log(f"pretraining {time.time() - start:.0f} s")
        _save(clip.state_dict(), clip_path)
    experts = {}
    for task in TASK_NAMES:
        path = root / f"{task}.safetensors"
        if path.is_file():
            experts[task] = load_file(str(path))
        elif expert_settings is None:
            raise FileNotFoundError(f"{path} is missing: train the candidate with research/pocket/pocket_research.py")
        else:
            start = time.time()
            experts[task] = finetune_expert(clip, tokenizer, task, expert_settings, log=log)
            log(f"  {task}: {time.time() - start:.0f} s")
            _save(experts[task], path)
    return Zoo(root.name, clip, experts, preprocess, tokenizer)
