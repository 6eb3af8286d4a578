"""FITS input and output of exposures and catalogues, so simulated fields can leave the process.

Exposure file layout (``.fits`` or gzip-compressed ``.fits.gz``, chosen by the file name):

* primary HDU, no data; calibration and provenance keywords: ``MAGZP`` (mag of 1 ADU), ``GAIN``
  (e-/ADU), ``SATURATE`` (ADU, omitted when infinite), ``SURVEY``, ``FILTER``, ``MJD-OBS`` (d),
  ``BKGSUB`` (sky removed), the PSF (``PSFTYPE = 'MOFFAT'`` with ``PSFFWHM`` (px), ``PSFBETA``,
  ``PSF_E1``, ``PSF_E2``, ``PSF_SLX``, ``PSF_SLY``, ``PSF_CURV``, ``PSF_ASTG`` -- the
  :class:`~hybrid.psf.MoffatPSF` fields; its shape is the image's ``NAXIS2, NAXIS1`` unless
  ``PSF_NY``/``PSF_NX`` say otherwise), and scalar ``Exposure.meta`` entries as ``HIERARCH META <key>``;
* ``IMAGE`` (float32, ``BUNIT = 'adu'``), ``VARIANCE`` (float32, ``'adu2'``) and ``MASK`` (uint16
  stored with ``BZERO = 32768``; one ``MASKBIT<value>`` keyword per :class:`~hybrid.exposure.Mask`
  bit), each carrying the celestial WCS;
* ``PSF`` (float64 kernel) for any PSF that is not a Moffat model (``PSFTYPE = 'IMAGE'``).

Readers raise :class:`FitsFormatError` (an :class:`~hybrid.exposure.InvalidExposureError`) naming
the file and the extension or keyword at fault. Writers are atomic: a temporary file in the target
directory is renamed over the target, so a killed writer never leaves a half-written file.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import warnings
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.table import Table
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS, FITSFixedWarning

from hybrid.exposure import Exposure, InvalidExposureError, Mask
from hybrid.io import atomic_write
from hybrid.psf import ImagePSF, MoffatPSF

if TYPE_CHECKING:
    from hybrid.sim.field import SimulatedField

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
PLANES = ("IMAGE", "VARIANCE", "MASK")
PLANE_UNITS = {"IMAGE": "adu", "VARIANCE": "adu2"}
MASK_DOC = {
    "BAD": "hot pixel or bad column",
    "SATURATED": "saturated, bleed trails included",
    "NO_DATA": "outside footprint, NaN in IMAGE",
    "EDGE": "within the frame edge margin",
}
#: (name, value) of every Mask bit, written as ``MASKBIT<value> = '<name>'`` in the MASK header.
MASK_BITS = sorted(
    ((k, int(v)) for k, v in vars(Mask).items() if isinstance(v, np.integer)), key=lambda kv: kv[1]
)
#: Units written for catalogue columns of these names (FITS ``TUNIT``).
CATALOG_UNITS = {
    "ra": "deg",
    "dec": "deg",
    "mag": "mag",
    "mag_err": "mag",
    "r_eff": "arcsec",
    "x": "pix",
    "y": "pix",
    "pa": "deg",
}
_MOFFAT_KEYS = {  # keyword: (MoffatPSF field, comment)
    "PSFFWHM": ("fwhm", "[px] PSF FWHM at the detector centre"),
    "PSFBETA": ("beta", "Moffat power index"),
    "PSF_E1": ("e1", "PSF ellipticity e1 at the centre"),
    "PSF_E2": ("e2", "PSF ellipticity e2 at the centre"),
    "PSF_CURV": ("fwhm_curvature", "fractional FWHM curvature across the field"),
    "PSF_ASTG": ("astigmatism", "field astigmatism amplitude"),
}


class FitsFormatError(InvalidExposureError):
    """A FITS file that cannot be read as an exposure or catalogue; the message names file and field."""


class FitsFileNotFoundError(FitsFormatError, FileNotFoundError):
    """The FITS file does not exist (also a :class:`FileNotFoundError`)."""


# ---------------------------------------------------------------------------------------- helpers


def _open_fits(path: Path) -> fits.HDUList:
    """Open ``path`` fully in memory; raise :class:`FitsFormatError` for missing, truncated or corrupt files.

    Gzip files (detected by their magic bytes) are decompressed here because astropy silently drops
    the HDUs after a truncated gzip stream.
    """
    if not path.is_file():
        raise FitsFileNotFoundError(f"{path}: file not found")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise FitsFormatError(f"{path}: cannot read file: {err}") from err
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise FitsFormatError(f"{path}: broken or truncated gzip stream: {err}") from err
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AstropyWarning)
        try:
            hdul = fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False)
        except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError) as err:
            raise FitsFormatError(f"{path}: not a valid FITS file: {err}") from err
    for i, hdu in enumerate(hdul):
        info = hdul.fileinfo(i)
        if info is not None and info["datLoc"] + info["datSpan"] > len(raw):
            hdul.close()
            raise FitsFormatError(
                f"{path}: truncated FITS file: extension {hdu.name!r} ends past the file end"
            )
    for w in caught:
        msg = str(w.message)
        if "truncated" in msg or "corrupted" in msg or "not multiple of 2880" in msg:
            hdul.close()
            raise FitsFormatError(f"{path}: truncated or corrupt FITS file: {msg.splitlines()[0]}")
    return hdul


def _hdu_data(path: Path, hdu: fits.hdu.base.ExtensionHDU | fits.PrimaryHDU) -> Any:
    try:
        return hdu.data
    except (OSError, EOFError, ValueError, TypeError) as err:
        raise FitsFormatError(f"{path}: extension {hdu.name!r}: unreadable data: {err}") from err


def _native(array: np.ndarray) -> np.ndarray:
    """``array`` in native byte order (FITS stores big-endian)."""
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def _read_plane(
    path: Path, hdul: fits.HDUList, name: str, repairs: list[str]
) -> tuple[np.ndarray, fits.Header]:
    if name not in hdul:
        found = ", ".join(h.name for h in hdul)
        raise FitsFormatError(f"{path}: missing extension {name!r} (found: {found})")
    hdu = hdul[name]
    data = _hdu_data(path, hdu)
    if data is None:
        raise FitsFormatError(f"{path}: extension {name!r} has no data")
    data = np.asarray(data)
    if data.ndim != 2:
        raise FitsFormatError(f"{path}: extension {name!r} must be a 2-D image, got shape {data.shape}")
    if data.dtype.kind not in "biuf":
        raise FitsFormatError(f"{path}: extension {name!r} has non-numeric dtype {data.dtype}")
    data = _native(data)
    if name == "MASK":
        if data.dtype.kind == "f":
            if not (np.isfinite(data).all() and (data == np.round(data)).all()):
                raise FitsFormatError(f"{path}: extension 'MASK' holds non-integer values")
            repairs.append(f"MASK: {data.dtype} converted to uint16")
        if data.size and (data.min() < 0 or data.max() > np.iinfo(np.uint16).max):
            raise FitsFormatError(f"{path}: extension 'MASK' has values outside the uint16 range")
        if data.dtype != np.uint16 and data.dtype.kind != "f":
            repairs.append(f"MASK: {data.dtype} converted to uint16")
        return data.astype(np.uint16, copy=False), hdu.header
    if data.dtype != np.float32:
        repairs.append(f"{name}: {data.dtype} converted to float32")
        data = data.astype(np.float32)
    return data, hdu.header


class _Keywords:
    """Keyword look-up in the primary header, falling back to the IMAGE header, with clear errors."""

    _REQUIRED = object()

    def __init__(self, path: Path, *headers: fits.Header) -> None:
        self.path, self.headers = path, headers

    def __contains__(self, key: str) -> bool:
        return any(key in h for h in self.headers)

    def get(self, key: str, kind: type, default: Any = _REQUIRED) -> Any:
        for h in self.headers:
            if key in h:
                value = h[key]
                break
        else:
            if default is self._REQUIRED:
                raise FitsFormatError(f"{self.path}: keyword {key!r} missing from the primary header")
            return default
        try:
            if kind is bool:
                if isinstance(value, str):
                    return value.strip().upper() in ("T", "TRUE", "1", "Y", "YES")
                return bool(value)
            if kind is str:
                return str(value).strip()
            return kind(value)
        except (TypeError, ValueError) as err:
            raise FitsFormatError(
                f"{self.path}: keyword {key!r} = {value!r} is not a valid {kind.__name__}"
            ) from err


def _read_wcs(path: Path, header: fits.Header, extension: str = "IMAGE") -> WCS:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header)
    except Exception as err:  # wcslib raises a zoo of exception types for bad headers
        raise FitsFormatError(f"{path}: extension {extension!r} has an invalid wcs: {err}") from err
    if not wcs.has_celestial:
        raise FitsFormatError(
            f"{path}: extension {extension!r} has no celestial wcs (CTYPE1/CTYPE2 missing or not celestial)"
        )
    return wcs.celestial if wcs.naxis != 2 else wcs


def _read_psf(
    path: Path, hdul: fits.HDUList, keys: _Keywords, shape: tuple[int, int]
) -> MoffatPSF | ImagePSF:
    kind = keys.get("PSFTYPE", str, "IMAGE" if "PSF" in hdul else None)
    if kind is None:
        raise FitsFormatError(f"{path}: no PSF description (keyword 'PSFTYPE' or extension 'PSF')")
    kind = kind.upper()
    if kind == "MOFFAT":
        params = {attr: keys.get(key, float, None) for key, (attr, _) in _MOFFAT_KEYS.items()}
        for key in ("PSFFWHM", "PSFBETA"):
            if params[_MOFFAT_KEYS[key][0]] is None:
                raise FitsFormatError(f"{path}: keyword {key!r} missing for PSFTYPE 'MOFFAT'")
        params = {k: v for k, v in params.items() if v is not None}
        slope = (keys.get("PSF_SLX", float, 0.0), keys.get("PSF_SLY", float, 0.0))
        psf_shape = (keys.get("PSF_NY", int, shape[0]), keys.get("PSF_NX", int, shape[1]))
        return MoffatPSF(shape=psf_shape, fwhm_slope=slope, **params)
    if kind == "IMAGE":
        if "PSF" not in hdul:
            raise FitsFormatError(f"{path}: missing extension 'PSF' for PSFTYPE 'IMAGE'")
        kernel = _hdu_data(path, hdul["PSF"])
        if kernel is None or np.ndim(kernel) != 2 or not np.isfinite(kernel).all():
            raise FitsFormatError(f"{path}: extension 'PSF' must be a finite 2-D kernel")
        return ImagePSF(kernel=_native(np.asarray(kernel)).astype(np.float64))
    raise FitsFormatError(f"{path}: keyword 'PSFTYPE' = {kind!r} is not 'MOFFAT' or 'IMAGE'")


# --------------------------------------------------------------------------------------- exposures


def _psf_cards(exposure: Exposure) -> tuple[list[tuple[str, Any, str]], fits.ImageHDU | None]:
    psf = exposure.psf
    if isinstance(psf, MoffatPSF):
        cards = [("PSFTYPE", "MOFFAT", "spatially varying elliptical Moffat PSF")]
        cards += [(key, float(getattr(psf, attr)), doc) for key, (attr, doc) in _MOFFAT_KEYS.items()]
        cards += [
            ("PSF_SLX", float(psf.fwhm_slope[0]), "fractional FWHM slope along x"),
            ("PSF_SLY", float(psf.fwhm_slope[1]), "fractional FWHM slope along y"),
        ]
        if tuple(psf.shape) != tuple(exposure.shape):
            cards += [
                ("PSF_NY", int(psf.shape[0]), "[px] PSF model frame height"),
                ("PSF_NX", int(psf.shape[1]), "[px] PSF model frame width"),
            ]
        return cards, None
    kernel = getattr(psf, "kernel", None)
    if kernel is None:  # a PSF known only through image_at: sample it at the frame centre
        ny, nx = exposure.shape
        fwhm = psf.fwhm_at((nx - 1) / 2, (ny - 1) / 2)
        size = 2 * int(np.ceil(3 * max(fwhm, 1.0))) + 1
        kernel = psf.image_at((nx - 1) / 2, (ny - 1) / 2, size)
    hdu = fits.ImageHDU(np.asarray(kernel, np.float64), name="PSF")
    return [("PSFTYPE", "IMAGE", "pixelised PSF kernel in extension PSF")], hdu


def _put(header: fits.Header, key: str, value: Any, comment: str) -> None:
    """``header[key] = (value, comment)``, dropping the comment where the card would be too long."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", VerifyWarning)
        try:
            fits.Card(key, value, comment).image  # noqa: B018 -- formatting the card validates it
        except VerifyWarning:
            comment = ""
    header[key] = (value, comment)


