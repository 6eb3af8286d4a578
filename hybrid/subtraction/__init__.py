"""Image subtraction: ``Subtractor.subtract(science, reference) -> Difference``.

Every subtractor is a class registered in :data:`SUBTRACTORS` and configured by a file in
``conf/subtraction/`` whose ``_target_`` names the class. Adding a method needs nothing but a new
module here and its config file. Public codes by others (:mod:`hybrid.subtraction.peers`) are
registered too, as optional entries: they name the package they need (``requires``) and the method
of ours that implements the same algorithm (``peer_of``), which the subtraction benchmark compares
them with.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from typing import ClassVar

from hybrid.exposure import Difference, Exposure
from hybrid.registry import Registry


class Subtractor(ABC):
    """Contract: both exposures are on one pixel grid and background subtracted; the result is in
    the science exposure's flux units, with a propagated variance and the PSF of the difference
    (peers: an empirical variance, and ``meta["flux_calibrated"]`` False where not in flux units)."""

    name: str
    #: modules an optional entry imports (an extra of the package); empty: always available
    requires: ClassVar[tuple[str, ...]] = ()
    #: for another group's code: the registered subtractor implementing the same algorithm
    peer_of: ClassVar[str | None] = None

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this subtractor cannot run here (a module it needs is not installed), or None."""
        missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        if not missing:
            return None
        return f'{", ".join(missing)} is not installed (`pip install -e ".[peers]"`)'

    @abstractmethod
    def subtract(self, science: Exposure, reference: Exposure) -> Difference: ...


SUBTRACTORS: Registry[Subtractor] = Registry("subtractor", __name__, contract=Subtractor)


def subtractor_names(*, peers: bool = False) -> list[str]:
    """Names of the registered subtractors: ours, then (``peers``) the other groups' codes."""
    names = SUBTRACTORS.names()
    ours = [n for n in names if SUBTRACTORS.get(n).peer_of is None]
    return ours + [n for n in names if n not in ours] if peers else ours


__all__ = ["SUBTRACTORS", "Subtractor", "subtractor_names"]
