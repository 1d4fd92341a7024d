"""Push an exported merge folder (``wemoe.evaluation.card``) to the Hugging Face Hub, or say what a push would do.

The token is ``huggingface_hub``'s own (``hf auth login``) or ``$HF_TOKEN``, or the one given; it never appears in a
message. A repo name that is not ``user/name`` is refused before any network call; every failure of the push itself
(no network, offline mode, a bad token, no rights) is one :class:`~wemoe.errors.WemoeError` saying what to do.
"""

from __future__ import annotations

from pathlib import Path

from wemoe.errors import WemoeError
from wemoe.evaluation.card import CARD, WEIGHTS
from wemoe.zoo.source_policy import is_hub_id


def check_folder(folder: str | Path) -> Path:
    """``folder`` if it holds an exported merge (weights and card), else a WemoeError saying how to make one."""
    folder = Path(folder)
    missing = [name for name in (WEIGHTS, CARD) if not (folder / name).is_file()]
    if missing:
        raise WemoeError(f"{str(folder)!r} is not an exported merge (missing {', '.join(missing)}): make one with "
                         "`python -m wemoe merge ... --out FOLDER`.")
    return folder


def dry_run(folder: str | Path, repo: str) -> str:
    """What :func:`push` would upload: the files with their sizes, then the card."""
    folder = check_folder(folder)
    _check_repo(repo)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    listing = "\n".join(f"  {p.relative_to(folder)}  ({p.stat().st_size:,} bytes)" for p in files)
    return f"would push to https://huggingface.co/{repo}:\n{listing}\n\n{(folder / CARD).read_text()}"


def push(folder: str | Path, repo: str, private: bool = False, token: str | None = None) -> str:
    """Create (or reuse) the model repo ``repo`` and upload ``folder`` to it; returns the repo's URL."""
    folder = check_folder(folder)
    _check_repo(repo)
    from huggingface_hub import HfApi

    try:
        api = HfApi(token=token)
        api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model",
                          commit_message="Upload a merge made with the merge explorer (wemoe)")
    except Exception as error:  # noqa: BLE001 - huggingface_hub raises many kinds (HTTP, offline, token, OS)
        reason = " ".join(str(error).split())[:300]
        if token:
            reason = reason.replace(token, "***")
        raise WemoeError(f"Could not push to {repo!r} ({type(error).__name__}: {reason}). Check the network, log in "
                         "with `hf auth login` or set HF_TOKEN to a token with write access, and try again.") from None
    return f"https://huggingface.co/{repo}"


def _check_repo(repo: str) -> None:
    if not isinstance(repo, str) or not is_hub_id(repo):
        raise WemoeError(f"--repo must be user/name (a Hugging Face model repo), got {repo!r}.")
