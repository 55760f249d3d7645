"""One small name -> class registry, shared by explainers, metrics and model families."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Classes by name, in registration order; a name taken by another class, or an unknown name, raises.

    Args:
        kind: what is registered, for messages (``"explainer"``).
        plural: its plural (default: ``kind + "s"``).

    Example:
        >>> registry = Registry("widget")
        >>> registry.register(int, "number", aliases=("n",))
        <class 'int'>
        >>> registry.get("n"), list(registry.items())
        (<class 'int'>, ['number', 'n'])
        >>> registry.get("x")
        Traceback (most recent call last):
        ...
        ValueError: Unknown widget 'x'. Registered widgets: n, number
    """

    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._classes: dict[str, T] = {}

    def register(self, cls: T, name: str | None = None, aliases: Iterable[str] = ()) -> T:
        """Register ``cls`` under ``name`` (default: its ``name`` attribute, which must then be a plain string)."""
        key = name if name is not None else getattr(cls, "name", None)  # a property object is not a str
        if not isinstance(key, str):
            raise ValueError(f"{cls.__qualname__}.name depends on its configuration: register it with name=...")
        names = (key, *aliases)
        for entry in names:
            existing = self._classes.get(entry)
            if existing is not None and existing is not cls:
                raise ValueError(f"A {self.kind} named {entry!r} is already registered ({existing.__qualname__})")
        self._classes.update(dict.fromkeys(names, cls))
        return cls

    def get(self, name: str) -> T:
        """The class registered as ``name``; unknown names raise ``ValueError`` listing the registered ones."""
        if name not in self._classes:
            known = ", ".join(sorted(self._classes))
            raise ValueError(f"Unknown {self.kind} {name!r}. Registered {self.plural}: {known}")
        return self._classes[name]

    def items(self) -> dict[str, T]:
        """Registered names (aliases included) -> classes, in registration order."""
        return dict(self._classes)
