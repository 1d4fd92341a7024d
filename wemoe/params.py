"""A declared setting: name, type, default, range or choices and help text, parsed and checked one way.

Merge methods declare their parameters with it (``wemoe.methods``) and adaptation its settings
(``wemoe.adaptation.adapt``); the app builds its controls, the CLI its flags and both their validation from the same
declarations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from wemoe.errors import MethodError


@dataclass(frozen=True)
class Param:
    """A declared parameter: type, default, allowed range or choices, and help text for UI and CLI."""

    name: str
    type: type
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None

    def parse(self, value: Any, method: str = "") -> Any:
        """Convert ``value`` (possibly a CLI string) to this parameter's type and check its range or choices."""
        where = f"{method}.{self.name}" if method else self.name
        try:
            if self.type is bool and isinstance(value, str):
                if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError(value)
                value = value.lower() in {"true", "1", "yes"}
            else:
                value = self.type(value)
        except (TypeError, ValueError, OverflowError):
            raise MethodError(f"Parameter {where} must be a {self.type.__name__}, got {value!r}. {self.help}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise MethodError(f"Parameter {where} must be a finite number, got {value!r}. {self.help}")
        if self.choices is not None and value not in self.choices:
            raise MethodError(f"Parameter {where}={value!r} is not allowed; choose one of {list(self.choices)}.")
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise MethodError(f"Parameter {where}={value!r} is out of range [{self.min}, {self.max}]. {self.help}")
        return value
