"""Candidates on a difference image: cutouts of every plane and their measurements.

``Frame`` bundles the three images of one subtraction. ``StampSet`` holds the cutouts of one set of
positions: science, reference and difference, plus the difference's variance, mask and score.
``Frame.measure`` turns a StampSet into the feature table. The build pipeline
(:func:`hybrid.data.build.process_field`) detects, cuts and measures. The curation step builds
synthetic candidates by adding StampSets, and measures them with the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hybrid.detection.features import measure_stamps, nearest_source_features
from hybrid.detection.stamps import cut_stamps, edge_fraction
from hybrid.exposure import Difference, Exposure
from hybrid.sim.survey import CutoutConvention

#: Image channels stored in the dataset, in order.
CHANNELS: tuple[str, ...] = ("sci", "ref", "diff")


@dataclass
class StampSet:
    """Cutouts (N, S, S) of all planes at N positions; ``score`` is None without a score image."""

    sci: np.ndarray
    ref: np.ndarray
    diff: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    score: np.ndarray | None

    def __len__(self) -> int:
        return self.diff.shape[0]

    def images(
        self,
        convention: CutoutConvention | None = None,
        *,
        sign: np.ndarray | None = None,
        sky: np.ndarray | None = None,
        template_scale: float = 1.0,
    ) -> np.ndarray:
        """(N, 3, S, S) float32 cube of the stored channels (see :data:`CHANNELS`).

        Without a convention the planes are stored as cut: background-subtracted science, reference
        at its own zero point, science minus reference. With one, they follow the survey's alert
        cutouts (:class:`~hybrid.sim.survey.CutoutConvention`).

        Args:
            convention: the survey's cutout convention, or None.
            sign: +1 / -1 per row (positive or negative detection), for ``negative_flipped``.
            sky: (N, S, S) sky background of the science image at the rows (ADU), for ``sky``.
            template_scale: reference-to-science flux scale ``10^(0.4 (zp_sci - zp_ref))``, for
                ``template_matched``.
        """
        sci, ref, diff = self.sci, self.ref, self.diff
        if convention is not None:
            if convention.template_matched:
                ref = ref * np.float32(template_scale)
            if convention.sky:
                if sky is None:
                    raise ValueError("the cutout convention keeps the sky: pass the sky stamps")
                sci = sci + sky
                ref = ref + sky if convention.template_matched else ref
            if convention.negative_flipped:
                if sign is None:
                    raise ValueError("the cutout convention flips negative detections: pass their sign")
                diff = diff * np.where(np.asarray(sign) < 0, -1, 1).astype(np.float32)[:, None, None]
        return np.stack([sci, ref, diff], axis=1).astype(np.float32)

    def take(self, index: np.ndarray) -> StampSet:
        return StampSet(
            *(a[index] for a in (self.sci, self.ref, self.diff, self.variance, self.mask)),
            score=None if self.score is None else self.score[index],
        )


@dataclass(frozen=True)
class Frame:
    """The three images of one subtraction and what measuring on them needs."""

    science: Exposure
    reference: Exposure
    difference: Difference
    pixel_scale: float
    catalog: pd.DataFrame | None = None
    psf_fit_errors: str = "variance"  # the survey's PSF-fit convention (measure_stamps)

    def cut(self, x: np.ndarray, y: np.ndarray, size: int, fill_value: float = np.nan) -> StampSet:
        d = self.difference
        return StampSet(
            sci=cut_stamps(self.science.image, x, y, size, fill_value),
            ref=cut_stamps(self.reference.image, x, y, size, fill_value),
            diff=cut_stamps(d.image, x, y, size, fill_value),
            variance=cut_stamps(d.variance, x, y, size, np.nan),
            mask=cut_stamps(d.mask, x, y, size, 0),
            score=None if d.score is None else cut_stamps(d.score, x, y, size, np.nan),
        )

    def measure(self, stamps: StampSet, x: np.ndarray, y: np.ndarray, sign: np.ndarray) -> pd.DataFrame:
        """Feature table of candidates at (x, y) whose cutouts are ``stamps``."""
        d = self.difference
        ny, nx = d.image.shape
        size = min(2 * (stamps.diff.shape[1] // 4) + 1, 21)
        psf = d.psf.image_at((nx - 1) / 2, (ny - 1) / 2, size)
        local = (
            np.stack([d.psf.image_at(xi, yi, size) for xi, yi in zip(x, y, strict=True)])
            if len(x)
            else psf[None]
        )
        table = measure_stamps(
            stamps.diff,
            stamps.variance,
            stamps.mask,
            local,
            sign,
            zero_point=d.zero_point,
            pixel_scale=self.pixel_scale,
            score=stamps.score,
            psf_fit_errors=self.psf_fit_errors,
        )
        table = pd.concat([table, nearest_source_features(x, y, self.catalog, self.pixel_scale)], axis=1)
        fwhm_sci = float(self.science.psf.fwhm_at((nx - 1) / 2, (ny - 1) / 2)) * self.pixel_scale
        fwhm_ref = float(self.reference.psf.fwhm_at((nx - 1) / 2, (ny - 1) / 2)) * self.pixel_scale
        table["fwhm_sci"] = fwhm_sci
        table["seeing_ratio"] = fwhm_sci / fwhm_ref
        table["maglim"] = self.maglim(psf)
        table["stamp_edge_fraction"] = edge_fraction(d.image.shape, x, y, stamps.diff.shape[1])
        return table

    def maglim(self, psf: np.ndarray) -> float:
        """5-sigma PSF-photometry depth of the difference image (mag), from its median variance."""
        var = float(np.nanmedian(self.difference.variance))
        return float(self.difference.zero_point - 2.5 * np.log10(5.0 * np.sqrt(var / (psf**2).sum())))
