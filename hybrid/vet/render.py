"""Images for the vetting page: stamps with astronomical scaling, and the completeness plot.

Stamps are scaled as survey scanning pages show them: the interval from IRAF's zscale algorithm
(``astropy.visualization.ZScaleInterval``) and an asinh stretch (Lupton, Gunn & Szalay 1999, AJ 118,
1406), so faint structure and bright cores are visible at once. Pixels without data (NaN) are drawn
in a colour that no data value takes, so that a reference footprint's edge is never mistaken for sky.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from astropy.visualization import AsinhStretch, ImageNormalize, ZScaleInterval

from hybrid.evaluation.evaluate import save_figure

#: RGB of pixels without data
NO_DATA = (0.55, 0.15, 0.55)


def scaled(image: np.ndarray) -> np.ndarray:
    """``image`` mapped to [0, 1] by zscale + asinh; NaN where it has no data."""
    image = np.asarray(image, float)
    good = np.isfinite(image)
    out = np.full(image.shape, np.nan)
    if good.sum() < 2 or np.ptp(image[good]) == 0:
        out[good] = 0.5
        return out
    norm = ImageNormalize(image[good], interval=ZScaleInterval(), stretch=AsinhStretch(), clip=True)
    out[good] = norm(image[good])
    return out


def stamp_png(image: np.ndarray) -> bytes:
    """One stamp as a grey-scale PNG at its native size (the page enlarges it without smoothing); the
    first row of the array is the bottom of the image, as in FITS."""
    v = scaled(image)
    rgb = np.repeat(np.nan_to_num(v, nan=0.0)[..., None], 3, axis=-1)
    rgb[~np.isfinite(v)] = NO_DATA
    buf = io.BytesIO()
    plt.imsave(buf, rgb[::-1], format="png")
    return buf.getvalue()


def completeness_png(curve: pd.DataFrame, *, label: str, threshold: float) -> bytes:
    """The completeness-vs-magnitude curve (``lo``, ``hi``, ``completeness``, ``error``, ``n`` per bin)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ok = curve["n"] > 0
    mid = (curve["lo"] + curve["hi"]) / 2
    ax.errorbar(mid[ok], curve["completeness"][ok], yerr=curve["error"][ok], fmt="o-", ms=3)
    for x, n in zip(mid[ok], curve["n"][ok], strict=True):
        ax.annotate(str(int(n)), (x, 0.02), ha="center", fontsize=6, color="grey")
    ax.set(xlabel=label, ylabel=f"completeness (score >= {threshold:g})", ylim=(0, 1.05))
    ax.set_title("real candidates recovered, per magnitude bin (counts at the bottom)", fontsize=9)
    buf = io.BytesIO()
    save_figure(fig, buf)  # type: ignore[arg-type]  # savefig writes PNG to a file object too
    return buf.getvalue()


__all__ = ["NO_DATA", "completeness_png", "scaled", "stamp_png"]
