"""Push to the Hub from the page: only on a Space with OAuth, only with the signed-in visitor's token."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from app import hub_push
from app.layout import build_demo
from app.session import AppConfig


def _ids(demo: gr.Blocks) -> set[str]:
    return {getattr(block, "elem_id", None) for block in demo.blocks.values()} - {None}


@pytest.fixture
def on_a_space_with_oauth(monkeypatch):
    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("SPACE_ID", "teacher/merge-explorer")
    monkeypatch.setenv("OAUTH_CLIENT_ID", "client-id")
    # what the Hub sets for hf_oauth: true (gradio reads them when it is imported)
    for name, value in (("OAUTH_CLIENT_ID", "client-id"), ("OAUTH_CLIENT_SECRET", "secret"),
                        ("OAUTH_SCOPES", "openid profile write-repos"),
                        ("OPENID_PROVIDER_URL", "https://huggingface.co")):
        monkeypatch.setattr(f"gradio.oauth.{name}", value)


def test_off_a_space_the_page_says_what_pushing_needs(monkeypatch):
    monkeypatch.delenv("SYSTEM", raising=False)
    monkeypatch.setenv("SPACE_ID", "teacher/merge-explorer")  # a Space's name alone is not a Space with sign-in
    monkeypatch.delenv("OAUTH_CLIENT_ID", raising=False)
    ids = _ids(build_demo(AppConfig(samples=8)))
    assert "push-off-space" in ids and not {"push-login", "push-button"} & ids
    with pytest.raises(gr.Error, match="hf_oauth"):
        hub_push.push_merge(SimpleNamespace(), "wemoe", "me/model", SimpleNamespace(token="hf_x"))


def test_on_a_space_with_oauth_the_page_has_sign_in_and_push(on_a_space_with_oauth):
    ids = _ids(build_demo(AppConfig(samples=8)))
    assert {"push-login", "push-repo", "push-button"} <= ids and "push-off-space" not in ids


def test_a_push_acts_only_with_the_visitors_token(on_a_space_with_oauth, merged, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_owner_secret")  # the Space owner's: never used for a visitor's push
    with pytest.raises(gr.Error, match="Sign in with Hugging Face first"):
        hub_push.push_merge(merged, "wemoe", "me/model", None)
    with pytest.raises(gr.Error, match="your-name/model-name"):
        hub_push.push_merge(merged, "wemoe", " ", SimpleNamespace(token="hf_visitor"))
    with pytest.raises(gr.Error, match="user/name"):  # refused before any network call
        hub_push.push_merge(merged, "wemoe", "not a repo", SimpleNamespace(token="hf_visitor"))
    used = {}

    def fake_push(folder, repo, private=False, token=None):
        from pathlib import Path

        used.update(repo=repo, private=private, token=token, files=sorted(p.name for p in Path(folder).iterdir()))
        return f"https://huggingface.co/{repo}"

    monkeypatch.setattr("wemoe.evaluation.push.push", fake_push)
    note = hub_push.push_merge(merged, "task_arithmetic", "me/model", SimpleNamespace(token="hf_visitor"))
    assert "https://huggingface.co/me/model" in note
    assert used["token"] == "hf_visitor" and used["private"] and used["repo"] == "me/model"
    assert used["files"] == sorted(["model.safetensors", "merge_config.json", "results.json", "README.md"])
