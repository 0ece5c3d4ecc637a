"""A registry: name → class for one kind of component (attacks, defenses), so that a new one is one file plus one
line (or one ``register`` call from the user's own code)."""

from __future__ import annotations

import math


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

    def lookup(self, name: str) -> type:
        """The class registered as ``name``."""
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; known {self.kind}s: {self.names()}")
        return self[name]


def check_param(owner: str, key: str, value, default, annotation: str = "") -> None:
    """Reject a parameter value of the wrong kind for its default/annotation: a count must be an int >= 0 (a bool or
    2.5 is not a count), a number finite and >= 0, a name a non-empty string, an optional number (default None)
    None or > 0."""

    def bad(what: str) -> None:
        raise ValueError(f"{owner}: {key}={value!r} must be {what} (default {default!r})")

    def is_num(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if is_num(value) and not math.isfinite(value):
        bad("a finite number")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            bad("True or False")
    elif isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            bad("an integer >= 0")
    elif isinstance(default, float):
        if not is_num(value) or value < 0:
            bad("a number >= 0")
    elif isinstance(default, str):
        many = "list" in annotation and isinstance(value, (list, tuple))
        names = [value] if isinstance(value, str) else value if many else None
        if not names or not all(isinstance(n, str) and n for n in names):
            bad("a non-empty name" + (" or a list of names" if "list" in annotation else ""))
    elif default is None and value is not None:
        if "int" in annotation and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            bad("None (automatic) or an integer >= 1")
        if not is_num(value) or value <= 0:
            bad("None (automatic) or a number > 0")
