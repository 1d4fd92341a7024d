"""Errors a user can act on. Each message says what was wrong and what to do."""


class WemoeError(ValueError):
    """Base class of every error the library raises for bad input."""


class ZooError(WemoeError):
    """A model zoo could not be loaded: missing file, no network, unknown preset, mismatched expert."""


class TaskError(WemoeError):
    """A task is unknown or its data could not be loaded."""


class MethodError(WemoeError):
    """A merge method is unknown, or one of its parameters is missing or out of range."""


class MergeTooLarge(WemoeError):
    """A merge would not fit in the memory allowed: refused before it starts, naming what it needs and what fits."""
