"""Name -> class registries, one per pluggable contract (subtractors, labelers, ...).

Hydra configs build objects through ``_target_``; the registry is how code and tests enumerate what
is available (``hybrid list``, contract tests parametrised over every entry). A module registers its
classes with ``@REGISTRY.register("name")``; :meth:`Registry.discover` imports every module of the
owning package (or the modules the registry names) so that adding a plug-in needs nothing but the new
module and its config file.

Each registry states its contract: the base class (an ABC, ``nn.Module``) or ``runtime_checkable``
Protocol every entry honours; :meth:`Registry.register` refuses a class that does not, and one test
(tests/test_registries.py) checks every entry of every registry against its contract.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping of names to classes that honour one contract.

    Args:
        kind: what an entry is, in words (``"subtractor"``), for messages and ``hybrid list``.
        package: the package whose modules register entries.
        contract: the class (or ``runtime_checkable`` Protocol) every entry is a subclass of.
        modules: the modules of ``package`` that register entries (default: all of them); naming
            them keeps discovery from importing heavy neighbours (torch for a drift test).
    """

    def __init__(
        self, kind: str, package: str, *, contract: type[Any], modules: tuple[str, ...] | None = None
    ) -> None:
        self.kind = kind
        self.package = package
        self.contract = contract
        self.modules = modules
        self._entries: dict[str, type[T]] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def decorator(cls: type[T]) -> type[T]:
            if name in self._entries and self._entries[name] is not cls:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            if not issubclass(cls, self.contract):
                raise TypeError(
                    f"{self.kind} {name!r}: {cls.__qualname__} does not honour {self.contract.__name__}"
                )
            self._entries[name] = cls
            cls.name = name  # type: ignore[attr-defined]
            return cls

        return decorator

    def discover(self) -> None:
        """Import the modules that register entries so that their ``register`` calls run."""
        if self._discovered:
            return
        names = self.modules
        if names is None:
            names = tuple(
                info.name for info in pkgutil.iter_modules(importlib.import_module(self.package).__path__)
            )
        for name in names:
            importlib.import_module(f"{self.package}.{name}")
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
