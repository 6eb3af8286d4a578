"""The work on one science / reference frame pair, shared by the dataset build and `hybrid pipeline`.

:func:`pair_candidates` removes the sky, subtracts, detects on the difference, cuts the stamps and
measures the per-detection features; :func:`with_context` adds the context features of a knowledge
base. The simulated build (:func:`hybrid.data.build.process_field`) labels the candidates in between
(curation may add injected candidates, which then get their context too); the real-frame pipeline
(:mod:`hybrid.pipeline`) has no labels. Both call these two functions, so a real frame pair and a
simulated one meet the same code.

Not for: reading frames (:mod:`hybrid.data.fits`, :mod:`hybrid.data.real_frames`) or labelling.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hybrid.context import ContextAssociator, KnowledgeBase
from hybrid.detection import Detector, subtract_background
from hybrid.detection.candidates import Frame, StampSet
from hybrid.detection.stamps import cut_stamps
from hybrid.exposure import Exposure
from hybrid.sim.survey import CutoutConvention
from hybrid.subtraction import Subtractor


@dataclass
class StageTimer:
    """Accumulates wall time per pipeline stage (s)."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0


@dataclass
class PairCandidates:
    """The candidates of one frame pair: the frame (science, reference, difference), the table of
    detections with ``ra``, ``dec`` (deg) and their features, and their stamps (row order shared)."""

    frame: Frame
    candidates: pd.DataFrame
    stamps: StampSet


def pair_candidates(
    science: Exposure,
    reference: Exposure,
    *,
    subtractor: Subtractor,
    detector: Detector,
    stamp_size: int,
    fill_value: float,
    pixel_scale: float,
    catalog: pd.DataFrame | None = None,
    psf_fit_errors: str = "variance",
    timer: StageTimer | None = None,
) -> PairCandidates:
    """Subtract ``reference`` from ``science``, detect, cut ``stamp_size`` stamps and measure them.

    Args:
        science, reference: exposures on one pixel grid (sky removed here where it is not yet).
        subtractor: any registered subtractor.
        detector: detection on the difference image.
        stamp_size: stamp side (px, odd).
        fill_value: stamp pixels beyond the frame.
        pixel_scale: arcsec / px.
        catalog: the survey's source catalogue with ``x``, ``y`` (px on this grid), ``mag`` and
            ``sgscore``, for the nearest-source features; ``None``: those features are NaN.
        psf_fit_errors: the survey's PSF-fit error convention (``SurveyProfile.psf_fit_errors``).
        timer: stage timer (stages ``subtract``, ``detect``, ``cut``).
    """
    timer = timer or StageTimer()
    with timer("subtract"):
        science = subtract_background(science)
        reference = subtract_background(reference)
        difference = subtractor.subtract(science, reference)
    frame = Frame(science, reference, difference, pixel_scale, catalog, psf_fit_errors)
    with timer("detect"):
        det = detector.detect(difference)
    with timer("cut"):
        x, y, sign = det["x"].to_numpy(), det["y"].to_numpy(), det["sign"].to_numpy()
        cut = frame.cut(x, y, stamp_size, fill_value)
        ra, dec = (difference.wcs.all_pix2world(x, y, 0)) if len(det) else (np.zeros(0), np.zeros(0))
        table = pd.concat([det.assign(ra=ra, dec=dec), frame.measure(cut, x, y, sign)], axis=1)
    return PairCandidates(frame, table, cut)


def with_context(
    table: pd.DataFrame,
    context: ContextAssociator | None,
    kb: KnowledgeBase | None,
    timer: StageTimer | None = None,
) -> pd.DataFrame:
    """``table`` (columns ``ra``, ``dec`` in deg) with the context features of ``kb`` appended."""
    if context is None:
        return table
    with (timer or StageTimer())("context"):
        return pd.concat([table, context.features(table, kb)], axis=1)


def survey_stamps(
    stamps: StampSet,
    rows: pd.DataFrame,
    science: Exposure,
    frame: Frame,
    convention: CutoutConvention,
    *,
    fill_value: float = np.nan,
) -> np.ndarray:
    """The (N, 3, S, S) cube of ``stamps`` (at ``rows``' ``x``, ``y``, ``isdiffpos``) in the survey's
    cutout convention: the sky is the background that ``frame``'s science image lost against
    ``science`` as it came (none when it came background-subtracted), the template scale the ratio of
    the two images' zero points."""
    size = stamps.diff.shape[-1]
    sky = science.image - frame.science.image
    return stamps.images(
        convention,
        sign=np.where(rows["isdiffpos"].to_numpy(bool), 1, -1),
        sky=cut_stamps(sky, rows["x"].to_numpy(), rows["y"].to_numpy(), size, fill_value),
        template_scale=10 ** (0.4 * (frame.science.zero_point - frame.reference.zero_point)),
    )
