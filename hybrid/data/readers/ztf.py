"""ZTF alert packets: avro files and the Parquet layout brokers keep them in (Fink, ...).

A ZTF alert (Masci et al. 2019, PASP 131, 018003; schema 3.3, https://zwickytransientfacility.github.io/
ztf-avro-alert/) holds ``objectId``, ``candid``, a ``candidate`` record with the detection's
measurements, ``prv_candidates`` (the history) and three cutouts, ``cutoutScience``,
``cutoutTemplate`` and ``cutoutDifference``, each ``{fileName, stampData}`` with ``stampData`` a
gzipped 63x63 FITS image in DN. Avro files are read with fastavro, one or many alerts per file;
Parquet files hold one alert per row with the same nesting (``candidate`` a struct, the cutouts
structs of ``fileName`` and ``stampData``), as Fink writes them.

Mapping to the framework's features (:data:`ZTF_FEATURE_MAP`; units as in
:data:`hybrid.detection.features.FEATURE_UNITS`). ZTF's catalogue-match fields use -999 for "no
match", read here as missing. Fluxes are converted from magnitudes with the science zero point
fluxes are in microjansky, from the magnitudes (which ZTF calibrated with the exposure's own zero point
``magzpsci``), so no detector unit reaches a model. Features ZTF does not measure the same
way are left missing (NaN) and imputed by the model with a missing-value indicator:

========================  =================================================================
feature                   ZTF source
========================  =================================================================
mag_psf, sigma_mag_psf    magpsf, sigmapsf
flux_psf                  (+1 or -1 by isdiffpos) * 10^(-0.4 (magpsf - 23.9))  [uJy]
flux_psf_err, snr_psf     |flux_psf| sigmapsf / 1.0857, 1.0857 / sigmapsf
flux_aper, snr_aper       the same from magap, sigmagap
isdiffpos                 isdiffpos ('t' or '1' -> 1)
chi2_psf                  chipsf (reduced chi-square of the PSF fit)
fwhm                      fwhm [px] * 1.01 arcsec/px
elongation, ellipticity   elong, 1 - 1/elong
n_neg, n_bad, sumrat      nneg, nbad, sumrat (5x5 box, as ours)
scorr_peak                scorr (peak S/N in the matched-filter image)
dist_nearest_src          distpsnr1 (arcsec, nearest PS1 source)
mag_nearest_src           sgmag1 / srmag1 / simag1, the PS1 magnitude in the alert's band
sgscore_nearest           sgscore1 (Tachibana & Miller 2018)
maglim                    diffmaglim
stamp_* fractions         measured on the stamps
sharpness, fwhm_sci,      missing: ZTF's sharpnr and seeratio describe other quantities, and the
seeing_ratio, ctx_*       alert carries no host association
========================  =================================================================

``classtar``, ``rb``, ``drb``, ``ndethist``, ``ssdistnr``, ``fid``, ``programid`` are kept as
``ztf_*`` columns (not features), and so are the three nearest PS1 sources within 30" (``ztf_distpsnr1``
.. 3 in arcsec, ``ztf_sgscore1`` .. 3, ``ztf_ps1mag1`` .. 3 in the alert's band; NaN for ZTF's -999),
which the context associator reads as the alert's own nearby stars (``conf/context/ztf_real.yaml``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hybrid.data.readers.base import (
    READERS,
    AlertBatch,
    AlertReader,
    AvroAlertReader,
    Chunk,
    ReaderError,
    assemble,
    numeric_column,
    stamps_from_cutouts,
)
from hybrid.detection.features import AB_ZERO_POINT_UJY

#: arcsec / pixel of the ZTF camera (Bellm et al. 2019)
ZTF_PIXEL_SCALE = 1.01
#: (ny, nx) of a ZTF readout-quadrant image, the frame ``xpos``/``ypos`` refer to
ZTF_QUADRANT_SHAPE = (3080, 3072)
ZTF_BANDS = {1: "g", 2: "r", 3: "i"}
#: candidate fields without which an alert is rejected
REQUIRED = ("jd", "fid", "ra", "dec", "magpsf", "sigmapsf", "isdiffpos")
CUTOUTS = {"sci": "cutoutScience", "ref": "cutoutTemplate", "diff": "cutoutDifference"}
EXTRAS = ("classtar", "rb", "drb", "ndethist", "ssdistnr", "fid", "programid")
#: every candidate field this reader uses (the others are not converted)
USED = frozenset(
    {*REQUIRED, *EXTRAS, "candid", "xpos", "ypos", "magap", "sigmagap", "chipsf", "fwhm"}
    | {"elong", "nneg", "nbad", "sumrat", "scorr", "distpsnr1", "sgmag1", "srmag1", "simag1", "sgscore1"}
    | {"diffmaglim"}
    | {f"{field}{k}" for k in (1, 2, 3) for field in ("distpsnr", "sgscore", "sgmag", "srmag", "simag")}
)

ZTF_FEATURE_MAP: dict[str, str] = {
    "mag_psf": "magpsf",
    "sigma_mag_psf": "sigmapsf",
    "flux_psf": "sign(isdiffpos) * 10**(-0.4 * (magpsf - 23.9)) [uJy]",
    "flux_psf_err": "|flux_psf| * sigmapsf / 1.0857",
    "snr_psf": "1.0857 / sigmapsf",
    "flux_aper": "sign(isdiffpos) * 10**(-0.4 * (magap - 23.9)) [uJy]",
    "snr_aper": "1.0857 / sigmagap",
    "isdiffpos": "isdiffpos in ('t', '1')",
    "chi2_psf": "chipsf",
    "fwhm": "fwhm * 1.01",
    "elongation": "elong",
    "ellipticity": "1 - 1 / elong",
    "n_neg": "nneg",
    "n_bad": "nbad",
    "sumrat": "sumrat",
    "scorr_peak": "scorr",
    "dist_nearest_src": "distpsnr1 (-999: missing)",
    "mag_nearest_src": "sgmag1 | srmag1 | simag1 by fid (-999: missing)",
    "sgscore_nearest": "sgscore1 (-999: missing)",
    "maglim": "diffmaglim",
    "stamp_nan_fraction": "measured on the difference stamp",
    "stamp_edge_fraction": "measured: padded fraction of short (CCD-edge) cutouts",
    "sharpness": "",
    "fwhm_sci": "",
    "seeing_ratio": "",
}


def _catalog(values: np.ndarray) -> np.ndarray:
    """ZTF writes -999 (or other negative sentinels) where a catalogue has no match."""
    return np.where(values > -99, values, np.nan)


def isdiffpos_values(cand: pd.DataFrame) -> np.ndarray:
    """``isdiffpos`` as 1.0 ('t', '1', 'true'), 0.0 ('f', '0', 'false') or NaN (missing or anything else)."""
    if "isdiffpos" not in cand:
        return np.full(len(cand), np.nan)
    text = cand["isdiffpos"].astype("string").str.strip().str.lower()
    out = np.where(text.isin(["t", "1", "true"]).to_numpy(bool), 1.0, np.nan)
    return np.where(text.isin(["f", "0", "false"]).to_numpy(bool), 0.0, out)


def ps1_mag(cand: pd.DataFrame, k: int) -> np.ndarray:
    """Magnitude of the k-th nearest PS1 source in the alert's band (g, r, i by fid; -999 kept)."""
    fid = numeric_column(cand, "fid")
    mags = [numeric_column(cand, f"s{b}mag{k}") for b in "gri"]
    return np.select([fid == 1, fid == 2, fid == 3], mags, np.nan)


