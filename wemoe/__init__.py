"""wemoe: merge fine-tuned CLIP image towers by task arithmetic, TIES, AdaMerging and WEMoE.

The library behind the merge explorer. It never imports gradio; everything the app does is available here
and through ``python -m wemoe``.
"""

import os

# Idle OpenMP threads spin by default; on a shared 2-core machine that made adaptation steps ~5x slower (measured).
# Only effective if torch is not imported yet; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from wemoe import _torchvision_compat  # noqa: E402, F401  (must run before anything imports open_clip)

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``wemoe.load_zoo`` (``wemoe.loading.load_zoo``), imported on first use so ``import wemoe`` stays light."""
    if name == "load_zoo":
        from wemoe.loading import load_zoo

        return load_zoo
    raise AttributeError(f"module 'wemoe' has no attribute {name!r}")
