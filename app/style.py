"""The page's look: its stylesheet (``app/style.css``), handed to every launch of the app (gradio 6 takes a page's CSS
at ``launch``, not in ``gr.Blocks``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

STYLESHEET = Path(__file__).resolve().parent / "style.css"


def launch_style() -> dict[str, Any]:
    """``Blocks.launch`` keywords that give the page its look (focus rings, buttons, plots in dark mode)."""
    return {"css_paths": [STYLESHEET]}
