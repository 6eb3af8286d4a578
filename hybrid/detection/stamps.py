"""Cutouts around candidates, with explicit handling of frame edges and missing data.

A stamp that reaches beyond the frame is completed with ``fill_value`` (NaN by default, as in real
ZTF cutouts, which arrive NaN-padded or cut short at chip edges); the fraction of filled or NaN pixels
is returned so that no stamp is silently garbage.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def cut_stamps(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, size: int, fill_value: float = np.nan
) -> np.ndarray:
    """Stamps (N, size, size) of ``image`` centred on the pixels nearest to (x, y).

    Pixels outside the image take ``fill_value``. ``size`` must be odd.
    """
    if size % 2 != 1:
        raise ValueError(f"stamp size must be odd, got {size}")
    half = size // 2
    padded = np.pad(image, half, mode="constant", constant_values=fill_value)
    windows = sliding_window_view(padded, (size, size))
    ix = np.clip(np.rint(np.asarray(x)).astype(int), 0, image.shape[1] - 1)
    iy = np.clip(np.rint(np.asarray(y)).astype(int), 0, image.shape[0] - 1)
    return windows[iy, ix].copy()


def edge_fraction(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """Fraction of each stamp that lies outside the frame."""
    half = size // 2
    ix, iy = np.rint(np.asarray(x)).astype(int), np.rint(np.asarray(y)).astype(int)
    ny, nx = shape
    inside_x = np.clip(np.minimum(ix + half, nx - 1) - np.maximum(ix - half, 0) + 1, 0, size)
    inside_y = np.clip(np.minimum(iy + half, ny - 1) - np.maximum(iy - half, 0) + 1, 0, size)
    return 1.0 - inside_x * inside_y / size**2
