"""The research scripts' one candidate loader (research.pocket.candidates) on small run folders."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import wemoe  # noqa: F401  (before open_clip)
from research.pocket.candidates import load_candidate
from wemoe.pocket.tasks import TASK_NAMES
from wemoe.pocket.train import create_pocket_clip, load_config


def _write_run(root, config=None, skip: str | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """A run folder: a random tiny CLIP and one noisy expert per task (all but ``skip``); returns what was saved."""
    clip, _, _ = create_pocket_clip(config, seed=5)
    root.mkdir(parents=True, exist_ok=True)
    saved = {"clip": {k: v.contiguous() for k, v in clip.state_dict().items()}}
    save_file(saved["clip"], str(root / "clip.safetensors"))
    generator = torch.Generator().manual_seed(1)
    for task in TASK_NAMES:
        if task != skip:
            state = clip.visual.state_dict()
            saved[task] = {k: v + 0.01 * torch.randn(v.shape, generator=generator) for k, v in state.items()}
            save_file(saved[task], str(root / f"{task}.safetensors"))
    return saved


def test_a_run_folder_loads_its_clip_and_experts(tmp_path):
    saved = _write_run(tmp_path / "r1")
    zoo = load_candidate(tmp_path / "r1")
    assert zoo.name == "r1" and zoo.task_names == list(TASK_NAMES)
    for key, value in zoo.clip.state_dict().items():
        assert torch.equal(value, saved["clip"][key])
    for task in TASK_NAMES:
        assert all(torch.equal(zoo.experts[task][k], v) for k, v in saved[task].items())


def test_the_config_given_is_written_once_and_read_back(tmp_path):
    config = load_config()
    config["vision_cfg"]["layers"] = 2  # not the shipped config: loading under it would not fit
    _write_run(tmp_path / "small", config)
    assert len(load_candidate(tmp_path / "small", config=config).visual.transformer.resblocks) == 2
    assert json.loads((tmp_path / "small" / "config.json").read_text()) == config
    assert len(load_candidate(tmp_path / "small").visual.transformer.resblocks) == 2  # now from config.json


def test_a_missing_file_without_settings_to_train_it_is_named(tmp_path):
    _write_run(tmp_path / "r2", skip=TASK_NAMES[-1])
    with pytest.raises(FileNotFoundError, match=f"{TASK_NAMES[-1]}.safetensors is missing"):
        load_candidate(tmp_path / "r2")
