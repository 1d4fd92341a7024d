"""Make ``import torchvision`` (and so ``import open_clip``) work with a CPU-only torch.

Why this exists: ``torchvision==0.28.0`` is pinned (an unpinned torchvision pulls a newer CUDA torch and GBs of
packages), but its PyPI wheel is a CUDA build. Paired with the CPU build of ``torch==2.13.0`` its compiled
operators fail to load, and ``torchvision/_meta_registrations.py`` then raises
``RuntimeError: operator torchvision::nms does not exist`` while registering fake kernels for ``nms`` and ``qnms``.

What it does: only when that exact error happens, it defines the two missing operator *schemas* through
``torch.library`` (no kernels: calling them still fails, and nothing in this project calls them; image decoding
goes through PIL, not ``torchvision.io``), drops the half-imported modules, and imports torchvision again.
Where torchvision imports cleanly (a CUDA machine, Hugging Face Spaces) it does nothing.

Import this module before ``open_clip``; ``wemoe/__init__.py`` does so.
"""

from __future__ import annotations

import sys

import torch

_MISSING_OPERATOR = "operator torchvision::nms does not exist"
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
# Kept alive for the life of the process: a torch.library.Library drops its definitions when collected.
_LIBRARY: torch.library.Library | None = None
patched = False
"""True when the schemas had to be defined (a CPU torch with the CUDA torchvision wheel)."""


def _drop_partial_import() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def ensure_torchvision() -> None:
    """Import torchvision, defining the ``nms``/``qnms`` schemas first if (and only if) they are missing."""
    global _LIBRARY, patched
    try:
        import torchvision  # noqa: F401
        return
    except RuntimeError as error:
        if _MISSING_OPERATOR not in str(error):
            raise
    _drop_partial_import()
    _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS.values():
        _LIBRARY.define(schema)
    patched = True
    import torchvision  # noqa: F401


ensure_torchvision()
