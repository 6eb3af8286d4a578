"""Robust statistics shared by subtraction, PSF estimation, stamp normalisation and benchmarks."""

from __future__ import annotations

import numpy as np

__all__ = ["MAD_TO_SIGMA", "mad_sigma"]

#: The standard deviation of a Gaussian over its median absolute deviation, ``1 / Phi^-1(3/4)``
#: (Rousseeuw & Croux 1993, JASA 88, 1273).
MAD_TO_SIGMA = 1.482602218505602


def mad_sigma(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Robust standard deviation ``1.4826 MAD`` of ``values`` (along ``axis``; all when None), in the
    units of ``values``. NaNs are not skipped: select finite values first."""
    med = np.median(values, axis=axis, keepdims=axis is not None)
    mad = np.median(np.abs(values - med), axis=axis)
    return MAD_TO_SIGMA * mad if axis is not None else float(MAD_TO_SIGMA * mad)
