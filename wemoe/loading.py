"""The one way to load a zoo: :func:`load_zoo` (also ``wemoe.load_zoo``).

A name in :data:`ZOO_LOADERS` (``"pocket"``, ``"pocket-20"``: the small offline zoos shipped under ``assets/``) runs
its loader;
anything else is a spec for ``wemoe.zoo.sources.load_spec``: a preset name (``wemoe.zoo.presets``), the path of a
``.json`` spec file, a mapping of ZooSpec fields or a ZooSpec.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from wemoe.pocket.loader import POCKET20_PATH, load_pocket_zoo
from wemoe.zoo.sources import ProgressFn, load_spec
from wemoe.zoo.zoo import Zoo, ZooSpec

ZooLoader = Callable[[ProgressFn | None], Zoo]
"""A named zoo's loader: ``loader(progress)`` gives the zoo."""


def _pocket(progress: ProgressFn | None) -> Zoo:
    """The shipped pocket zoo, checked against its manifest."""
    return load_pocket_zoo(progress=progress)


def _pocket20(progress: ProgressFn | None) -> Zoo:
    """The shipped twenty-task pocket zoo (``assets/pocket20``), checked against its manifest."""
    return load_pocket_zoo(POCKET20_PATH, progress=progress)


ZOO_LOADERS: dict[str, ZooLoader] = {"pocket": _pocket, "pocket-20": _pocket20}
"""Zoos loaded by name, not from a spec."""


def load_zoo(spec: str | Path | Mapping | ZooSpec, progress: ProgressFn | None = None) -> Zoo:
    """Load a Zoo: a name in :data:`ZOO_LOADERS` (``"pocket"``), a preset name, a ``.json`` spec file, a mapping of
    ZooSpec fields or a ZooSpec.

    ``progress(fraction, message)``, if given, is called as the base and each expert load (fraction in [0, 1]).
    """
    if isinstance(spec, str) and spec in ZOO_LOADERS:
        return ZOO_LOADERS[spec](progress)
    return load_spec(spec, progress)
