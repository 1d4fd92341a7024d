"""An exported merge folder: weights, config, results and a model card that names the command that makes it again;
and pushing it to the Hub (dry run, and the failures that must be one clear message) (#32 items 3, 4)."""

from __future__ import annotations

import json
import shlex

import pytest
import torch
from huggingface_hub import ModelCard

from tests.helpers import tiny_clip
from wemoe.__main__ import main
from wemoe.evaluation.card import CARD_FILES
from wemoe.evaluation.export import load_wemoe
from wemoe.methods import get_method

import open_clip  # after the imports above: wemoe's torchvision shim first  # isort: skip


def _export(folder, *extra):
    argv = ["merge", "--zoo", "tiny", "--method", *extra, "--out", str(folder)]
    assert main(argv) == 0
    return folder


def test_a_static_merge_exports_a_folder_with_its_card(tiny_cli_zoo, tmp_path):
    folder = _export(tmp_path / "ta", "task_arithmetic", "--param", "task_arithmetic.lambda=0.4")
    assert sorted(p.name for p in folder.iterdir()) == sorted(CARD_FILES)
    card = ModelCard.load(folder / "README.md")
    assert {"merge", "model-merging", "clip", "task-arithmetic"} <= set(card.data.tags)
    assert card.data.license == "mit" and card.data.library_name == "open_clip"
    results = json.loads((folder / "results.json").read_text())
    config = json.loads((folder / "merge_config.json").read_text())
    assert config["method"] == "task_arithmetic" and config["params"] == {"lambda": 0.4}
    assert config["experts"] == {"task0": "in memory", "task1": "in memory"} and config["adaptation"] is None
    assert results["merge"] == config and list(results["methods"]) == ["pretrained", "experts", "task_arithmetic"]
    average = results["methods"]["task_arithmetic"]["average"]
    assert f"{average:.2f}" in card.text and config["command"] in card.text
    # the folder alone: open_clip reads the weights back into the merged model
    clip = tiny_clip(seed=99)[0]
    open_clip.load_checkpoint(clip, str(folder / "model.safetensors"))
    merged = get_method("task_arithmetic")(tiny_cli_zoo, **{"lambda": 0.4})
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(clip.visual(images), merged(images))


def test_the_cards_command_makes_the_same_table_again(tiny_cli_zoo, tmp_path):
    folder = _export(tmp_path / "first", "ties")
    command = json.loads((folder / "merge_config.json").read_text())["command"]
    argv = shlex.split(command)[3:]  # after "python -m wemoe"
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    assert main(argv) == 0
    first, again = (json.loads((tmp_path / d / "results.json").read_text())["methods"] for d in ("first", "again"))
    assert first == again


def test_a_per_matrix_rule_exports_the_attention_layout_it_saw(tiny_cli_zoo, tmp_path):
    config = json.loads((_export(tmp_path / "iso", "iso_c") / "merge_config.json").read_text())
    assert config["params"]["attention"] == "source"
    assert config["attention"] == "fused" and config["source_layout"] == "fused"  # open_clip experts


def test_an_adapted_wemoe_exports_its_routers_and_its_adaptation(tiny_cli_zoo, tmp_path):
    folder = _export(tmp_path / "wemoe", "wemoe", "--adapt-steps", "2", "--per-task", "3")
    config = json.loads((folder / "merge_config.json").read_text())
    assert config["adaptation"]["steps"] == 2 and config["adaptation"]["per_task"] == 3
    assert "load_wemoe" in (folder / "README.md").read_text()
    tower = load_wemoe(folder / "model.safetensors", tiny_cli_zoo.visual)
    assert tower is not None


def test_push_dry_run_lists_the_files_and_prints_the_card(tiny_cli_zoo, tmp_path, capsys):
    folder = _export(tmp_path / "ta", "task_arithmetic")
    capsys.readouterr()
    assert main(["push", "--from", str(folder), "--repo", "someone/my-merge", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would push to https://huggingface.co/someone/my-merge" in out
    assert all(name in out for name in CARD_FILES) and "model-merging" in out


@pytest.mark.parametrize(("repo", "message"), [("not a repo", "must be user/name"), ("../etc", "must be user/name"),
                                                ("someone/my-merge", "Could not push")])
def test_a_failed_push_is_one_message_and_exit_2(tiny_cli_zoo, tmp_path, capsys, monkeypatch, repo, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = _export(tmp_path / "ta", "task_arithmetic")
    capsys.readouterr()
    assert main(["push", "--from", str(folder), "--repo", repo, "--private"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["push", "--from", str(tmp_path / "nothing"), "--repo", "a/b", "--dry-run"]) == 2
