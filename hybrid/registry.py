"""Name -> class registries, one per pluggable contract (subtractors, labelers, ...).

Hydra configs build objects through ``_target_``; the registry is how code and tests enumerate what
is available (``hybrid list``, contract tests parametrised over every entry). A module registers its
classes with ``@REGISTRY.register("name")``; :meth:`Registry.discover` imports every module of the
owning package so that adding a plug-in needs nothing but the new module and its config file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping of names to classes that honour one contract."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package
        self._entries: dict[str, type[T]] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorator(cls: type[T]) -> type[T]:
            if name in self._entries and self._entries[name] is not cls:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = cls
            cls.name = name  # type: ignore[attr-defined]
            return cls

        return decorator

    def discover(self) -> None:
        """Import every module of the owning package so that their ``register`` calls run."""
        if self._discovered:
            return
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{self.package}.{info.name}")
        self._discovered = True

    def get(self, name: str) -> type[T]:
        self.discover()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {known}") from None

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
