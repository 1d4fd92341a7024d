"""Push a merge to the visitor's own Hugging Face account: on a Space with OAuth only, with the visitor's token only.

A Space whose README header says ``hf_oauth: true`` gets ``OAUTH_CLIENT_ID`` from the Hub, and gradio then offers
"Sign in with Hugging Face" (``gr.LoginButton``) and hands the signed-in visitor's token to an event that asks for a
``gr.OAuthToken``. The push uses that token and nothing else: never the Space owner's ``HF_TOKEN``, which the
library's push would otherwise find (``wemoe.evaluation.push``). Off such a Space the controls are replaced by a line
saying what is needed (and the CLI that does the same from an export).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import gradio as gr

from app import handlers
from app.errors import friendly, refuse
from app.session import Session

OFF_SPACE = ("**Push to the Hub** works on a Hugging Face Space with `hf_oauth: true` in its README header: sign in "
             "there and the merge goes to your own account. Here: tick *With its model card*, export, unzip, then "
             "`python -m wemoe push --from FOLDER --repo your-name/model-name`.")


def oauth_available() -> bool:
    """Whether this app runs on a Space (``SYSTEM=spaces``, ``SPACE_ID``) with OAuth enabled (``OAUTH_CLIENT_ID``, set
    by the Hub for ``hf_oauth: true``); anywhere else gradio would sign in with this machine's own token instead."""
    return bool(os.environ.get("SYSTEM") == "spaces" and os.environ.get("SPACE_ID")
                and os.environ.get("OAUTH_CLIENT_ID"))


def push_merge(session: Session, name: Any, repo: Any, token: Any) -> str:
    """Push merge ``name`` with its model card to ``repo`` (``user/name``) with the signed-in visitor's ``token`` (a
    ``gr.OAuthToken``); returns a line with the repo's address."""
    from wemoe.evaluation.push import push

    if not oauth_available():
        raise refuse("Pushing needs a Hugging Face Space with sign-in (hf_oauth: true). " + OFF_SPACE.split(": ")[-1])
    visitor_token = getattr(token, "token", None)
    if not isinstance(visitor_token, str) or not visitor_token:
        raise refuse("Sign in with Hugging Face first (the button above): the merge goes to your own account.")
    if not isinstance(repo, str) or not repo.strip():
        raise refuse("Repo: enter where to push, as your-name/model-name.")
    with tempfile.TemporaryDirectory(dir=session.workdir) as folder:
        handlers.write_card_folder(session, name, folder)
        with friendly("Pushing to the Hub"):
            url = push(folder, repo.strip(), private=True, token=visitor_token)
    return f"Pushed (private) to [{url}]({url})."


def build_push_controls(session: gr.State, export_name: gr.Dropdown, models: dict) -> None:
    """Sign-in, repo and Push beside Export on a Space with OAuth; elsewhere, the line that says what is needed."""
    if not oauth_available():
        gr.Markdown(OFF_SPACE, elem_id="push-off-space")
        return
    gr.LoginButton(elem_id="push-login")
    repo = gr.Textbox(label="Your model repo (your-name/model-name)", max_lines=1, max_length=96,
                      elem_id="push-repo")
    button = gr.Button("Push to my account", elem_id="push-button")
    note = gr.Markdown(elem_id="push-note")

    def push_event(state, merge, repo_name, token: gr.OAuthToken | None = None):
        return push_merge(state, merge, repo_name, token)

    button.click(push_event, [session, export_name, repo], [note], api_name="push_to_hub", preprocess=False,
                 **models)
