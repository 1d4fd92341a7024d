"""The page's default zoo is the operator's choice: ``app.py --zoo`` (or $MERGE_EXPLORER_ZOO) names the pocket zoo, a
preset or a .json zoo spec file, which the lesson and the warm-up then use (#31)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from app.session import zoo_choices

ROOT = Path(__file__).resolve().parents[2]


def _app_module():
    spec = importlib.util.spec_from_file_location("app_main_zoo", ROOT / "app.py")  # app.py, not the app package
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_default_zoo_is_pocket_a_preset_or_from_the_environment(monkeypatch):
    app_main = _app_module()
    monkeypatch.delenv("MERGE_EXPLORER_ZOO", raising=False)
    assert app_main.make_config(app_main.parse_args([])).default_zoo == "pocket"
    config = app_main.make_config(app_main.parse_args(["--zoo", "vit-b-32-8tasks"]))
    assert config.default_zoo == "vit-b-32-8tasks" and "pocket" in config.zoos
    monkeypatch.setenv("MERGE_EXPLORER_ZOO", "vit-l-14-8tasks")
    assert app_main.make_config(app_main.parse_args([])).default_zoo == "vit-l-14-8tasks"


def test_a_spec_file_is_offered_under_its_name_and_loads_that_file(tmp_path, monkeypatch):
    import wemoe.loading

    spec = tmp_path / "zoo.json"
    spec.write_text(json.dumps({"name": "my-standin", "model": "ViT-B-32", "description": "a test zoo"}))
    zoos, default = zoo_choices(str(spec))
    assert default == "my-standin" and {"pocket", "vit-b-32-8tasks", "my-standin"} <= set(zoos)
    assert "a test zoo" in zoos["my-standin"][0]
    asked = []
    monkeypatch.setattr(wemoe.loading, "load_zoo", lambda given, progress=None: asked.append(given) or "zoo")
    assert zoos["my-standin"][1](lambda fraction, message: None) == ("zoo", None)
    assert asked == [str(spec)]
    # a spec named like a choice already there (or the custom panel) keeps both, told apart by its file
    spec.write_text(json.dumps({"name": "pocket", "model": "ViT-B-32"}))
    zoos, default = zoo_choices(str(spec))
    assert default == "pocket (zoo.json)" and "pocket" in zoos


def test_an_unknown_zoo_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="choose one of pocket, vit-b-32-8tasks"):
        zoo_choices("no-such-zoo")
    (tmp_path / "broken.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="is not a JSON object"):
        zoo_choices(str(tmp_path / "broken.json"))
