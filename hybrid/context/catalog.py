"""Catalogues for the context knowledge base: how a table on disk (or in memory) maps to our fields.

A :class:`CatalogSpec` says where a catalogue is (CSV, gzipped CSV, Parquet or FITS), which of its
columns hold which quantity (the column map, set in ``conf/context/*.yaml``), and how to convert its
sizes, axis ratios and redshift flags to ours. :func:`load_catalog` reads it and returns a table in
the standard form every other part of :mod:`hybrid.context` uses:

=========  =======  ==============================================================
column     unit     meaning
=========  =======  ==============================================================
ra, dec    deg      ICRS position
mag        mag      magnitude in the catalogue's band (``CatalogSpec.band``)
mag_err    mag
a          arcsec   semi-major axis of the galaxy's ellipse (see ``size_kind``)
q                   axis ratio b / a, in (0, 1]
pa         deg      position angle of the major axis, east of north
z                   redshift
z_err               redshift uncertainty (NaN: the associator's defaults apply)
z_spec     bool     the redshift is spectroscopic
sgscore             star-galaxy score, 1 = star (Tachibana & Miller 2018)
name       str      display name ("" when the catalogue has none)
cls        str      source class given by the catalogue (e.g. "cv"; "" when none)
catalog    str      the catalogue's name
=========  =======  ==============================================================

Missing values stay NaN here: the associator decides how to treat an unknown size or shape, and
says so in its documentation. Bad input raises :class:`CatalogError` naming the file and the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

#: Kinds of catalogue the knowledge base holds.
KINDS: tuple[str, ...] = ("galaxy", "star", "agn")
#: Fields that must be numbers.
NUMERIC_FIELDS: tuple[str, ...] = (
    "ra",
    "dec",
    "mag",
    "mag_err",
    "size",
    "axis_ratio",
    "pa",
    "z",
    "z_err",
    "sgscore",
    "lum_dist",
)
#: Every field a column map may name.
FIELDS: tuple[str, ...] = (*NUMERIC_FIELDS, "z_spec", "name", "cls", "id")
STANDARD_COLUMNS: tuple[str, ...] = (
    "ra",
    "dec",
    "mag",
    "mag_err",
    "a",
    "q",
    "pa",
    "z",
    "z_err",
    "z_spec",
    "sgscore",
    "name",
    "cls",
    "catalog",
)
_SIZE_KINDS = ("semi_major", "circularized", "diameter")
_AXIS_RATIO_KINDS = ("b_over_a", "a_over_b", "log10_a_over_b")


class CatalogError(ValueError):
    """A catalogue that cannot be used; the message names the file (or table) and the field."""


@dataclass(frozen=True)
class CatalogSpec:
    """Where a catalogue is and how its columns map to the knowledge base's fields.

    Args:
        name: short name shown in sentences and the ``catalog`` column (e.g. "GLADE+").
        kind: "galaxy", "star" or "agn".
        path: file (.csv, .csv.gz, .tsv, .parquet, .fits, .fit, .fits.gz); None for in-memory tables.
        columns: field -> source column; ``name`` may list several columns, the first non-empty wins.
            Fields: ra, dec (deg, required), mag, mag_err, size, axis_ratio, pa (deg, east of north),
            z, z_err, z_spec, sgscore, name, cls, id, and lum_dist (Mpc, Planck 2018), converted to
            z where the catalogue gives a distance instead of a redshift (Mangrove).
        sexagesimal: ra and dec are text, "hh mm ss.s" and "+dd mm ss" (3HSP), not degrees.
        query: pandas ``DataFrame.query`` on the source columns selecting the rows of this kind
            (e.g. "sgscore < 0.5" for the galaxies of a mixed catalogue).
        band: band of ``mag`` (its luminosity function is looked up by this name).
        size_log10: the size column holds log10 of the size.
        size_scale: arcsec per unit of size (after undoing the log10).
        size_kind: "semi_major" (a), "circularized" (sqrt(a b), e.g. a circularised half-light
            radius: a = r / sqrt(q)) or "diameter" (a = d / 2).
        axis_ratio_kind: "b_over_a", "a_over_b" or "log10_a_over_b" (HyperLEDA's logr25).
        z_spec_values: values of the z_spec column that mean "spectroscopic".
        z_spec_min: alternatively, z_spec column values >= this mean spectroscopic (a flag).
        completeness_mag: magnitude to which the catalogue is complete (its limit); None: estimated
            from the data as the ``completeness_quantile`` of the magnitudes.
        completeness_quantile: see ``completeness_mag``.
        id_prefix: display names of rows without a name are ``id_prefix + id``.
    """

    name: str
    kind: str = "galaxy"
    path: str | None = None
    columns: Mapping[str, Any] = field(default_factory=dict)
    query: str | None = None
    sexagesimal: bool = False
    band: str = "r"
    size_log10: bool = False
    size_scale: float = 1.0
    size_kind: str = "semi_major"
    axis_ratio_kind: str = "b_over_a"
    z_spec_values: Sequence[Any] = ("spec",)
    z_spec_min: float | None = None
    completeness_mag: float | None = None
    completeness_quantile: float = 0.9
    id_prefix: str = ""

    def __post_init__(self) -> None:
        where = self.path or self.name
        if self.kind not in KINDS:
            raise CatalogError(f"{where}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.size_kind not in _SIZE_KINDS:
            raise CatalogError(f"{where}: size_kind must be one of {', '.join(_SIZE_KINDS)}")
        if self.axis_ratio_kind not in _AXIS_RATIO_KINDS:
            raise CatalogError(f"{where}: axis_ratio_kind must be one of {', '.join(_AXIS_RATIO_KINDS)}")
        unknown = sorted(set(self.columns) - set(FIELDS))
        if unknown:
            raise CatalogError(f"{where}: unknown field(s) {unknown} in the column map; known: {FIELDS}")
        for required in ("ra", "dec"):
            if required not in self.columns:
                raise CatalogError(f"{where}: the column map must name the {required!r} column")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | CatalogSpec) -> CatalogSpec:
        if isinstance(cfg, CatalogSpec):
            return cfg
        d = dict(cfg)
        d["columns"] = {
            k: (list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v)
            for k, v in dict(d.get("columns") or {}).items()
        }
        if "z_spec_values" in d and d["z_spec_values"] is not None:
            d["z_spec_values"] = tuple(d["z_spec_values"])
        return cls(**d)

    def source_columns(self) -> list[str]:
        out: list[str] = []
        for v in self.columns.values():
            for c in [v] if isinstance(v, str) else list(v):
                if c not in out:
                    out.append(c)
        return out


def _read_columns(path: Path) -> list[str]:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if name.endswith((".fits", ".fit", ".fits.gz", ".fts")):
        from astropy.io import fits

        with fits.open(path) as hdul:
            for hdu in hdul[1:]:
                if hasattr(hdu, "columns"):
                    return list(hdu.columns.names)
        raise CatalogError(f"{path}: no table HDU in this FITS file")
    return list(_read_csv(path, nrows=0).columns)


def _read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(path, columns=columns)
    if name.endswith((".fits", ".fit", ".fits.gz", ".fts")):
        from astropy.table import Table

        t = Table.read(path, format="fits")[columns]
        for c in t.colnames:
            if t[c].dtype.kind == "S":  # FITS strings are bytes
                t[c] = t[c].astype(str)
        return t.to_pandas()
    return _read_csv(path, usecols=lambda c: c.strip() in columns, low_memory=False)


def _read_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    """A CSV or TSV file; blanks around header names and quoted values are dropped (3HSP pads both)."""
    sep = "\t" if path.name.lower().endswith((".tsv", ".tsv.gz")) else ","
    frame = pd.read_csv(path, sep=sep, skipinitialspace=True, **kwargs)
    return frame.rename(columns=lambda c: str(c).strip())


def read_source(spec: CatalogSpec, frame: pd.DataFrame | None = None) -> tuple[pd.DataFrame, str]:
    """The raw rows of a catalogue (the mapped columns, and those the query uses) and a name for errors."""
    wanted = spec.source_columns()
    if frame is not None:
        where = spec.path or f"catalogue {spec.name!r}"
        present = list(frame.columns)
    else:
        if spec.path is None:
            raise CatalogError(f"catalogue {spec.name!r}: no path and no table given")
        path = Path(spec.path).expanduser()
        where = str(path)
        if not path.is_file():
            raise CatalogError(f"{where}: catalogue file not found")
        try:
            present = _read_columns(path)
        except CatalogError:
            raise
        except Exception as err:
            raise CatalogError(f"{where}: cannot read the catalogue ({err})") from err
    missing = [c for c in wanted if c not in present]
    # a list of name columns only needs one of them
    for f, v in spec.columns.items():
        if f == "name" and not isinstance(v, str):
            if any(c in present for c in v):
                missing = [c for c in missing if c not in v]
    if missing:
        fields = [f for f, v in spec.columns.items() if (v if isinstance(v, str) else None) in missing]
        raise CatalogError(
            f"{where}: column(s) {missing} (field(s) {fields}) missing from catalogue {spec.name!r}; "
            f"columns present: {present[:40]}"
        )
    if spec.query:  # read the columns the query names as well
        tokens = set(re.findall(r"[A-Za-z_][A-Za-z0-9_+]*", spec.query))
        wanted += [c for c in present if c in tokens and c not in wanted]
    if frame is None:
        try:
            frame = _read_table(Path(spec.path).expanduser(), [c for c in wanted if c in present])
        except Exception as err:
            raise CatalogError(f"{where}: cannot read the catalogue ({err})") from err
    else:
        frame = frame[[c for c in wanted if c in present]]
    if spec.query:
        try:
            frame = frame.query(spec.query, engine="python")  # allows .str methods
        except Exception as err:
            raise CatalogError(f"{where}: query {spec.query!r} failed ({err})") from err
    return frame, where


def _numeric(frame: pd.DataFrame, column: str, fld: str, where: str) -> np.ndarray:
    s = frame[column]
    if is_bool_dtype(s.dtype):
        raise CatalogError(f"{where}: column {column!r} (field {fld!r}) must be numeric, found booleans")
    if is_numeric_dtype(s.dtype):
        return s.to_numpy(dtype=float, na_value=np.nan)
    as_num = pd.to_numeric(s, errors="coerce")
    bad = as_num.isna() & s.notna() & (s.astype(str).str.strip() != "")
    if bad.any():
        example = s[bad].iloc[0]
        raise CatalogError(
            f"{where}: column {column!r} (field {fld!r}) must be numeric, found {s.dtype} "
            f"values such as {example!r} (row {int(np.flatnonzero(bad.to_numpy())[0])})"
        )
    return as_num.to_numpy(dtype=float, na_value=np.nan)


def _strings(frame: pd.DataFrame, columns: str | Sequence[str], n: int) -> np.ndarray:
    out = np.full(n, "", dtype=object)
    for c in [columns] if isinstance(columns, str) else list(columns):
        if c not in frame.columns:
            continue
        v = frame[c].astype("string").str.strip().str.strip('"').fillna("")
        v = v.mask(v == "None", "").to_numpy(dtype=object)  # Mangrove writes missing names as "None"
        fill = (out == "") & (v != "")
        out[fill] = v[fill]
    return out


def load_catalog(spec: CatalogSpec | Mapping[str, Any], frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Read a catalogue into the standard table (see the module docstring).

    Args:
        spec: the catalogue's :class:`CatalogSpec` (or its config mapping).
        frame: an in-memory table to use instead of ``spec.path`` (a survey's own reference
            catalogue); it may be empty, whereas an empty file is an error.

    Raises:
        CatalogError: missing file or column, non-numeric values in a numeric field, positions out of
            range or missing, or an empty file; the message names the file and the field.
    """
    spec = CatalogSpec.from_config(spec)
    raw, where = read_source(spec, frame)
    n = len(raw)
    if n == 0 and frame is None:
        raise CatalogError(f"{where}: catalogue {spec.name!r} has no rows")
    cols = spec.columns
    angles = ("ra", "dec") if spec.sexagesimal else ()
    values = {
        f: _numeric(raw, c, f, where) for f, c in cols.items() if f in NUMERIC_FIELDS and f not in angles
    }
    if spec.sexagesimal:
        values["ra"], values["dec"] = _sexagesimal(raw[cols["ra"]], raw[cols["dec"]], where)
    nan = np.full(n, np.nan)
    if "lum_dist" in values and "z" not in values:
        values["z"] = redshift_at_distance(values["lum_dist"])
    ra, dec = values["ra"], values["dec"]
    bad = ~np.isfinite(ra) | ~np.isfinite(dec) | (dec < -90) | (dec > 90)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CatalogError(
            f"{where}: {int(bad.sum())} row(s) with missing or impossible positions in fields 'ra'/'dec' "
            f"(first: row {i}, ra={ra[i]!r}, dec={dec[i]!r})"
        )
    q = values.get("axis_ratio", nan)
    if spec.axis_ratio_kind == "a_over_b":
        q = 1.0 / q
    elif spec.axis_ratio_kind == "log10_a_over_b":
        q = 10.0 ** (-q)
    q = np.where(np.isfinite(q), np.clip(q, 0.05, 1.0), np.nan)
    size = values.get("size", nan)
    if spec.size_log10:
        size = 10.0**size
    size = size * spec.size_scale
    if spec.size_kind == "circularized":
        a = size / np.sqrt(np.where(np.isfinite(q), q, 1.0))
    elif spec.size_kind == "diameter":
        a = size / 2.0
    else:
        a = size
    a = np.where(a > 0, a, np.nan)
    out = pd.DataFrame(
        {
            "ra": np.mod(ra, 360.0),
            "dec": dec,
            "mag": values.get("mag", nan),
            "mag_err": values.get("mag_err", nan),
            "a": a,
            "q": q,
            "pa": np.mod(values.get("pa", nan), 180.0),
            "z": np.where(values.get("z", nan) > 0, values.get("z", nan), np.nan),
            "z_err": values.get("z_err", nan),
            "z_spec": _z_spec(raw, spec, n),
            "sgscore": values.get("sgscore", nan),
            "name": _names(raw, spec, n),
            "cls": _strings(raw, cols["cls"], n) if "cls" in cols else np.full(n, "", dtype=object),
            "catalog": spec.name,
        }
    )
    out.loc[out["z"].isna(), "z_spec"] = False
    out.attrs["source"] = where
    out.attrs["band"] = spec.band
    return out


def _sexagesimal(ra: pd.Series, dec: pd.Series, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Degrees from "hh mm ss.s" / "+dd mm ss" text (blank or quoted values are NaN, caught later)."""
    from astropy import units as u
    from astropy.coordinates import Angle

    def clean(s: pd.Series) -> np.ndarray:
        return s.astype("string").str.strip().str.strip('"').fillna("").to_numpy(str)

    out = []
    for text, unit, fld in ((clean(ra), u.hourangle, "ra"), (clean(dec), u.deg, "dec")):
        values = np.full(text.size, np.nan)
        ok = text != ""
        try:
            values[ok] = Angle(text[ok], unit=unit).deg
        except ValueError as err:
            raise CatalogError(f"{where}: field {fld!r} is not sexagesimal text ({err})") from err
        out.append(values)
    return out[0], out[1]


def redshift_at_distance(lum_dist_mpc: np.ndarray) -> np.ndarray:
    """Redshift at a luminosity distance (Mpc, Planck 2018); NaN outside 1e-5 < z < 10 (e.g. the few
    kpc of Galactic objects in Mangrove, where a redshift means nothing) or for NaN distances."""
    from hybrid.context.cosmology import luminosity_distance

    z_grid = np.geomspace(1e-5, 10.0, 3000)
    d_grid = luminosity_distance(z_grid)
    d = np.asarray(lum_dist_mpc, float)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(d) & (d >= d_grid[0]) & (d <= d_grid[-1])
    out = np.full(d.shape, np.nan)
    out[ok] = np.exp(np.interp(np.log(d[ok]), np.log(d_grid), np.log(z_grid)))
    return out


def _z_spec(raw: pd.DataFrame, spec: CatalogSpec, n: int) -> np.ndarray:
    if "z_spec" not in spec.columns:
        return np.zeros(n, bool)
    s = raw[spec.columns["z_spec"]]
    if spec.z_spec_min is not None:
        return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan) >= spec.z_spec_min
    if is_bool_dtype(s.dtype):
        return s.fillna(False).to_numpy(bool)
    return s.isin(list(spec.z_spec_values)).to_numpy(bool)


def _names(raw: pd.DataFrame, spec: CatalogSpec, n: int) -> np.ndarray:
    names = _strings(raw, spec.columns["name"], n) if "name" in spec.columns else np.full(n, "", dtype=object)
    if "id" in spec.columns:
        ids = raw[spec.columns["id"]].to_numpy()
        empty = names == ""
        if empty.any():
            fmt = [
                f"{spec.id_prefix}{int(i)}"
                if isinstance(i, float) and i.is_integer()
                else f"{spec.id_prefix}{i}"
                for i in ids[empty]
            ]
            names[empty] = fmt
    return names


def completeness_limit(mags: np.ndarray, spec: CatalogSpec) -> float:
    """The catalogue's limiting magnitude: configured, or the given quantile of its magnitudes.

    For counts rising as 10^(0.3..0.45 m) and cut off by a roll-off a few tenths of a magnitude wide,
    about 10% of the catalogue lies beyond the 50%-completeness magnitude, hence the default 0.9.
    NaN when it is neither configured nor measurable (no magnitudes).
    """
    if spec.completeness_mag is not None:
        return float(spec.completeness_mag)
    m = mags[np.isfinite(mags)]
    return float(np.quantile(m, spec.completeness_quantile)) if m.size else float("nan")
