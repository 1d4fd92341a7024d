"""A zoo and its merges for one user (:class:`~wemoe.workbench.workbench.Workbench`), the loaded zoo that sessions
share read-only, and the cache of deterministic results.

``from wemoe.workbench import Workbench`` works too: the name is imported on first use, so importing a module of this
package loads no model code.
"""


def __getattr__(name: str) -> object:
    """``Workbench``, imported on first use."""
    if name == "Workbench":
        from wemoe.workbench.workbench import Workbench

        return Workbench
    raise AttributeError(f"module 'wemoe.workbench' has no attribute {name!r}")
