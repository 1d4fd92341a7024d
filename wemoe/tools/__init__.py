"""Stateless tools for scripts and assistants: each call names everything it needs and returns plain JSON-ready data.

- :class:`~wemoe.tools.toolbox.Toolbox`: what the calls of one process share: the zoos they may load (by name only,
  never a path), the loaded zoos and one result cache, the image limits.
- :mod:`wemoe.tools.calls`: the tools themselves (list zoos, experts and methods; merge, adapt and evaluate in one
  call; classify an image; the analysis views), each ``tool(arguments..., box=toolbox)``. Their docstrings are the
  tool descriptions an assistant reads (the app serves them over MCP: ``app/mcp_tools.py``).
- :mod:`wemoe.tools.images`: an image given as base64, a URL (bounded) or a file under an allowed folder.

``from wemoe.tools import Toolbox`` works too: the name is imported on first use, so importing this package loads no
model code.
"""


def __getattr__(name: str) -> object:
    """``Toolbox``, imported on first use."""
    if name == "Toolbox":
        from wemoe.tools.toolbox import Toolbox

        return Toolbox
    raise AttributeError(f"module 'wemoe.tools' has no attribute {name!r}")
