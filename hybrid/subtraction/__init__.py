"""Image subtraction: ``Subtractor.subtract(science, reference) -> Difference``.

Every subtractor is a class registered in :data:`SUBTRACTORS` and configured by a file in
``conf/subtraction/`` whose ``_target_`` names the class. Adding a method needs nothing but a new
module here and its config file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from hybrid.exposure import Difference, Exposure
from hybrid.registry import Registry


class Subtractor(ABC):
    """Contract: both exposures are on one pixel grid and background subtracted; the result is in
    the science exposure's flux units, with a propagated variance and the PSF of the difference."""

    name: str

    @abstractmethod
    def subtract(self, science: Exposure, reference: Exposure) -> Difference: ...


SUBTRACTORS: Registry[Subtractor] = Registry("subtractor", __name__, contract=Subtractor)


__all__ = ["SUBTRACTORS", "Subtractor"]
