"""Detection of positive and negative sources on a difference image with sep (Barbary 2016, JOSS 1, 58),
the Python library of Source Extractor's algorithms (Bertin & Arnouts 1996, A&AS 117, 393).

The difference image is matched-filtered with its own PSF against its noise map (by FFT; sep's own
matched filter is several times slower), so the threshold is a signal-to-noise ratio of PSF
photometry, the statistic real-time pipelines cut on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import sep
from scipy.signal import oaconvolve

from hybrid.exposure import Difference, Exposure, Mask

sep.set_extract_pixstack(2_000_000)
sep.set_sub_object_limit(4096)


@dataclass(frozen=True)
class Detector:
    """sep extraction on ``+D`` and ``-D``.

    Args:
        threshold: detection threshold, in units of the matched-filter noise (sigma).
        min_area: minimum connected pixels above threshold.
        deblend_cont: sep's deblending contrast (1.0 disables deblending).
        kernel_size: size of the PSF kernel used as matched filter (pixels, odd).
        negative: also detect negative sources (fading variables, dipoles).
        max_per_sign: at most this many detections per sign and image, brightest first, so a
            broken subtraction cannot flood the dataset.
    """

    threshold: float = 5.0
    min_area: int = 3
    deblend_cont: float = 0.005
    kernel_size: int = 15
    negative: bool = True
    max_per_sign: int = 2000

    def detect(self, difference: Difference) -> pd.DataFrame:
        """Detections with x, y (px, 0-based), sign (+1 / -1), npix, peak S/N and sep's flag bits."""
        snr, invalid = matched_filter_snr(difference, self.kernel_size)
        rows = []
        for sign in (1, -1) if self.negative else (1,):
            objs = sep.extract(
                np.ascontiguousarray(sign * snr),
                self.threshold,
                mask=invalid,
                minarea=self.min_area,
                filter_kernel=None,
                deblend_cont=self.deblend_cont,
            )
            objs = objs[np.argsort(-objs["peak"])][: self.max_per_sign]
            rows.append(
                pd.DataFrame(
                    {
                        "x": objs["x"].astype(float),
                        "y": objs["y"].astype(float),
                        "sign": np.full(len(objs), sign, np.int8),
                        "npix": objs["npix"].astype(np.int32),
                        "snr_peak": objs["peak"].astype(float),
                        "sep_flag": objs["flag"].astype(np.int16),
                    }
                )
            )
        return pd.concat(rows, ignore_index=True)


def matched_filter_snr(difference: Difference, kernel_size: int) -> tuple[np.ndarray, np.ndarray]:
    """S/N of a PSF fit centred on every pixel, and the map of pixels excluded from detection.

    With inverse-variance weights ``w = 1 / V`` and the PSF ``P``: ``S/N = (D w ⋆ P) / sqrt(w ⋆ P^2)``
    (``⋆`` is correlation), the optimal point-source detection statistic for uncorrelated noise.
    Missing data, the frame edge and known bad pixels are excluded.
    """
    image = difference.image
    invalid = ~np.isfinite(image) | ~np.isfinite(difference.variance) | (difference.variance <= 0)
    invalid |= (difference.mask & (Mask.NO_DATA | Mask.EDGE | Mask.BAD)) != 0
    w = np.where(invalid, 0.0, 1.0 / np.where(invalid, 1.0, difference.variance)).astype(np.float32)
    data = np.where(invalid, 0.0, image).astype(np.float32)
    ny, nx = image.shape
    kernel = difference.psf.image_at((nx - 1) / 2, (ny - 1) / 2, kernel_size).astype(np.float32)[::-1, ::-1]
    num = oaconvolve(data * w, kernel, mode="same")
    den = oaconvolve(w, kernel * kernel, mode="same")
    snr = np.where(den > 1e-20, num / np.sqrt(np.maximum(den, 1e-20)), 0.0).astype(np.float32)
    return snr, invalid


def subtract_background(exposure: Exposure, box: int = 64, filter_size: int = 3) -> Exposure:
    """A copy of ``exposure`` with sep's mesh background (SExtractor's estimator) removed.

    Sources and masked pixels are excluded from the background estimate by sep's sigma clipping and
    the mask. Exposures that are already background subtracted are returned unchanged.
    """
    if exposure.background_subtracted:
        return exposure
    image = np.ascontiguousarray(exposure.image, dtype=np.float32)
    invalid = ~np.isfinite(image) | ((exposure.mask & (Mask.NO_DATA | Mask.SATURATED)) != 0)
    bkg = sep.Background(
        np.where(invalid, 0, image).astype(np.float32),
        mask=invalid,
        bw=box,
        bh=box,
        fw=filter_size,
        fh=filter_size,
    )
    return replace(
        exposure,
        image=(image - bkg.back()).astype(np.float32),
        background_subtracted=True,
        meta={**exposure.meta, "background_rms": float(bkg.globalrms)},
    )
