"""Labels made without a human: known asteroids and random detections, and injected transients."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hybrid.curation.base import LABEL_SOURCES, EpochContext, LabelSource, labelled
from hybrid.detection.candidates import StampSet


def known_asteroid_rows(ctx: EpochContext) -> np.ndarray:
    """Boolean per candidate: it coincides with an asteroid whose ephemeris is known (the MPC)."""
    c = ctx.candidates
    truth = ctx.epoch.transients.set_index("transient_id")
    known_ids = set(truth.index[(truth["type"] == "asteroid") & truth["known"].astype(bool)])
    return c["transient_id"].isin(known_ids).to_numpy()


@LABEL_SOURCES.register("algorithmic")
class AlgorithmicLabels(LabelSource):
    """Known asteroids are real; ``random_bogus_per_epoch`` randomly drawn other detections are bogus.

    The random draw is blind to the truth, so it carries real transients into the bogus class at the
    rate they occur among detections -- the contamination of algorithmic labels.
    """

    def __init__(self, random_bogus_per_epoch: int = 30) -> None:
        self.random_bogus_per_epoch = random_bogus_per_epoch

    def label(self, ctx: EpochContext) -> tuple[pd.DataFrame, StampSet]:
        asteroid = known_asteroid_rows(ctx)
        others = np.flatnonzero(~asteroid)
        n = min(self.random_bogus_per_epoch, others.size)
        drawn = np.sort(ctx.rng.choice(others, n, replace=False)) if n else np.zeros(0, int)
        index = np.concatenate([np.flatnonzero(asteroid), drawn])
        rows = ctx.candidates.iloc[index].reset_index(drop=True)
        is_ast = np.arange(index.size) < asteroid.sum()
        return labelled(rows, is_ast, np.where(is_ast, "asteroid", "bogus"), "algorithmic"), ctx.stamps.take(
            index
        )


@LABEL_SOURCES.register("injected")
class InjectedLabels(LabelSource):
    """Synthetic SN-like transients: a known asteroid's difference stamp added onto a galaxy.

    The asteroid's difference-image stamp (the transient and its noise) is added to the science and
    difference stamps cut at an offset from a catalogued galaxy; variances add. The offset is drawn in
    units of the catalogue half-light radius along the galaxy's ellipse.

    Args:
        per_epoch: synthetic transients per science epoch (needs at least one known asteroid).
        offset_distribution: ``exponential`` (scale ``offset_scale`` R_e), ``uniform`` (0 to
            ``offset_scale`` R_e) or ``nuclear`` (zero offset).
        offset_scale: in units of R_e.
        max_galaxy_mag_margin: galaxies up to the survey depth plus this (mag) serve as hosts.
    """

    def __init__(
        self,
        per_epoch: int = 10,
        offset_distribution: str = "exponential",
        offset_scale: float = 1.0,
        max_galaxy_mag_margin: float = 0.0,
    ) -> None:
        if offset_distribution not in ("exponential", "uniform", "nuclear"):
            raise ValueError(f"unknown offset_distribution {offset_distribution!r}")
        self.per_epoch = per_epoch
        self.offset_distribution = offset_distribution
        self.offset_scale = offset_scale
        self.max_galaxy_mag_margin = max_galaxy_mag_margin

    def _offsets(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.offset_distribution == "exponential":
            return rng.exponential(self.offset_scale, n)
        if self.offset_distribution == "uniform":
            return rng.uniform(0, self.offset_scale, n)
        return np.zeros(n)

    def label(self, ctx: EpochContext) -> tuple[pd.DataFrame, StampSet]:
        asteroids = np.flatnonzero(known_asteroid_rows(ctx) & ctx.candidates["isdiffpos"].to_numpy())
        cat = ctx.frame.catalog
        depth = ctx.field.survey.depth_m5
        hosts = cat[
            (cat["sgscore"] < 0.5) & cat["r_eff"].notna() & (cat["mag"] < depth + self.max_galaxy_mag_margin)
        ]
        if asteroids.size == 0 or len(hosts) == 0 or self.per_epoch == 0:
            return ctx.candidates.iloc[:0], ctx.stamps.take(np.zeros(0, int))
        rng, n = ctx.rng, self.per_epoch
        donor = rng.choice(asteroids, n)
        host = hosts.iloc[rng.integers(0, len(hosts), n)]
        scale = ctx.field.survey.pixel_scale
        offset_re = self._offsets(rng, n)
        r = offset_re * host["r_eff"].to_numpy() / scale
        phi = rng.uniform(0, 2 * np.pi, n)
        q = host["axis_ratio"].to_numpy()
        pa = np.deg2rad(host["pa"].to_numpy())
        u, v = r / np.sqrt(q) * np.cos(phi), r * np.sqrt(q) * np.sin(phi)
        x = host["x"].to_numpy() - u * np.sin(pa) + v * np.cos(pa)
        y = host["y"].to_numpy() + u * np.cos(pa) + v * np.sin(pa)
        ny, nx = ctx.frame.difference.image.shape
        x, y = np.clip(x, 0, nx - 1), np.clip(y, 0, ny - 1)

        base = ctx.frame.cut(x, y, ctx.stamp_size)
        ast = ctx.stamps.take(donor)
        stamps = StampSet(
            sci=base.sci + ast.diff,
            ref=base.ref,
            diff=base.diff + ast.diff,
            variance=base.variance + ast.variance,
            mask=base.mask | ast.mask,
            score=None if base.score is None else base.score + ast.score,
        )
        x, y = np.rint(x), np.rint(y)  # stamps are centred on whole pixels
        features = ctx.frame.measure(stamps, x, y, np.ones(n, np.int8))
        ra, dec = ctx.frame.difference.wcs.all_pix2world(x, y, 0)
        donor_rows = ctx.candidates.iloc[donor].reset_index(drop=True)
        rows = pd.concat(
            [
                pd.DataFrame({"x": x, "y": y, "sign": np.ones(n, np.int8), "ra": ra, "dec": dec}),
                features,
                pd.DataFrame(
                    {
                        "npix": donor_rows["npix"].to_numpy(),
                        "sep_flag": donor_rows["sep_flag"].to_numpy(),
                        "truth_real": True,
                        "truth_type": "sn",
                        "transient_id": -1,
                        "truth_mag": donor_rows["truth_mag"].to_numpy(),
                        "truth_host_offset": r * scale,
                        "truth_host_offset_re": offset_re,
                        "bogus_kind": "",
                        "injected_host": host["source_id"].to_numpy(),
                    }
                ),
            ],
            axis=1,
        )
        return labelled(rows, np.ones(n, bool), np.full(n, "sn"), "injected"), stamps
