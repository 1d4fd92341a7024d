"""Merge methods: one file each, all in one registry (see ``registry.py``)."""

from wemoe.methods.base import MergeMethod, Param
from wemoe.methods.registry import get_method, list_methods, register

__all__ = ["MergeMethod", "Param", "get_method", "list_methods", "register"]