def ps1_sources(cand: pd.DataFrame) -> pd.DataFrame:
    """The three nearest PS1 sources as ``ztf_distpsnrK``, ``ztf_sgscoreK``, ``ztf_ps1magK`` columns."""
    cols: dict[str, np.ndarray] = {}
    for k in (1, 2, 3):
        cols[f"ztf_distpsnr{k}"] = _catalog(numeric_column(cand, f"distpsnr{k}"))
        cols[f"ztf_sgscore{k}"] = _catalog(numeric_column(cand, f"sgscore{k}"))
        cols[f"ztf_ps1mag{k}"] = _catalog(ps1_mag(cand, k))
    return pd.DataFrame(cols)


def ztf_features(cand: pd.DataFrame) -> pd.DataFrame:
    """Framework features (see the module table) from a table of ZTF ``candidate`` records."""
    diffpos = isdiffpos_values(cand)
    sign = 2.0 * diffpos - 1.0  # NaN when isdiffpos is neither true nor false
    magpsf, sigmapsf = numeric_column(cand, "magpsf"), numeric_column(cand, "sigmapsf")
    magap, sigmagap = numeric_column(cand, "magap"), numeric_column(cand, "sigmagap")
    flux = sign * 10 ** (-0.4 * (magpsf - AB_ZERO_POINT_UJY))
    elong = numeric_column(cand, "elong")
    ps1 = ps1_mag(cand, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.DataFrame(
            {
                "mag_psf": magpsf,
                "sigma_mag_psf": sigmapsf,
                "flux_psf": flux,
                "flux_psf_err": np.abs(flux) * sigmapsf / 1.0857,
                "snr_psf": 1.0857 / sigmapsf,
                "flux_aper": sign * 10 ** (-0.4 * (magap - AB_ZERO_POINT_UJY)),
                "snr_aper": 1.0857 / sigmagap,
                "isdiffpos": diffpos,
                "chi2_psf": numeric_column(cand, "chipsf"),
                "fwhm": numeric_column(cand, "fwhm") * ZTF_PIXEL_SCALE,
                "elongation": elong,
                "ellipticity": 1.0 - 1.0 / elong,
                "n_neg": numeric_column(cand, "nneg"),
                "n_bad": numeric_column(cand, "nbad"),
                "sumrat": numeric_column(cand, "sumrat"),
                "scorr_peak": numeric_column(cand, "scorr"),
                "dist_nearest_src": _catalog(numeric_column(cand, "distpsnr1")),
                "mag_nearest_src": _catalog(ps1),
                "sgscore_nearest": _catalog(numeric_column(cand, "sgscore1")),
                "maglim": numeric_column(cand, "diffmaglim"),
            }
        )


@dataclass
class ZtfChunk(Chunk):
    """ZTF alerts as read: ``candidate`` fields as columns, ids, and the cutout bytes."""

    source: str
    object_id: list[str | None]
    candid: list[object]
    candidate: pd.DataFrame
    cutouts: dict[str, list[bytes | None]]

    def decode(self, stamp_size: int) -> AlertBatch:
        cand = self.candidate
        n = len(cand)
        alert_id = [
            str(c) if c is not None and c == c else f"row{i}"  # c == c: not NaN
            for i, c in enumerate(self.candid)
        ]
        failed: dict[int, str] = {}
        for name in REQUIRED:
            if name not in cand:
                for i in range(n):
                    failed.setdefault(i, f"candidate.{name} missing")
                continue
            for i in np.flatnonzero(cand[name].isna().to_numpy()):
                failed.setdefault(int(i), f"candidate.{name} missing")
        for i, obj in enumerate(self.object_id):
            if obj is None:
                failed.setdefault(i, "objectId missing")
        skip = np.zeros(n, bool)
        skip[list(failed)] = True
        stamps, edge, bad = stamps_from_cutouts(
            alert_id,
            self.cutouts,
            stamp_size,
            x=numeric_column(cand, "xpos"),
            y=numeric_column(cand, "ypos"),
            frame=ZTF_QUADRANT_SHAPE,
            skip=skip,
        )
        failed.update(bad)
        fid = numeric_column(cand, "fid")
        ids = pd.DataFrame(
            {
                "alert_id": alert_id,
                "object_id": [str(o) for o in self.object_id],
                "survey": "ztf",
                "band": [ZTF_BANDS.get(int(f), "") if np.isfinite(f) else "" for f in fid],
                "ra": numeric_column(cand, "ra"),
                "dec": numeric_column(cand, "dec"),
                "mjd": numeric_column(cand, "jd") - 2400000.5,
                "source": self.source,
            }
        )
        extras = pd.DataFrame({f"ztf_{name}": numeric_column(cand, name) for name in EXTRAS})
        extras = pd.concat([extras, ps1_sources(cand)], axis=1)
        # an isdiffpos that is there but neither true nor false: sign unknown, repaired to missing
        odd = np.isnan(isdiffpos_values(cand)) & (
            cand["isdiffpos"].notna().to_numpy() if "isdiffpos" in cand else False
        )
        return assemble(
            ids, ztf_features(cand), stamps, edge, failed, self.source, extras, {"isdiffpos": odd}
        )


def _stamp_bytes(cutout: object) -> bytes | None:
    return cutout.get("stampData") if isinstance(cutout, dict) else None


def chunk_from_records(records: list[dict], source: str) -> ZtfChunk:
    """A chunk from alert dictionaries (as fastavro yields them)."""
    cands = [r.get("candidate") or {} for r in records]
    return ZtfChunk(
        source=source,
        object_id=[r.get("objectId") for r in records],
        candid=[r.get("candid", c.get("candid")) for r, c in zip(records, cands, strict=True)],
        candidate=pd.DataFrame.from_records(cands, index=range(len(records))),
        cutouts={ch: [_stamp_bytes(r.get(field)) for r in records] for ch, field in CUTOUTS.items()},
    )


@READERS.register("ztf_avro")
class ZtfAvroReader(AvroAlertReader):
    """ZTF alert packets in avro files (one or many alerts per file)."""

    survey = "ztf"
    feature_map = ZTF_FEATURE_MAP
    schema_prefix = "ztf"

    def make_chunk(self, records: list[dict], source: str) -> Chunk:
        return chunk_from_records(records, source)


@READERS.register("ztf_parquet")
class ZtfParquetReader(AlertReader):
    """ZTF alerts in Parquet, one per row, nested as in the avro schema (the Fink layout)."""

    survey = "ztf"
    feature_map = ZTF_FEATURE_MAP

    def sniff(self, path: Path) -> bool:
        if not (path.is_file() and path.suffix == ".parquet"):
            return False
        import pyarrow.parquet as pq

        try:
            names = set(pq.ParquetFile(path).schema_arrow.names)
        except Exception:  # unreadable: :meth:`mismatch` says why
            return False
        return {"candidate", "cutoutDifference"} <= names

    def mismatch(self, path: Path) -> str | None:
        if path.suffix != ".parquet" or not path.is_file():
            return None
        import pyarrow.parquet as pq

        try:
            names = set(pq.ParquetFile(path).schema_arrow.names)
        except Exception as err:
            return f"not a readable Parquet file ({err})"
        missing = [c for c in ("candidate", "cutoutDifference") if c not in names]
        return f"Parquet without the ZTF alert column(s) {missing} (columns: {sorted(names)[:20]})"

    def chunks(self, path: Path, batch_size: int) -> Iterator[Chunk]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.sniff(path):
            raise ReaderError(f"{path}: {self.mismatch(path) or 'not a ZTF Parquet file'}")
        pf = pq.ParquetFile(path)
        for name in ("candidate", *CUTOUTS.values()):
            kind = pf.schema_arrow.field(name).type if name in pf.schema_arrow.names else None
            if kind is not None and not pa.types.is_struct(kind):
                raise ReaderError(f"{path}: column {name!r} is {kind}, expected a struct (record)")
        columns = [
            c for c in ("objectId", "candid", "candidate", *CUTOUTS.values()) if c in pf.schema_arrow.names
        ]
        for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
            yield self.chunk_from_arrow(batch, str(path))

    @staticmethod
    def chunk_from_arrow(batch, source: str) -> ZtfChunk:
        """A chunk from an Arrow record batch of ZTF alerts."""
        names = batch.schema.names
        n = batch.num_rows
        cand_struct = batch.column("candidate")
        fields = [cand_struct.type.field(i).name for i in range(cand_struct.type.num_fields)]
        flat = cand_struct.flatten()  # a null candidate record nulls every field
        candidate = pd.DataFrame(
            {
                name: arr.to_numpy(zero_copy_only=False)
                for name, arr in zip(fields, flat, strict=True)
                if name in USED
            }
        )
        candid = (
            batch.column("candid").to_pylist() if "candid" in names else candidate.get("candid", [None] * n)
        )
        cutouts = {}
        for ch, field in CUTOUTS.items():
            if field not in names:
                cutouts[ch] = [None] * n
                continue
            struct = batch.column(field)  # flatten() carries a null record over to its fields
            index = struct.type.get_field_index("stampData")
            cutouts[ch] = struct.flatten()[index].to_pylist() if index >= 0 else [None] * n
        return ZtfChunk(
            source=source,
            object_id=batch.column("objectId").to_pylist() if "objectId" in names else [None] * n,
            candid=list(candid),
            candidate=candidate,
            cutouts=cutouts,
        )
