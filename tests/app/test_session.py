"""A session (app/session.py): the pocket zoo's label, and two sessions that share no models."""

import json

from app import handlers
from app.session import Session


def test_the_pocket_label_counts_its_experts(tmp_path):
    from app.session import default_zoos, pocket_label
    from wemoe.pocket.loader import DEFAULT_PATH, read_manifest

    if (DEFAULT_PATH / "manifest.json").is_file():
        count = len(read_manifest()["tasks"])
        assert f"tiny CLIP + {count} experts" in default_zoos()["pocket"][0]
    (tmp_path / "manifest.json").write_text(json.dumps({"tasks": ["a", "b", "c"]}))
    assert "tiny CLIP + 3 experts" in pocket_label(tmp_path)
    assert "one expert per pocket task" in pocket_label(tmp_path / "missing")


def test_two_sessions_do_not_share_models(config):
    a, b = Session(), Session()
    handlers.load_zoo(a, config, "tiny")
    handlers.load_zoo(b, config, "tiny2")
    handlers.merge(a, ["task_arithmetic"], {})
    assert b.bench.merges == {} and a.bench.zoo is not b.bench.zoo
    assert a.workdir != b.workdir
    folder = a.workdir
    a.close()
    assert not folder.exists() and a.bench is None
