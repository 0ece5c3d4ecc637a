"""A registry: name → class for one kind of component (attacks, defenses), so that a new one is one file plus one
line (or one ``register`` call from the user's own code)."""

from __future__ import annotations

import sys

from .params import describe


def _name_params(cls: type) -> None:
    """Give every ``Params`` class that ``cls`` or its bases declare the name pickle looks it up by
    (``Component.Params`` in the component's module), unless that name already finds it. A variant made with
    :func:`paper_repro.params.variant` is a new class carrying its parent's name, so without this a component holding
    it could not be sent to a worker process (``--jobs 2``: "Can't pickle ... it's not the same object")."""
    for owner in cls.__mro__:
        p = owner.__dict__.get("Params")
        if not isinstance(p, type):
            continue
        found = sys.modules.get(p.__module__)
        for part in p.__qualname__.split("."):
            found = getattr(found, part, None)
        if found is not p:
            p.__module__, p.__qualname__ = owner.__module__, f"{owner.__qualname__}.Params"


class Registry(dict):
    """``{name: class}`` whose classes all subclass ``base``; unknown names raise with the known ones."""

    def __init__(self, kind: str, base: type, entries: dict[str, type]):
        super().__init__(entries)
        self.kind, self.base = kind, base
        for cls in entries.values():
            _name_params(cls)

    def names(self) -> list[str]:
        """Known names, sorted."""
        return sorted(self)

    def register(self, name: str, cls: type) -> type:
        """Add ``cls`` under ``name``; returns ``cls``."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"{cls!r} is not a subclass of {self.base.__module__}.{self.base.__name__}")
        _name_params(cls)
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
