"""Loading the shipped pocket zoo (``assets/pocket``): check every file against the manifest, then build the Zoo.

The folder holds ``manifest.json`` (settings, seeds, measured accuracies and the sha256 of every other file), the
open_clip config ``pocket_clip.json``, the base CLIP ``base.safetensors`` and one expert per task under ``experts/``
(stored as float16, loaded as float32): a whole image tower (``assets/pocket``), or only the tensors the expert
changed (``assets/pocket20``: its last two blocks' MLPs), the rest then taken from the base's image tower.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file

import wemoe.pocket.tasks  # noqa: F401  (registers the pocket tasks the experts belong to)
from wemoe.errors import ZooError
from wemoe.zoo.clip_models import create_clip
from wemoe.zoo.zoo import Zoo

MODEL_NAME = "pocket-clip"
"""The name the pocket CLIP's open_clip config is registered under."""
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "assets" / "pocket"
POCKET20_PATH = DEFAULT_PATH.parent / "pocket20"
"""The shipped twenty-task zoo (``pocket-20``)."""
MANIFEST = "manifest.json"
REBUILD_HINT = "Rebuild it with `python -m wemoe.pocket.build --force` (or restore the folder from git)."


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: str | Path = DEFAULT_PATH) -> dict:
    """The manifest of a pocket zoo folder (no file checks)."""
    manifest_path = Path(path) / MANIFEST
    if not manifest_path.is_file():
        raise ZooError(f"No pocket zoo at {str(path)!r}: {MANIFEST} is missing. {REBUILD_HINT}")
    try:
        return json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise ZooError(f"The pocket zoo manifest {str(manifest_path)!r} is not valid JSON ({error}). "
                       f"{REBUILD_HINT}") from error


def verify(path: str | Path = DEFAULT_PATH) -> dict:
    """Check that every file listed in the manifest exists with its recorded sha256; return the manifest.

    Raises a ZooError naming the first missing or changed file.
    """
    root = Path(path)
    manifest = read_manifest(root)
    files = manifest.get("files")
    if not files:
        raise ZooError(f"The pocket zoo manifest in {str(root)!r} lists no files. {REBUILD_HINT}")
    for name, entry in files.items():
        file = root / name
        if not file.is_file():
            raise ZooError(f"The pocket zoo in {str(root)!r} is incomplete: {name} is missing. {REBUILD_HINT}")
        actual = sha256(file)
        if actual != entry["sha256"]:
            raise ZooError(
                f"The pocket zoo file {name} in {str(root)!r} does not match its manifest "
                f"(sha256 {actual[:12]}... instead of {entry['sha256'][:12]}...): it was changed or damaged. "
                f"{REBUILD_HINT}"
            )
    return manifest


def _as_float32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if torch.is_floating_point(v) else v for k, v in state.items()}


class _NotRandomInit(logging.Filter):
    """Drops open_clip's 'No pretrained weights loaded ... initialized randomly' (its root-logger warning)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No pretrained weights loaded for model")


@contextlib.contextmanager
def _quiet_random_init() -> Iterator[None]:
    """Silence only open_clip's random-initialisation warning, only inside the block."""
    quiet = _NotRandomInit()
    logging.root.addFilter(quiet)
    try:
        yield
    finally:
        logging.root.removeFilter(quiet)


def _expert_tower(stored: dict[str, torch.Tensor], base_tower: dict[str, torch.Tensor], task: str,
                  root: Path) -> dict[str, torch.Tensor]:
    """An expert's whole image tower: what its file stores (every tensor, or only those it changed), the rest from the
    base's image tower."""
    unknown = sorted(set(stored) - set(base_tower))
    if unknown:
        raise ZooError(f"The pocket zoo expert {task!r} in {str(root)!r} holds tensors the image tower does not have "
                       f"({', '.join(unknown[:3])}). {REBUILD_HINT}")
    return {k: stored[k] if k in stored else v.clone() for k, v in base_tower.items()}


def load_pocket_zoo(path: str | Path = DEFAULT_PATH, progress: Callable[[float, str], None] | None = None) -> Zoo:
    """The pocket zoo in ``path`` (default: the shipped ``assets/pocket``), checked against its manifest."""
    report = progress or (lambda fraction, message: None)
    root = Path(path)
    report(0.0, f"Checking the pocket zoo in {root}")
    manifest = verify(root)
    config = json.loads((root / manifest["config"]).read_text())
    with _quiet_random_init():  # the base weights are loaded on the next line
        clip, preprocess, tokenizer = create_clip(MODEL_NAME, None, False, config)
    clip.load_state_dict(_as_float32(load_file(str(root / manifest["base"]))))
    tasks = manifest["tasks"]
    base_tower = {k: v.detach().clone() for k, v in clip.visual.state_dict().items()}
    experts = {}
    for i, task in enumerate(tasks, start=1):
        report(i / (len(tasks) + 1), f"Loading expert {task!r} ({i}/{len(tasks)})")
        experts[task] = _expert_tower(_as_float32(load_file(str(root / manifest["experts"][task]))), base_tower,
                                      task, root)
    zoo = Zoo(
        name=manifest.get("name", "pocket"),
        clip=clip,
        experts=experts,
        preprocess=preprocess,
        tokenizer=tokenizer,
        description=manifest.get("description", "The pocket zoo: a tiny CLIP and one expert per pocket task."),
        info={"model": MODEL_NAME, "pretrained": str(root / manifest["base"]), "manifest": manifest},
    )
    report(1.0, f"Loaded the {zoo.name} zoo: {len(experts)} experts")
    return zoo
