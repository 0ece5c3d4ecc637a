"""A registry: name → class for one kind of component (attacks, defenses), so that a new one is one file plus one
line (or one ``register`` call from the user's own code)."""

from __future__ import annotations

from .params import describe


class Registry(dict):
    """``{name: class}`` whose classes all subclass ``base``; unknown names raise with the known ones."""

    def __init__(self, kind: str, base: type, entries: dict[str, type]):
        super().__init__(entries)
        self.kind, self.base = kind, base

    def names(self) -> list[str]:
        """Known names, sorted."""
        return sorted(self)

    def register(self, name: str, cls: type) -> type:
        """Add ``cls`` under ``name``; returns ``cls``."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"{cls!r} is not a subclass of {self.base.__module__}.{self.base.__name__}")
        self[name] = cls
        return cls

    def params(self, name: str) -> list[dict]:
        """The parameters of ``name`` (its ``Params``): name, type, default, limits, description."""
        return describe(self.lookup(name).Params)

    def lookup(self, name: str) -> type:
        """The class registered as ``name``."""
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; known {self.kind}s: {self.names()}")
        return self[name]
