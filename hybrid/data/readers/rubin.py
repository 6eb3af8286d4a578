"""Rubin alert packets (avro), as defined by the schemas of the ``lsst-alert-packet`` package.

A Rubin alert (LSST Data Products Definition Document, LSE-163; schema ``lsst.vX_Y.alert``) holds the
triggering ``diaSource``, its history, the ``diaObject`` and three cutouts, ``cutoutScience``,
``cutoutTemplate`` and ``cutoutDifference``, as FITS bytes (image in the primary HDU or the first image
extension). Files are avro object containers (as ``lsst.alert.packet.Schema.store_alerts`` writes
them); any schema version is read, by field name.

Mapping to the framework's features (:data:`RUBIN_FEATURE_MAP`). Rubin fluxes are calibrated (nJy), not
counts, so the ADU flux features stay missing and magnitudes are AB from nJy; moments are in arcsec^2.
Features without a Rubin equivalent are left missing and imputed by the model.

========================  ===============================================================
feature                   diaSource source
========================  ===============================================================
mag_psf, sigma_mag_psf    31.4 - 2.5 log10 |psfFlux|, 1.0857 psfFluxErr / |psfFlux|
snr_psf, snr_aper         |psfFlux| / psfFluxErr, |apFlux| / apFluxErr
isdiffpos                 psfFlux > 0
chi2_psf                  psfChi2 / (psfNdata - 1)
scorr_peak                snr (detection S/N on the difference image)
fwhm, elongation,         2.3548 (l1 l2)^(1/4), sqrt(l1 / l2), 1 - sqrt(l2 / l1), with l1 >= l2 the
ellipticity               eigenvalues of the (ixx, ixy, iyy) moments (arcsec^2)
fwhm_sci                  the same from ixxPSF, iyyPSF, ixyPSF
stamp_* fractions         measured on the stamps
others                    missing (flux_* are nJy in Rubin, not counts; no PS1-style match)
========================  ===============================================================

``reliability``, ``extendedness``, ``isDipole`` and ``pixelFlags_bad`` are kept as ``rubin_*`` columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hybrid.data.readers.base import (
    READERS,
    AlertBatch,
    AvroAlertReader,
    Chunk,
    assemble,
    numeric_column,
    stamps_from_cutouts,
)

#: (ny, nx) of an LSSTCam science CCD's imaging area
RUBIN_DETECTOR_SHAPE = (4000, 4072)
RUBIN_PIXEL_SCALE = 0.2
#: AB magnitude of 1 nJy
NJY_ZERO_POINT = 31.4
REQUIRED = ("diaSourceId", "ra", "dec", "midpointMjdTai", "psfFlux", "psfFluxErr")
CUTOUTS = {"sci": "cutoutScience", "ref": "cutoutTemplate", "diff": "cutoutDifference"}
EXTRAS = ("reliability", "extendedness", "isDipole", "pixelFlags_bad")

RUBIN_FEATURE_MAP: dict[str, str] = {
    "mag_psf": "31.4 - 2.5 * log10(|psfFlux| [nJy])",
    "sigma_mag_psf": "1.0857 * psfFluxErr / |psfFlux|",
    "snr_psf": "|psfFlux| / psfFluxErr",
    "snr_aper": "|apFlux| / apFluxErr",
    "isdiffpos": "psfFlux > 0",
    "chi2_psf": "psfChi2 / (psfNdata - 1)",
    "scorr_peak": "snr",
    "fwhm": "2.3548 * det(ixx, ixy, iyy)**0.25 [arcsec]",
    "elongation": "sqrt(l1 / l2) of the moments",
    "ellipticity": "1 - sqrt(l2 / l1) of the moments",
    "fwhm_sci": "2.3548 * det(ixxPSF, ixyPSF, iyyPSF)**0.25 [arcsec]",
    "stamp_nan_fraction": "measured on the difference stamp",
    "stamp_edge_fraction": "measured: padded fraction of short cutouts",
    "flux_psf": "",
    "flux_psf_err": "",
    "flux_aper": "",
    "maglim": "",
    "dist_nearest_src": "",
    "sgscore_nearest": "",
}


def _moments(ixx: np.ndarray, iyy: np.ndarray, ixy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FWHM (same length unit as sqrt(moment)), elongation and ellipticity of second moments."""
    half = (ixx + iyy) / 2
    disc = np.sqrt(np.maximum(half**2 - (ixx * iyy - ixy**2), 0))
    l1, l2 = half + disc, half - disc
    l2 = np.where(l2 > 0, l2, np.nan)  # not positive definite: moments that describe no shape
    with np.errstate(divide="ignore", invalid="ignore"):
        fwhm = 2.3548 * (l1 * l2) ** 0.25
        ratio = np.sqrt(l1 / l2)
    return fwhm, ratio, 1.0 - 1.0 / ratio


