"""What a merge method is: a name, a one-line description, a reference, declared parameters and ``merge``.

Parameters are declared once as :class:`Param` specs; the app builds its controls from them, the CLI parses
``--param method.name=value`` with them, and the tests parametrise over them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from wemoe.errors import MethodError
from wemoe.zoo import Zoo


@dataclass(frozen=True)
class Param:
    """A declared method parameter: type, default, allowed range or choices, and help text for UI and CLI."""

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
        except (TypeError, ValueError):
            raise MethodError(f"Parameter {where} must be a {self.type.__name__}, got {value!r}. {self.help}") from None
        if self.choices is not None and value not in self.choices:
            raise MethodError(f"Parameter {where}={value!r} is not allowed; choose one of {list(self.choices)}.")
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise MethodError(f"Parameter {where}={value!r} is out of range [{self.min}, {self.max}]. {self.help}")
        return value


class MergeMethod(ABC):
    """A merge method. Subclasses set the class attributes and implement :meth:`merge`.

    ``adaptive`` methods return a tower with trainable parameters (routers, merging coefficients) that
    ``wemoe.adapt.adapt`` trains by entropy minimisation; the others return a static tower.
    """

    name: ClassVar[str]
    pretty_name: ClassVar[str]
    description: ClassVar[str]
    reference_url: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    adaptive: ClassVar[bool] = False
    order: ClassVar[int] = 100  # position in lists shown to users

    def resolve(self, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults overridden by ``values``, each parsed and checked; unknown names raise a MethodError."""
        values = dict(values or {})
        known = {p.name: p for p in self.params}
        unknown = sorted(set(values) - set(known))
        if unknown:
            allowed = ", ".join(known) or "none"
            raise MethodError(f"Method {self.name!r} has no parameter {unknown[0]!r}. Its parameters: {allowed}.")
        return {name: p.parse(values.get(name, p.default), self.name) for name, p in known.items()}

    def __call__(self, zoo: Zoo, **values: Any) -> nn.Module:
        """Check the parameters, then merge."""
        return self.merge(zoo, **self.resolve(values))

    @abstractmethod
    def merge(self, zoo: Zoo, **params: Any) -> nn.Module:
        """Merge the zoo's experts into one image tower (parameters already resolved)."""
