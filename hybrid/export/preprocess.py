"""The serving side of preprocessing, in numpy: stamp crop + normalisation, and the feature matrix.

An exported graph takes stamps that are already cropped and normalised, because the per-stamp
median and MAD of the ``noise`` normalisation cost about 700 us per alert as ``torch.nanmedian`` and
have no efficient ONNX operator, while ``np.partition`` does it in about 40 us (``hybrid bench
predict`` measures it). :func:`normalize_stamps` reproduces
:class:`hybrid.models.preprocessing.StampNormalizer` exactly (lower median of the finite pixels, as
``torch.nanmedian``; the same float32 arithmetic), which the bundle's golden pair checks on every load.
Feature scaling and imputation stay inside the graph (they are cheap there).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hybrid.stats import MAD_TO_SIGMA

_MAD_TO_SIGMA = np.float32(MAD_TO_SIGMA)  # as the model's StampNormalizer


def crop_stamps(stamps: np.ndarray, crop: int | None) -> np.ndarray:
    """The central ``crop`` x ``crop`` pixels of (..., H, W) stamps (a view; no-op when None or larger)."""
    if crop is None or crop >= stamps.shape[-1]:
        return stamps
    lo = (stamps.shape[-1] - crop) // 2
    return stamps[..., lo : lo + crop, lo : lo + crop]


def _lower_median(rows: np.ndarray) -> np.ndarray:
    """Lower median along the last axis of NaN-free rows (torch.median's convention)."""
    k = (rows.shape[-1] - 1) // 2
    return np.partition(rows, k, axis=-1)[..., k]


def normalize_stamps(stamps: np.ndarray, *, mode: str, crop: int | None, clip: float = 50.0) -> np.ndarray:
    """(B, C, H, W) raw stamps (ADU, NaN allowed) -> cropped, normalised float32 stamps, NaN -> 0.

    Args:
        stamps: raw stamps.
        mode: ``noise`` (median subtracted, divided by 1.4826 MAD, clipped at +-``clip``), ``l2``
            (divided by the L2 norm; braai) or ``none``, per stamp and channel.
        crop: central crop (px) applied first, or None.
        clip: clip of the ``noise`` mode (sigma).
    """
    x = np.ascontiguousarray(crop_stamps(np.asarray(stamps, np.float32), crop))
    b, c, h, w = x.shape
    flat = x.reshape(b * c, h * w)
    finite = np.isfinite(flat)
    if mode == "none":
        return np.where(finite, flat, np.float32(0)).reshape(b, c, h, w)
    if mode == "l2":
        x0 = np.where(finite, flat, np.float32(0))
        with np.errstate(over="ignore"):  # absurd pixels (> 1e19) give an infinite norm, as in torch
            norm = np.sqrt((x0 * x0).sum(axis=1, keepdims=True, dtype=np.float32))
        return (x0 / np.maximum(norm, np.float32(1e-6))).reshape(b, c, h, w)
    if mode != "noise":
        raise ValueError(f"stamp normalisation must be noise, l2 or none, got {mode!r}")
    complete = finite.all(axis=1)
    med = np.zeros(b * c, np.float32)
    mad = np.full(b * c, np.nan, np.float32)
    if complete.any():
        rows = flat[complete]
        m = _lower_median(rows)
        med[complete] = m
        mad[complete] = _lower_median(np.abs(rows - m[:, None]))
    for i in np.flatnonzero(~complete):  # stamps with NaNs: edges, masked pixels
        v = flat[i][finite[i]]
        if v.size:
            med[i] = _lower_median(v)
            mad[i] = _lower_median(np.abs(v - med[i]))
    sigma = np.maximum(np.nan_to_num(_MAD_TO_SIGMA * mad, nan=1.0), np.float32(1e-6))
    z = np.clip((np.where(finite, flat, np.float32(0)) - med[:, None]) / sigma[:, None], -clip, clip)
    z[~finite] = 0.0
    return z.astype(np.float32, copy=False).reshape(b, c, h, w)


def feature_matrix(table: pd.DataFrame, names: list[str]) -> np.ndarray:
    """(N, F) float32 features in ``names`` order; a column the table lacks is all NaN (imputed)."""
    out = np.full((len(table), len(names)), np.nan, np.float32)
    for j, name in enumerate(names):
        if name in table:
            out[:, j] = pd.to_numeric(table[name], errors="coerce").to_numpy(np.float32, na_value=np.nan)
    return out
