"""Name -> class registries for plug-in kinds (codecs, metrics, ...).

Duplicate names raise; unknown names suggest the closest registered ones.
Third-party packages add entries through an entry-point group, so a new
proposal plugs in without editing the suite.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from gfvc.errors import ConfigError, UnknownName

T = TypeVar("T")


class Registry(Generic[T]):
    """A registry of one plug-in kind, filled by decorator and by entry points."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._entry_points_loaded = False

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Class decorator: ``@CODECS.register()`` uses the class's ``name``."""

        def deco(obj: T) -> T:
            key = name or getattr(obj, "name", None)
            if not key or not isinstance(key, str):
                raise ConfigError(f"{self.kind} {obj!r} has no name to register under")
            self.add(key, obj, origin=getattr(obj, "__module__", "?"))
            return obj

        return deco

    def add(self, key: str, obj: T, origin: str = "?") -> None:
        if key in self._items and self._items[key] is not obj:
            raise ConfigError(
                f"duplicate {self.kind} name {key!r}: already registered by "
                f"{self._origins[key]}, again by {origin}"
            )
        self._items[key] = obj
        self._origins[key] = origin

    def load_entry_points(self) -> None:
        """Import every entry point of the group once (each registers itself, usually by decorator)."""
        if self._entry_points_loaded or not self.entry_point_group:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            obj = ep.load()  # importing the module usually registers it already
            key = getattr(obj, "name", None) or ep.name
            if key not in self._items:
                self.add(key, obj, origin=f"entry point {ep.value}")

    def get(self, name: str) -> T:
        self.load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            known = ", ".join(sorted(self._items)) or "none"
            raise UnknownName(f"unknown {self.kind} {name!r}{hint} (known: {known})") from None

    def names(self) -> list[str]:
        self.load_entry_points()
        return sorted(self._items)

    def origin(self, name: str) -> str:
        self.load_entry_points()
        return self._origins[name]

    def __contains__(self, name: object) -> bool:
        self.load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
