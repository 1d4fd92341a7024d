"""wemoe: merge fine-tuned CLIP image towers by task arithmetic, TIES, AdaMerging and WEMoE.

The library behind the merge explorer. It never imports gradio; everything the app does is available here
and through ``python -m wemoe``.
"""

from wemoe import _torchvision_compat  # noqa: F401  (must run before anything imports open_clip)

__version__ = "0.1.0"
