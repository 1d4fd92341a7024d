"""The merge explorer's user interface: Gradio layout, event handlers, plotly figures and per-session state.

The UI holds no merge math: it calls the ``wemoe`` library. ``build_demo()`` returns the (unlaunched) Blocks.
"""

from app.layout import build_demo
from app.session import AppConfig, Session

__all__ = ["AppConfig", "Session", "build_demo"]
