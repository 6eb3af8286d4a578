"""Sub-image tiling for methods that assume one PSF per image (ZOGY): split, process, stitch.

The frame is cut into ``per_side x per_side`` tiles. Each tile is processed on its *outer* region,
its *core* grown by ``overlap`` pixels on every side (clipped to the frame), so that convolutions
near the core's edges see real neighbouring pixels; only the core goes into the stitched output.
Cores do not overlap and cover the frame exactly. ZOGY implementations for real data handle PSF
variation the same way (Vreeswijk's ZOGY for MeerLICHT/BlackGEM; the ZOGY map-reduce task of the
LSST ``ip_diffim`` package).

:class:`TiledPSF` is the PSF of a stitched image: the kernel of the tile that contains the position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hybrid.psf import ImagePSF


@dataclass(frozen=True)
class Tile:
    """One tile: ``core`` and ``outer`` as ``(y0, y1, x0, x1)`` half-open pixel bounds of the frame."""

    core: tuple[int, int, int, int]
    outer: tuple[int, int, int, int]

    @property
    def core_slices(self) -> tuple[slice, slice]:
        y0, y1, x0, x1 = self.core
        return slice(y0, y1), slice(x0, x1)

    @property
    def outer_slices(self) -> tuple[slice, slice]:
        y0, y1, x0, x1 = self.outer
        return slice(y0, y1), slice(x0, x1)

    @property
    def core_in_outer(self) -> tuple[slice, slice]:
        """The core's slices within the outer sub-image."""
        y0, y1, x0, x1 = self.core
        oy, _, ox, _ = self.outer
        return slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox)

    @property
    def centre(self) -> tuple[float, float]:
        """Centre ``(x, y)`` of the core (pixels)."""
        y0, y1, x0, x1 = self.core
        return (x0 + x1 - 1) / 2.0, (y0 + y1 - 1) / 2.0

    def contains(self, x: np.ndarray, y: np.ndarray, *, outer: bool = False) -> np.ndarray:
        y0, y1, x0, x1 = self.outer if outer else self.core
        return (x >= x0 - 0.5) & (x < x1 - 0.5) & (y >= y0 - 0.5) & (y < y1 - 0.5)


def tile_edges(n: int, per_side: int) -> np.ndarray:
    return np.linspace(0, n, per_side + 1).round().astype(int)


def make_tiles(shape: tuple[int, int], per_side: int, overlap: int) -> list[Tile]:
    """``per_side**2`` tiles of a frame of ``shape``, row by row, each grown by ``overlap`` pixels."""
    if per_side < 1:
        raise ValueError(f"tiles per side must be >= 1, got {per_side}")
    if overlap < 0:
        raise ValueError(f"tile overlap must be >= 0, got {overlap}")
    ny, nx = shape
    ye, xe = tile_edges(ny, per_side), tile_edges(nx, per_side)
    tiles = []
    for i in range(per_side):
        for j in range(per_side):
            core = (int(ye[i]), int(ye[i + 1]), int(xe[j]), int(xe[j + 1]))
            outer = (
                max(0, core[0] - overlap),
                min(ny, core[1] + overlap),
                max(0, core[2] - overlap),
                min(nx, core[3] + overlap),
            )
            tiles.append(Tile(core, outer))
    return tiles


@dataclass(frozen=True)
class TiledPSF:
    """Piecewise-constant PSF: ``kernels[i * per_side + j]`` holds in tile row ``i``, column ``j``."""

    kernels: tuple[np.ndarray, ...]
    y_edges: tuple[int, ...]
    x_edges: tuple[int, ...]
    _psfs: tuple[ImagePSF, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_psfs", tuple(ImagePSF(k) for k in self.kernels))

    def _tile(self, x: float, y: float) -> ImagePSF:
        per_side = len(self.x_edges) - 1
        j = int(np.clip(np.searchsorted(self.x_edges, x + 0.5, side="right") - 1, 0, per_side - 1))
        i = int(np.clip(np.searchsorted(self.y_edges, y + 0.5, side="right") - 1, 0, per_side - 1))
        return self._psfs[i * per_side + j]

    def image_at(self, x: float, y: float, size: int) -> np.ndarray:
        return self._tile(x, y).image_at(x, y, size)

    def fwhm_at(self, x: float, y: float) -> float:
        return self._tile(x, y).fwhm_at(x, y)
