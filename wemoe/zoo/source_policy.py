"""Which sources a visitor may name: where the app serves others, uploads and hub ids, never server paths.

The library's loaders take any path (scripts and the CLI are the operator). An app that serves others (a Hugging
Face Space, or any app listening beyond localhost) passes every source a visitor types through a
:class:`SourcePolicy` first: a custom zoo's base and experts, a custom task's data. In served mode a source is

- the name of a file the visitor uploaded (the app maps it to the upload),
- a Hugging Face hub id (``owner/name``), returned as a :class:`~wemoe.zoo.checkpoints.HubId` that the loaders never
  read as a local path,
- or a path under a folder the operator allowed (``$WEMOE_ALLOWED_PATHS``, folders separated by ``:``), symlinks
  resolved before the check.

Anything else is refused before the disk is touched, with the same message whether or not the path exists: no
``~``, no ``..``, no absolute or relative server path. Locally (``served=False``) every source is taken as today.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from wemoe.errors import WemoeError
from wemoe.zoo.checkpoints import HUB_ID, HubId

ALLOWED_PATHS_ENV = "WEMOE_ALLOWED_PATHS"
"""The environment variable naming the folders (``os.pathsep``-separated) a served app's visitors may name."""


class SourceRefused(WemoeError):
    """A visitor named a server path (or something that is neither an upload nor a hub id)."""


def is_hub_id(text: str) -> bool:
    """Whether ``text`` is a well-formed hub id ``owner/name`` (no ``.`` or ``..`` parts, no leading ``.``)."""
    parts = text.split("/")
    return bool(HUB_ID.match(text)) and not any(p in {".", ".."} or p.startswith(".") for p in parts)


def allowed_roots_from_env() -> tuple[Path, ...]:
    """The folders in ``$WEMOE_ALLOWED_PATHS`` (absolute, resolved); empty when unset."""
    text = os.environ.get(ALLOWED_PATHS_ENV, "")
    return tuple(Path(p).expanduser().resolve() for p in text.split(os.pathsep) if p.strip())


@dataclass(frozen=True)
class SourcePolicy:
    """What a source typed by a user may be. ``served``: the app serves others (paths only under ``roots``)."""

    served: bool = False
    roots: tuple[Path, ...] = ()

    @classmethod
    def for_app(cls, served: bool, roots: Sequence[str | Path] | None = None) -> SourcePolicy:
        """The policy of an app: ``roots`` None reads ``$WEMOE_ALLOWED_PATHS``."""
        found = allowed_roots_from_env() if roots is None else tuple(Path(r).expanduser().resolve() for r in roots)
        return cls(served=served, roots=found)

    def _refuse(self, what: str, text: str, hub: bool = True) -> SourceRefused:
        where = "upload the file"
        if hub:
            where += ", or give a Hugging Face hub id (owner/name)"
        if self.roots:
            where += f", or a path under a folder this server allows ({', '.join(map(str, self.roots))})"
        return SourceRefused(f"{what}: {text!r} is not an uploaded file or a hub id. This app serves others, so it "
                             f"reads no file or folder of the server for them: {where}.")

    def path(self, text: str, what: str, hub: bool = True) -> Path:
        """``text`` as a local path: any path locally; in served mode only a path under an allowed folder.

        The served check is on the text and the resolved path alone; refusals never depend on whether it exists.
        """
        if not self.served:
            return Path(text).expanduser()
        candidate = Path(text)
        if not self.roots or not candidate.is_absolute() or ".." in candidate.parts:
            raise self._refuse(what, text, hub)
        resolved = candidate.resolve()  # symlinks followed: a link inside an allowed folder may not lead out of it
        if not any(resolved == root or root in resolved.parents for root in self.roots):
            raise self._refuse(what, text, hub)
        return resolved

    def source(self, text: str, what: str, uploads: Mapping[str, str] | None = None,
               names: Sequence[str] = ()) -> str | Path:
        """A source typed by a user: an uploaded file's path, ``text`` itself when it is one of ``names`` (an open_clip
        model name or tag), a :class:`HubId`, or a checked path (:meth:`path`).

        Locally it is returned as typed (the library decides between path and hub id, as for scripts).
        """
        text = text.strip()
        if uploads and text in uploads:
            return uploads[text]
        if not self.served or text in names:
            return text
        if is_hub_id(text):
            return HubId(text)
        return self.path(text, what)

    def base_model(self, text: str) -> str:
        """The custom zoo's base model field: an open_clip name, ``hf-hub:owner/name``, or (locally, or under an
        allowed folder) ``local-dir:PATH`` or a folder."""
        text = text.strip()
        if not self.served:
            return text
        if text.startswith("hf-hub:"):
            if not is_hub_id(text.removeprefix("hf-hub:")):
                raise SourceRefused(f"Base model: {text!r} is not hf-hub:owner/name.")
            return text
        if text.startswith("local-dir:"):
            return "local-dir:" + str(self.path(text.removeprefix("local-dir:"), "Base model", hub=False))
        if "/" in text or "\\" in text or text.startswith((".", "~")):
            return str(self.path(text, "Base model", hub=False))
        return text  # an open_clip model name: create_clip refuses unknown ones

    def base_weights(self, text: str) -> str | Path:
        """The custom zoo's base weights field: an open_clip tag (a plain word), a hub id, or a checked path."""
        text = text.strip()
        if not self.served or not text or ("/" not in text and "\\" not in text and not text.startswith((".", "~"))):
            return text
        if is_hub_id(text):
            return HubId(text)
        return self.path(text, "Base weights")

    def task_source(self, text: str, what: str, uploads: Mapping[str, str] | None = None) -> str:
        """One custom task's source line (``wemoe.tasks.readers.task_from_source``) with its first word checked: an
        uploaded file's name becomes its path; in served mode ``hf:`` must name a hub id and any other source must be a
        path under an allowed folder (image folders, zips and parquet files come as uploads)."""
        try:
            words = shlex.split(text)
        except ValueError:
            return text  # task_from_source says what is wrong with the line
        if not words:
            return text
        first = words[0]
        if uploads and first in uploads:
            words[0] = uploads[first]
        elif not self.served:
            return text
        elif first.startswith("hf:"):
            if not is_hub_id(first.removeprefix("hf:")):
                raise SourceRefused(f"{what}: {first!r} is not hf:owner/name (a Hugging Face dataset id).")
        else:
            words[0] = str(self.path(first, what, hub=False)) if self.roots else self._refuse_task(what, first)
        return shlex.join(words)

    def _refuse_task(self, what: str, text: str) -> str:
        raise SourceRefused(f"{what}: {text!r} is not an uploaded file or a hub dataset. This app serves others, so it "
                            "reads no file or folder of the server for them: upload a .zip of the image folder or a "
                            ".parquet file, or give hf:owner/name.")