def _meta_cards(header: fits.Header, meta: Mapping[str, Any]) -> None:
    """Scalar meta entries as ``HIERARCH META <key>``; others (and unrepresentable ones) are skipped."""
    for key, value in meta.items():
        if isinstance(value, np.generic):
            value = value.item()
        finite = not isinstance(value, float) or np.isfinite(value)
        if not (isinstance(value, (bool, int, float, str)) and finite):
            log.debug("meta %r not written to FITS: %r is not a finite scalar", key, value)
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                header[f"HIERARCH META {key}"] = value
        except Exception:  # too long for a card, or not ASCII
            log.debug("meta %r not written to FITS: not representable in a header card", key)


def write_exposure(exposure: Exposure, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``exposure`` as a multi-extension FITS file (see the module docstring for the layout).

    ``.gz`` file names are gzip-compressed. The write is atomic. Returns the path written.
    """
    exposure.validate()
    primary = fits.Header()
    _put(primary, "FMTVERS", FORMAT_VERSION, "hybrid exposure file format version")
    _put(primary, "MAGZP", float(exposure.zero_point), "[mag] magnitude of a 1 ADU total flux")
    _put(primary, "GAIN", float(exposure.gain), "[e-/ADU] gain")
    if np.isfinite(exposure.saturation):
        _put(primary, "SATURATE", float(exposure.saturation), "[adu] saturation level")
    _put(primary, "SURVEY", str(exposure.survey), "survey name")
    _put(primary, "FILTER", str(exposure.band), "band")
    _put(primary, "MJD-OBS", float(exposure.mjd), "[d] mid-exposure time (MJD)")
    _put(primary, "BKGSUB", bool(exposure.background_subtracted), "sky background subtracted")
    psf_cards, psf_hdu = _psf_cards(exposure)
    for key, value, comment in psf_cards:
        _put(primary, key, value, comment)
    _put(primary, "ORIGSRC", str(exposure.source), "source of the exposure before it was written")
    _meta_cards(primary, exposure.meta)

    wcs_header = exposure.wcs.to_header(relax=True)
    hdus: list[fits.hdu.base.ExtensionHDU | fits.PrimaryHDU] = [fits.PrimaryHDU(header=primary)]
    planes = {
        "IMAGE": np.asarray(exposure.image, np.float32),
        "VARIANCE": np.asarray(exposure.variance, np.float32),
        "MASK": np.asarray(exposure.mask, np.uint16),
    }
    for name, data in planes.items():
        header = wcs_header.copy()
        if name in PLANE_UNITS:
            header["BUNIT"] = (PLANE_UNITS[name], "pixel unit")
        else:
            for bit_name, bit in MASK_BITS:
                header[f"MASKBIT{bit}"] = (bit_name, MASK_DOC.get(bit_name, "mask bit"))
        hdus.append(fits.ImageHDU(data, header=header, name=name))
    if psf_hdu is not None:
        hdus.append(psf_hdu)
    hdul = fits.HDUList(hdus)
    return atomic_write(path, lambda tmp: hdul.writeto(tmp, overwrite=True), overwrite=overwrite)


def read_exposure(path: str | os.PathLike) -> Exposure:
    """Read an exposure written by :func:`write_exposure` (or a compatible file).

    Repairs, listed in ``meta["fits_repairs"]``: integer or float64 IMAGE/VARIANCE are converted to
    float32 and integer or integral-float MASK to uint16. Big-endian data (the FITS on-disk order)
    are always returned in native byte order. ``source`` is set to ``path`` so validation errors
    name the file; NaN pixels without the ``NO_DATA`` bit raise, as for any exposure.

    Raises:
        FitsFormatError: missing, truncated or corrupt file (gzip included), missing extension,
            keyword (``MAGZP``) or celestial wcs, invalid PSF description.
        InvalidExposureError: the arrays are inconsistent (e.g. shapes differ between extensions).
    """
    path = Path(path)
    with _open_fits(path) as hdul:
        repairs: list[str] = []
        image, image_header = _read_plane(path, hdul, "IMAGE", repairs)
        variance, _ = _read_plane(path, hdul, "VARIANCE", repairs)
        mask, _ = _read_plane(path, hdul, "MASK", repairs)
        keys = _Keywords(path, hdul[0].header, image_header)
        wcs = _read_wcs(path, image_header)
        zero_point = keys.get("MAGZP", float)
        psf = _read_psf(path, hdul, keys, image.shape)
        meta: dict[str, Any] = {
            k[len("META ") :]: v for k, v in hdul[0].header.items() if k.startswith("META ")
        }
        if "ORIGSRC" in hdul[0].header:
            meta.setdefault("original_source", str(hdul[0].header["ORIGSRC"]))
        if repairs:
            meta["fits_repairs"] = repairs
            log.info("%s: repaired on read: %s", path, "; ".join(repairs))
        return Exposure(
            image=image,
            variance=variance,
            mask=mask,
            psf=psf,
            wcs=wcs,
            zero_point=zero_point,
            gain=keys.get("GAIN", float, 1.0),
            saturation=keys.get("SATURATE", float, np.inf),
            survey=keys.get("SURVEY", str, "unknown"),
            band=keys.get("FILTER", str, "r"),
            mjd=keys.get("MJD-OBS", float, 0.0),
            background_subtracted=keys.get("BKGSUB", bool, False),
            source=str(path),
            meta=meta,
        )


# -------------------------------------------------------------------------------------- catalogues


def _column_for_fits(series: pd.Series) -> tuple[np.ndarray, str | None, bool]:
    """A FITS-writable array for ``series``, the pandas kind of a text column and whether it has NAs.

    Text kinds: ``'str'`` (pandas string dtypes), ``'object'``, ``'category'``; ``None`` for numbers.
    """
    dtype = series.dtype
    has_na = bool(series.isna().any())
    if pd.api.types.is_bool_dtype(dtype) and not has_na:
        return series.to_numpy(bool), None, False
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        if has_na and not pd.api.types.is_float_dtype(dtype):
            return series.to_numpy(float, na_value=np.nan), None, False
        return series.to_numpy(), None, False
    # strings, objects, categories and anything else: UTF-8 bytes, NA as ''
    if isinstance(dtype, pd.CategoricalDtype):
        kind = "category"
    elif isinstance(dtype, pd.StringDtype):
        kind = "str"
    else:
        kind = "object"
    values = [b"" if pd.isna(v) else str(v).encode("utf-8") for v in series]
    width = max([1, *(len(v) for v in values)])
    return np.array(values, dtype=f"S{width}"), kind, has_na


def write_catalog(
    df: pd.DataFrame,
    path: str | os.PathLike,
    *,
    units: Mapping[str, str] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``df`` as a FITS binary table (extension ``CATALOG``), atomically.

    Columns named in :data:`CATALOG_UNITS` (updated by ``units``) get a ``TUNIT``. String, object and
    categorical columns are stored as UTF-8 strings, their pandas kind in ``PDTYPn`` and a missing
    value as an empty string (``PNULLn = T``), so they read back as they were; object columns holding
    non-strings read back as their ``str()``. The index is not stored.
    """
    unit_map = {**CATALOG_UNITS, **(units or {})}
    table = Table()
    text: dict[int, tuple[str, bool]] = {}
    for n, name in enumerate(df.columns, start=1):
        values, kind, has_na = _column_for_fits(df[name])
        table[str(name)] = values
        if str(name) in unit_map:
            table[str(name)].unit = unit_map[str(name)]
        if kind is not None:
            text[n] = (kind, has_na)
    hdu = fits.table_to_hdu(table)
    hdu.name = "CATALOG"
    for n, (kind, has_na) in text.items():
        hdu.header[f"PDTYP{n}"] = (kind, "pandas kind of text column")
        if has_na:
            hdu.header[f"PNULL{n}"] = (True, "empty string means missing")
    hdul = fits.HDUList([fits.PrimaryHDU(), hdu])
    return atomic_write(path, lambda tmp: hdul.writeto(tmp, overwrite=True), overwrite=overwrite)


def read_catalog(path: str | os.PathLike) -> pd.DataFrame:
    """Read a catalogue written by :func:`write_catalog` (or the first binary table of any FITS file).

    Numeric columns come back in native byte order, text columns with their pandas kind (default
    string dtype where unrecorded); the column units are in ``df.attrs["units"]`` (``{column: unit}``).
    """
    path = Path(path)
    with _open_fits(path) as hdul:
        if "CATALOG" in hdul:
            hdu = hdul["CATALOG"]
        else:
            tables = [h for h in hdul if isinstance(h, fits.BinTableHDU)]
            if not tables:
                raise FitsFormatError(f"{path}: missing extension 'CATALOG' (no binary table found)")
            hdu = tables[0]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AstropyWarning)  # unknown units are kept as strings
                table = Table.read(hdu, character_as_bytes=True, mask_invalid=False)
        except (OSError, EOFError, ValueError, TypeError) as err:
            raise FitsFormatError(f"{path}: extension {hdu.name!r}: unreadable table: {err}") from err
        header = hdu.header.copy()
    columns: dict[str, Any] = {}
    units: dict[str, str] = {}
    for n, name in enumerate(table.colnames, start=1):
        col = table[name]
        if col.unit is not None:
            units[name] = col.unit.to_string()
        data = np.asarray(col)
        if data.dtype.kind not in "SU":
            columns[name] = _native(data)
            continue
        strs: list[str | None] = [
            (v.decode("utf-8") if isinstance(v, bytes) else str(v)).rstrip() for v in data
        ]
        if header.get(f"PNULL{n}", False):
            strs = [s or None for s in strs]
        kind = str(header.get(f"PDTYP{n}", "str"))
        if kind == "object":
            columns[name] = pd.Series(strs, dtype=object)
        elif kind == "category":
            columns[name] = pd.Series(strs, dtype="category")
        else:
            columns[name] = pd.Series(strs, dtype=None if strs else object)
    df = pd.DataFrame(columns)
    df.attrs["units"] = units
    return df


# ------------------------------------------------------------------------------------------ fields


def _write_parquet(df: pd.DataFrame, path: Path) -> Path:
    return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_field(field: SimulatedField, directory: str | os.PathLike) -> list[Path]:
    """Write a simulated field into ``directory``; returns the paths written.

    Files: ``reference.fits``, ``science_epoch{e}.fits`` per epoch, ``catalog.fits`` (the observed
    catalogue) and ``truth_epoch{e}.parquet`` (transients and asteroids present in epoch ``e``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [write_exposure(field.reference, directory / "reference.fits")]
    for e, epoch in enumerate(field.epochs):
        paths.append(write_exposure(epoch.science, directory / f"science_epoch{e}.fits"))
    paths.append(write_catalog(field.catalog, directory / "catalog.fits"))
    for e, epoch in enumerate(field.epochs):
        paths.append(_write_parquet(epoch.transients, directory / f"truth_epoch{e}.parquet"))
    return paths
