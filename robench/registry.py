"""One tiny registry type; one instance per kind of component (archs, datasets, recipes, attacks, ...)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import UnknownName

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to components. Duplicate names are an error; unknown names list the choices.

    Examples:
        >>> ARCHS = Registry("arch")
        >>> @ARCHS.register("vgg5")
        ... def vgg5(**kw): ...
        >>> ARCHS.get("vgg5") is vgg5
        True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"duplicate {self.kind} name {name!r}")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def get(self, name_or_obj: str | T) -> T:
        """The component named ``name_or_obj``; a non-string is passed through (a user's own object)."""
        if not isinstance(name_or_obj, str):
            return name_or_obj
        try:
            return self._items[name_or_obj]
        except KeyError:
            raise UnknownName(
                f"unknown {self.kind} {name_or_obj!r}; choose from: {', '.join(self.names())}"
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        return [n for n in self._items if fnmatch.fnmatchcase(n, pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
