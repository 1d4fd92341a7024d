"""What a merge method is: a name, a one-line description, a reference, declared parameters and ``merge``.

Parameters are declared once as :class:`Param` specs; the app builds its controls from them, the CLI parses
``--param method.name=value`` with them, and the tests parametrise over them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from torch import nn

from wemoe.errors import MethodError
from wemoe.params import Param
from wemoe.zoo.zoo import Zoo


class MergeMethod(ABC):
    """A merge method. Subclasses set the class attributes and implement :meth:`merge`.

    ``adaptive`` methods return a model that keeps the contract of ``wemoe.adaptation.adaptive`` (trainable parameters
    that ``wemoe.adaptation.adapt.adapt`` trains, a static form or a saved format for export, routing or none); the
    others return a static tower.
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