def rubin_features(src: pd.DataFrame) -> pd.DataFrame:
    """Framework features (see the module table) from a table of ``diaSource`` records."""
    flux, err = numeric_column(src, "psfFlux"), numeric_column(src, "psfFluxErr")
    ap, ap_err = numeric_column(src, "apFlux"), numeric_column(src, "apFluxErr")
    fwhm, elong, ellip = _moments(
        numeric_column(src, "ixx"), numeric_column(src, "iyy"), numeric_column(src, "ixy")
    )
    fwhm_sci, _, _ = _moments(
        numeric_column(src, "ixxPSF"), numeric_column(src, "iyyPSF"), numeric_column(src, "ixyPSF")
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.DataFrame(
            {
                "mag_psf": NJY_ZERO_POINT - 2.5 * np.log10(np.abs(flux)),
                "sigma_mag_psf": 1.0857 * err / np.abs(flux),
                "snr_psf": np.abs(flux) / err,
                "snr_aper": np.abs(ap) / ap_err,
                "isdiffpos": np.where(np.isfinite(flux), (flux > 0).astype(np.float64), np.nan),
                "chi2_psf": numeric_column(src, "psfChi2")
                / np.maximum(numeric_column(src, "psfNdata") - 1, 1),
                "scorr_peak": numeric_column(src, "snr"),
                "fwhm": fwhm,
                "elongation": elong,
                "ellipticity": ellip,
                "fwhm_sci": fwhm_sci,
            }
        )


@dataclass
class RubinChunk(Chunk):
    source: str
    records: list[dict]

    def decode(self, stamp_size: int) -> AlertBatch:
        recs = self.records
        n = len(recs)
        src = pd.DataFrame.from_records([r.get("diaSource") or {} for r in recs], index=range(n))
        failed: dict[int, str] = {}
        for name in REQUIRED:
            missing = np.ones(n, bool) if name not in src else src[name].isna().to_numpy()
            for i in np.flatnonzero(missing):
                failed.setdefault(int(i), f"diaSource.{name} missing")
        alert_id = [
            str(r.get("diaSourceId") or (r.get("diaSource") or {}).get("diaSourceId") or f"row{i}")
            for i, r in enumerate(recs)
        ]
        skip = np.zeros(n, bool)
        skip[list(failed)] = True
        cutouts = {ch: [r.get(field) for r in recs] for ch, field in CUTOUTS.items()}
        stamps, edge, bad = stamps_from_cutouts(
            alert_id,
            cutouts,
            stamp_size,
            x=numeric_column(src, "x") + 1,
            y=numeric_column(src, "y") + 1,
            frame=RUBIN_DETECTOR_SHAPE,
            skip=skip,
        )
        failed.update(bad)
        obj = src["diaObjectId"] if "diaObjectId" in src else pd.Series([None] * n)
        ss = src["ssObjectId"] if "ssObjectId" in src else pd.Series([None] * n)
        ids = pd.DataFrame(
            {
                "alert_id": alert_id,
                "object_id": [
                    str(int(o)) if pd.notna(o) else (str(int(s)) if pd.notna(s) else "")
                    for o, s in zip(obj, ss, strict=True)
                ],
                "survey": "rubin",
                "band": src["band"].fillna("").astype(str).to_numpy() if "band" in src else "",
                "ra": numeric_column(src, "ra"),
                "dec": numeric_column(src, "dec"),
                "mjd": numeric_column(src, "midpointMjdTai"),
                "source": self.source,
            }
        )
        extras = pd.DataFrame({f"rubin_{name}": numeric_column(src, name) for name in EXTRAS})
        features = rubin_features(src)
        repaired = {  # moments given but not positive definite: the shape features are repaired to NaN
            name: np.isfinite(numeric_column(src, xx)) & ~np.isfinite(features[name].to_numpy())
            for name, xx in (
                ("fwhm", "ixx"),
                ("elongation", "ixx"),
                ("ellipticity", "ixx"),
                ("fwhm_sci", "ixxPSF"),
            )
        }
        return assemble(ids, features, stamps, edge, failed, self.source, extras, repaired)


@READERS.register("rubin_avro")
class RubinAvroReader(AvroAlertReader):
    """Rubin alert packets in avro object-container files (any ``lsst.vX_Y.alert`` schema)."""

    survey = "rubin"
    feature_map = RUBIN_FEATURE_MAP
    schema_prefix = "lsst"

    def make_chunk(self, records: list[dict], source: str) -> Chunk:
        return RubinChunk(source, records)
