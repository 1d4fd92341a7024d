"""A zoo's task names without loading it: what a page lists before any weights are read (the lesson's experts).

A shipped offline zoo (``pocket``, ``pocket-20``) is read from its manifest; a preset or a ``.json`` spec from its
experts. Nothing here touches the network or loads a checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

from wemoe.errors import ZooError
from wemoe.zoo.sources import resolve_spec

ASSETS = Path(__file__).resolve().parent.parent / "assets"
MANIFEST_FOLDERS: dict[str, Path] = {"pocket": ASSETS / "pocket", "pocket-20": ASSETS / "pocket20"}
"""The named offline zoos (``wemoe.loading.ZOO_LOADERS``) and the folders holding their manifests."""


def zoo_task_names(spec: str | Path) -> list[str]:
    """The tasks of the zoo ``spec`` names (a named offline zoo, a preset, a ``.json`` spec file), in its order;
    empty when they cannot be known without loading it (a broken manifest, an unknown name)."""
    name = str(spec)
    if name in MANIFEST_FOLDERS:
        try:
            return [str(t) for t in json.loads((MANIFEST_FOLDERS[name] / "manifest.json").read_text())["tasks"]]
        except (OSError, ValueError, KeyError, TypeError):  # loading the zoo says what is wrong with it
            return []
    try:
        return list(resolve_spec(name).experts)
    except (ZooError, OSError, ValueError, TypeError):
        return []
