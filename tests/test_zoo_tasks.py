"""A zoo's task names without loading it: the pocket manifest, every preset, a spec file, and nothing when unknown."""

import json

import pytest

from wemoe import zoo_tasks
from wemoe.pocket.loader import POCKET20_PATH, read_manifest
from wemoe.zoo.presets import PRESETS
from wemoe.zoo_tasks import zoo_task_names


def test_the_pocket_zoo_lists_its_manifest_tasks():
    assert zoo_task_names("pocket") == read_manifest()["tasks"]
    assert len(zoo_task_names("pocket")) == 8
    twenty = zoo_task_names("pocket-20")
    assert twenty == read_manifest(POCKET20_PATH)["tasks"] and len(twenty) == 20


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_lists_its_experts_tasks_in_order(name):
    names = zoo_task_names(name)
    assert names == list(PRESETS[name].experts) and len(names) == int(name.split("-")[-1].removesuffix("tasks"))


def test_a_spec_file_lists_its_experts_and_the_unknown_lists_nothing(tmp_path, monkeypatch):
    spec = tmp_path / "mine.json"
    spec.write_text(json.dumps({"model": "ViT-B-32", "experts": {"cars": "a/b", "dtd": "c/d"}}))
    assert zoo_task_names(spec) == ["cars", "dtd"]
    assert zoo_task_names("no-such-zoo") == [] and zoo_task_names(tmp_path / "missing.json") == []
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    monkeypatch.setitem(zoo_tasks.MANIFEST_FOLDERS, "pocket", tmp_path / "broken")
    assert zoo_task_names("pocket") == []


def test_the_lesson_offers_a_preset_zoos_experts_before_loading_it():
    from app.lesson_page import default_tasks
    from app.session import AppConfig

    assert default_tasks(AppConfig(default_zoo="vit-b-16-14tasks")) == list(PRESETS["vit-b-16-14tasks"].experts)
    assert default_tasks(AppConfig()) == read_manifest()["tasks"]
