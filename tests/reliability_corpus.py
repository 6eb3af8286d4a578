"""The malformed-input corpus: every reader, ``hybrid ingest``, ``hybrid predict``, ``hybrid build``,
the knowledge-base loader and the FITS frame reader, each fed broken inputs made from the committed
fixtures (real ZTF alerts from fink-science, lsst-alert-packet's Rubin sample, GLADE+ excerpt,
simulated FITS frames).

Each :class:`Case` says what a user must get, its outcome class:

``error``
    a clear error naming the file (or the config key) and the field: exit status 2 and one line
    ``hybrid: error: ...`` at the CLI (no traceback), a ``ValueError`` / ``OSError`` of that kind from
    the library;
``skip``
    the alert is left out and its reason recorded (``<out>.rejected.csv`` of ``hybrid predict``,
    ``meta.json["rejected"]`` of ``hybrid ingest``), the others go on;
``flag``
    the alert is scored (or written) with a quality flag (``flag_stamp_padding``,
    ``flag_nan_fraction``, ``flag_repaired``, ``flag_duplicate_id``).

:func:`run_case` observes what really happens and classifies it the same way, with ``clean`` for a
malformed alert scored without any flag (silent garbage) and ``traceback`` for an exception that
escaped; both fail the corpus test. ``tests/reliability_report.py`` writes the table to
reports/reliability.md.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import fastavro
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.io import fits

from tests.test_readers import AVRO, astropy_image, fits_gz, records, rubin_sample

GLADE = Path(__file__).parent / "fixtures" / "context" / "glade_excerpt.csv"
#: id given to the malformed alert of a case (the six fixture alerts go along, unharmed)
BAD = 9000


@dataclass(frozen=True)
class Case:
    """A malformed input and the outcome it must end in."""

    name: str
    entry: str  # "hybrid predict" | "hybrid ingest" | "hybrid build" | "load_catalog" | "read_exposure"
    expect: str  # "error" | "skip" | "flag"
    match: str  # regex the error message, the rejection reason or the flags must match
    make: Callable[[Path], object]  # writes the input under a directory; returns its path (or overrides)


@dataclass(frozen=True)
class Outcome:
    kind: str  # "error" | "skip" | "flag" | "clean" | "traceback"
    detail: str


# ------------------------------------------------------------------------------------ ZTF alerts


def _bad(base: int = 0) -> dict:
    rec = copy.deepcopy(records()[base])
    rec["candid"] = rec["candidate"]["candid"] = BAD
    return rec


def _parquet(bad: list[dict], name: str = "alerts.parquet") -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        pq.write_table(pa.Table.from_pylist(records() + bad), d / name)
        return d / name

    return make


def _avro(bad: list[dict]) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        with open(AVRO, "rb") as f:
            schema = fastavro.reader(f).writer_schema
        with open(d / "alerts.avro", "wb") as f:
            fastavro.writer(f, schema, records() + bad)
        return d / "alerts.avro"

    return make


def _with(field: str, value: object, base: int = 0) -> dict:
    """A fixture alert with one candidate field set (None: removed) or one cutout's bytes replaced."""
    rec = _bad(base)
    if field.startswith("cutout"):
        if value is None:
            rec[field] = None
        else:
            rec[field]["stampData"] = value
    elif value is None:
        del rec["candidate"][field]
    else:
        rec["candidate"][field] = value
    return rec


def _diff_image() -> np.ndarray:
    return astropy_image(records()[0]["cutoutDifference"]["stampData"])


def _raw_fits(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    fits.PrimaryHDU(image.astype(">f4")).writeto(buf)
    return buf.getvalue()


def _header_naxis1(value: int) -> bytes:
    """The difference cutout with NAXIS1 rewritten (header and file no longer agree)."""
    raw = bytearray(_raw_fits(_diff_image()))
    at = raw.find(b"NAXIS1  =")
    raw[at : at + 30] = f"NAXIS1  = {value:>20d}".encode()
    return gzip.compress(bytes(raw))


def _edge_cutouts() -> dict:
    rec = _bad(3)
    rec["candidate"]["xpos"] = 12.0
    for name in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
        rec[name]["stampData"] = fits_gz(astropy_image(rec[name]["stampData"])[:, 18:])
    return rec


def _some_inf() -> bytes:
    image = _diff_image().copy()
    image[:20] = np.inf
    return fits_gz(image)


def _write_text(name: str, text: bytes) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        (d / name).write_bytes(text)
        return d / name

    return make


def _drop_column(column: str) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        pq.write_table(pa.Table.from_pylist(records()).drop_columns([column]), d / "alerts.parquet")
        return d / "alerts.parquet"

    return make


def _candidate_as_text(d: Path) -> Path:
    table = pa.Table.from_pylist(records())
    i = table.schema.get_field_index("candidate")
    table = table.set_column(i, "candidate", pa.array(["oops"] * table.num_rows))
    pq.write_table(table, d / "alerts.parquet")
    return d / "alerts.parquet"


def _truncated_avro(d: Path) -> Path:
    raw = AVRO.read_bytes()
    (d / "alerts.avro").write_bytes(raw[: int(len(raw) * 0.6)])
    return d / "alerts.avro"


def _foreign_avro(d: Path) -> Path:
    schema = {"type": "record", "name": "acme.event", "fields": [{"name": "x", "type": "int"}]}
    with open(d / "events.avro", "wb") as f:
        fastavro.writer(f, schema, [{"x": 1}])
    return d / "events.avro"


# ----------------------------------------------------------------------------------- Rubin alerts


def _rubin(edit: Callable[[dict], None]) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        data, schema = rubin_sample()
        image = _diff_image()
        for name in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
            data[name] = _raw_fits(image)
        data["diaSource"]["diaSourceId"] = data["diaSourceId"] = BAD
        edit(data)
        with open(d / "rubin.avro", "wb") as f:
            schema.store_alerts(f, [data])
        return d / "rubin.avro"

    return make


def _set_source(key: str, value: object) -> Callable[[dict], None]:
    return lambda data: data["diaSource"].__setitem__(key, value)


def _set_cutout(key: str, value: object) -> Callable[[dict], None]:
    return lambda data: data.__setitem__(key, value)


# --------------------------------------------------------------------------- FITS stamp directories


def _fits_dir(edit: Callable[[Path, pd.DataFrame], pd.DataFrame]) -> Callable[[Path], Path]:
    """Two candidates (fixture alerts 0 and 1 as FITS stamps) with a catalog, then ``edit``."""

    def make(d: Path) -> Path:
        root = d / "stamps"
        root.mkdir()
        rows = []
        for i, rec in enumerate(records()[:2]):
            name = str(BAD) if i else "ok"
            for ch, field in (
                ("sci", "cutoutScience"),
                ("ref", "cutoutTemplate"),
                ("diff", "cutoutDifference"),
            ):
                (root / f"{name}_{ch}.fits.gz").write_bytes(rec[field]["stampData"])
            rows.append({"id": name, "ra": rec["candidate"]["ra"], "dec": rec["candidate"]["dec"]})
        table = edit(root, pd.DataFrame(rows))
        table.to_csv(root / "catalog.csv", index=False)
        return root

    return make


# ------------------------------------------------------------------------------ dataset directories


def _dataset(edit: Callable[[Path], None]) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        from hybrid.data.readers import alerts_to_dataset

        out = alerts_to_dataset([_parquet([])(d)], d / "dataset")
        edit(out)
        return out

    return make


def _edit_meta(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        meta = json.loads((path / "meta.json").read_text())
        change(meta)
        (path / "meta.json").write_text(json.dumps(meta))

    return edit


def _short_stamps(path: Path) -> None:
    np.save(path / "stamps.npy", np.load(path / "stamps.npy")[:3])


# ------------------------------------------------------------------------------ knowledge base


def _glade(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], dict]:
    def make(d: Path) -> dict:
        table = edit(pd.read_csv(GLADE))
        table.to_csv(d / "glade.csv", index=False)
        return {"name": "glade", "path": str(d / "glade.csv"), **GLADE_COLUMNS}

    return make


#: the column map of conf/context/prost_glade.yaml's GLADE+ catalogue (the fields the corpus edits)
GLADE_COLUMNS = {"columns": {"ra": "RAJ2000", "dec": "DEJ2000", "mag": "Bmag", "z": "z_best"}}


def _set_col(col: str, value: object, rows: slice = slice(0, 3)) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(t: pd.DataFrame) -> pd.DataFrame:
        t[col] = t[col].astype(object)
        t.loc[t.index[rows], col] = value
        return t

    return edit


# ------------------------------------------------------------------------------------ FITS frames


def _frame(edit: Callable[[fits.HDUList], None] | None, *, garble: Callable[[bytes], bytes] | None = None):
    def make(d: Path) -> Path:
        from hybrid.data.fits import write_exposure
        from hybrid.sim.field import SimConfig, simulate_field
        from tests.conftest import survey_profile
        from tests.test_fits import _edit

        fld = simulate_field(survey_profile("ztf"), SimConfig(shape=(96, 96), epochs_per_field=1), 0, 0)
        path = write_exposure(fld.epochs[0].science, d / "sci.fits")
        if edit is not None:
            path = _edit(path, edit)
        if garble is not None:
            path.write_bytes(garble(path.read_bytes()))
        return path

    return make


def _no_wcs(hdul: fits.HDUList) -> None:
    for key in (
        "CTYPE1",
        "CTYPE2",
        "CRVAL1",
        "CRVAL2",
        "CRPIX1",
        "CRPIX2",
        "CD1_1",
        "CD1_2",
        "CD2_1",
        "CD2_2",
    ):
        hdul["IMAGE"].header.remove(key, ignore_missing=True)


def _all_nan(hdul: fits.HDUList) -> None:
    hdul["IMAGE"].data[:] = np.nan


def _all_nan_no_data(hdul: fits.HDUList) -> None:
    hdul["IMAGE"].data[:] = np.nan
    hdul["MASK"].data[:] |= 4


def _short_variance(hdul: fits.HDUList) -> None:
    hdul["VARIANCE"].data = hdul["VARIANCE"].data[:50]


# --------------------------------------------------------------------------------------- the corpus


def corpus() -> list[Case]:
    """Every case of the corpus (about 60), in the order of the report."""
    P, ING, B = "hybrid predict", "hybrid ingest", "hybrid build"
    diff = records()[0]["cutoutDifference"]["stampData"]
    nan63 = fits_gz(np.full((63, 63), np.nan, np.float32))
    inf63 = fits_gz(np.full((63, 63), np.inf, np.float32))
    swapped = fits_gz(_diff_image(), data_byteorder="<")
    html = gzip.compress(b"<html>502 Bad Gateway</html>")
    one = fits_gz(np.ones((1, 1), np.float32))
    raw = _raw_fits(_diff_image())
    dup = [_bad(1), _bad(2)]
    null_obj = _bad()
    null_obj["objectId"] = None
    cases = [
        # --- ZTF Parquet, through `hybrid predict`
        Case(
            "empty file named .parquet",
            P,
            "error",
            r"empty\.parquet: not a readable Parquet",
            _write_text("empty.parquet", b""),
        ),
        Case(
            "text file named .parquet",
            P,
            "error",
            r"text\.parquet: not a readable Parquet",
            _write_text("text.parquet", b"objectId,candid\nZTF1,1\n"),
        ),
        Case(
            "Parquet without `candidate`",
            P,
            "error",
            r"alerts\.parquet: .*\['candidate'\]",
            _drop_column("candidate"),
        ),
        Case(
            "Parquet without `cutoutDifference`",
            P,
            "error",
            r"alerts\.parquet: .*\['cutoutDifference'\]",
            _drop_column("cutoutDifference"),
        ),
        Case(
            "`candidate` is not a record",
            P,
            "error",
            r"alerts\.parquet: column 'candidate' is string, expected a struct",
            _candidate_as_text,
        ),
        Case(
            "truncated gzip cutout",
            P,
            "skip",
            r"diff cutout: corrupt gzip",
            _parquet([_with("cutoutDifference", diff[: len(diff) // 2])]),
        ),
        Case(
            "cutout that is not FITS",
            P,
            "skip",
            r"ref cutout: not a FITS file",
            _parquet([_with("cutoutTemplate", html)]),
        ),
        Case(
            "all-NaN cutout",
            P,
            "skip",
            r"sci cutout: all 3969 pixels are NaN",
            _parquet([_with("cutoutScience", nan63)]),
        ),
        Case(
            "all-inf cutout",
            P,
            "skip",
            r"diff cutout: all 3969 pixels are infinite",
            _parquet([_with("cutoutDifference", inf63)]),
        ),
        Case(
            "byte-swapped cutout data",
            P,
            "skip",
            r"diff cutout: wrong byte order",
            _parquet([_with("cutoutDifference", swapped)]),
        ),
        Case(
            "null cutout", P, "skip", r"ref cutout: cutout missing", _parquet([_with("cutoutTemplate", None)])
        ),
        Case(
            "empty cutout bytes",
            P,
            "skip",
            r"sci cutout: cutout missing \(no bytes\)",
            _parquet([_with("cutoutScience", b"")]),
        ),
        Case(
            "uncompressed FITS cut short",
            P,
            "skip",
            r"diff cutout: FITS data truncated",
            _parquet([_with("cutoutDifference", raw[:6000])]),
        ),
        Case(
            "FITS cut inside its header",
            P,
            "skip",
            r"diff cutout: FITS file truncated inside its header",
            _parquet([_with("cutoutDifference", raw[:2000])]),
        ),
        Case(
            "FITS header without END",
            P,
            "skip",
            r"diff cutout: FITS header has no END",
            _parquet([_with("cutoutDifference", raw[:160])]),
        ),
        Case(
            "NAXIS1 that disagrees with the file",
            P,
            "skip",
            r"diff cutout: FITS header inconsistent",
            _parquet([_with("cutoutDifference", _header_naxis1(7))]),
        ),
        Case("missing magpsf", P, "skip", r"candidate\.magpsf missing", _parquet([_with("magpsf", None, 1)])),
        Case("missing ra", P, "skip", r"candidate\.ra missing", _parquet([_with("ra", None, 2)])),
        Case("null objectId", P, "skip", r"objectId missing", _parquet([null_obj])),
        Case(
            "1x1 difference cutout",
            P,
            "flag",
            r"flag_stamp_padding=0\.9997",
            _parquet([_with("cutoutDifference", one)]),
        ),
        Case(
            "63x45 chip-edge cutouts", P, "flag", r"flag_stamp_padding=0\.2857", _parquet([_edge_cutouts()])
        ),
        Case(
            "cutout with infinite pixels",
            P,
            "flag",
            r"flag_nan_fraction=0\.317",
            _parquet([_with("cutoutDifference", _some_inf())]),
        ),
        Case("isdiffpos 'x'", P, "flag", r"flag_repaired=isdiffpos", _parquet([_with("isdiffpos", "x")])),
        Case("negative fwhm", P, "flag", r"flag_repaired=fwhm", _parquet([_with("fwhm", -2.5)])),
        Case(
            "sigmapsf of 0 (infinite S/N)",
            P,
            "flag",
            r"flag_repaired=.*snr_psf",
            _parquet([_with("sigmapsf", 0.0)]),
        ),
        Case(
            "sgscore1 of 7", P, "flag", r"flag_repaired=sgscore_nearest", _parquet([_with("sgscore1", 7.0)])
        ),
        Case("the same candid twice", P, "flag", r"flag_duplicate_id=True", _parquet(dup)),
        # --- ZTF avro, through `hybrid predict`
        Case(
            "empty .avro file",
            P,
            "error",
            r"empty\.avro: not an avro object-container",
            _write_text("empty.avro", b""),
        ),
        Case("avro cut in the middle", P, "error", r"alerts\.avro: corrupt avro", _truncated_avro),
        Case(
            "avro of another schema",
            P,
            "error",
            r"events\.avro: avro schema 'acme\.event' is neither",
            _foreign_avro,
        ),
        Case(
            "avro alert with a corrupt cutout",
            P,
            "skip",
            r"diff cutout: corrupt gzip",
            _avro([_with("cutoutDifference", diff[:100])]),
        ),
        Case(
            "avro alert with a 1x1 cutout",
            P,
            "flag",
            r"flag_stamp_padding=0\.9997",
            _avro([_with("cutoutDifference", one)]),
        ),
        Case(
            "avro alert with isdiffpos '?'",
            P,
            "flag",
            r"flag_repaired=isdiffpos",
            _avro([_with("isdiffpos", "?")]),
        ),
        # --- Rubin avro, through `hybrid predict`
        Case(
            "Rubin alert without cutouts",
            P,
            "skip",
            r"sci cutout: cutout missing",
            _rubin(
                lambda a: [
                    a.__setitem__(k, None) for k in ("cutoutScience", "cutoutTemplate", "cutoutDifference")
                ]
            ),
        ),
        Case(
            "Rubin diaSource without psfFlux",
            P,
            "skip",
            r"diaSource\.psfFlux missing",
            _rubin(_set_source("psfFlux", None)),
        ),
        Case(
            "Rubin cutout that is not FITS",
            P,
            "skip",
            r"diff cutout: not a FITS file",
            _rubin(_set_cutout("cutoutDifference", b"SIMPLE? no")),
        ),
        Case(
            "Rubin 15x15 cutouts",
            P,
            "flag",
            r"flag_stamp_padding=0\.943",
            _rubin(
                lambda a: [
                    a.__setitem__(k, _raw_fits(_diff_image()[:15, :15]))
                    for k in ("cutoutScience", "cutoutTemplate", "cutoutDifference")
                ]
            ),
        ),
        Case(
            "Rubin negative PSF moments",
            P,
            "flag",
            r"flag_repaired=.*fwhm",
            _rubin(lambda a: a["diaSource"].update({"ixx": -1.0, "iyy": -1.0, "ixy": 0.0})),
        ),
        # --- FITS stamp directories, through `hybrid ingest`
        Case(
            "catalog without ra",
            ING,
            "error",
            r"catalog\.csv: catalog column\(s\) \['ra'\] missing",
            _fits_dir(lambda r, t: t.drop(columns="ra")),
        ),
        Case(
            "catalog row with NaN dec",
            ING,
            "skip",
            r"catalog column 'dec' missing",
            _fits_dir(lambda r, t: t.assign(dec=[t["dec"][0], np.nan])),
        ),
        Case(
            "stamp file missing",
            ING,
            "skip",
            r"ref cutout: cutout missing",
            _fits_dir(lambda r, t: ((r / f"{BAD}_ref.fits.gz").unlink(), t)[1]),
        ),
        Case(
            "stamp file that is not FITS",
            ING,
            "skip",
            r"diff cutout: not a FITS file",
            _fits_dir(lambda r, t: ((r / f"{BAD}_diff.fits.gz").write_bytes(b"hello"), t)[1]),
        ),
        Case(
            "directory with neither catalog nor alerts",
            ING,
            "error",
            r"empty: directory holds no dataset",
            lambda d: (d / "empty").mkdir() or d / "empty",
        ),
        # --- `hybrid ingest` of ZTF alerts
        Case(
            "ingest: no usable alert",
            ING,
            "error",
            r"no usable alerts .*corrupt gzip",
            lambda d: _only([_with("cutoutDifference", diff[:50])], d),
        ),
        Case("ingest: the same candid twice", ING, "flag", r"flag_duplicate_id=True", _parquet(dup)),
        Case(
            "ingest: isdiffpos 'x'",
            ING,
            "flag",
            r"flag_repaired=isdiffpos",
            _parquet([_with("isdiffpos", "x")]),
        ),
        # --- dataset directories, through `hybrid predict`
        Case(
            "dataset without meta.json",
            P,
            "error",
            r"dataset: incomplete dataset directory: meta\.json missing",
            _dataset(lambda p: (p / "meta.json").unlink()),
        ),
        Case(
            "dataset meta.json not JSON",
            P,
            "error",
            r"meta\.json: not valid JSON",
            _dataset(lambda p: (p / "meta.json").write_text("{oops")),
        ),
        Case(
            "dataset with fewer stamps than rows",
            P,
            "error",
            r"dataset: 6 rows in candidates\.parquet but 3 stamps",
            _dataset(_short_stamps),
        ),
        Case(
            "dataset channels without diff",
            P,
            "error",
            r"meta\.json: field 'channels' .* lacks \['diff'\]",
            _dataset(_edit_meta(lambda m: m.__setitem__("channels", ["sci", "ref", "new"]))),
        ),
        Case(
            "dataset stamps.npy corrupt",
            P,
            "error",
            r"stamps\.npy: unreadable \.npy",
            _dataset(lambda p: (p / "stamps.npy").write_bytes(b"\x93NUMPY garbage")),
        ),
        Case(
            "dataset of another schema version",
            P,
            "error",
            r"meta\.json: field 'schema_version'",
            _dataset(_edit_meta(lambda m: m.__setitem__("schema_version", 99))),
        ),
        # --- knowledge-base loader
        Case(
            "catalog without the RA column",
            "load_catalog",
            "error",
            r"glade\.csv: column\(s\) \['RAJ2000'\] \(field\(s\) \['ra'\]\) missing",
            _glade(lambda t: t.drop(columns="RAJ2000")),
        ),
        Case(
            "catalog with NaN coordinates",
            "load_catalog",
            "error",
            r"glade\.csv: 3 row\(s\) with missing or impossible positions in fields 'ra'/'dec'",
            _glade(_set_col("DEJ2000", np.nan)),
        ),
        Case(
            "catalog with dec of 95 deg",
            "load_catalog",
            "error",
            r"glade\.csv: 2 row\(s\) with missing or impossible",
            _glade(_set_col("DEJ2000", 95.0, slice(0, 2))),
        ),
        Case(
            "empty catalog",
            "load_catalog",
            "error",
            r"glade\.csv: catalogue 'glade' has no rows",
            _glade(lambda t: t.iloc[:0]),
        ),
        Case(
            "catalog with text magnitudes",
            "load_catalog",
            "error",
            r"glade\.csv: column 'Bmag' \(field 'mag'\) must be numeric",
            _glade(_set_col("Bmag", "bright")),
        ),
        # --- config validation, through `hybrid build`
        Case(
            "data.n_fields=-3",
            B,
            "error",
            r"data\.n_fields=-3: must be a positive integer",
            lambda d: ["data.n_fields=-3"],
        ),
        Case(
            "data.stamp_size=0",
            B,
            "error",
            r"data\.stamp_size=0: must be an odd integer",
            lambda d: ["data.stamp_size=0"],
        ),
        Case("sim.shape=[0,0]", B, "error", r"sim\.shape=\[0, 0\]: must be", lambda d: ["sim.shape=[0,0]"]),
        Case(
            "train.batch_size=-1",
            B,
            "error",
            r"train\.batch_size=-1: must be a positive integer",
            lambda d: ["train.batch_size=-1"],
        ),
        Case(
            "split fractions summing to 1.2",
            B,
            "error",
            r"data\.split_fractions=.*summing to 1",
            lambda d: ["data.split_fractions=[0.8,0.2,0.2]"],
        ),
        Case("unknown subtraction", B, "error", r"subtraction/nosuch", lambda d: ["subtraction=nosuch"]),
        Case(
            "unknown image encoder", B, "error", r"image_encoder/nosuch", lambda d: ["image_encoder=nosuch"]
        ),
        Case("misspelt key data.nfields", B, "error", r"data\.nfields", lambda d: ["data.nfields=3"]),
        # --- FITS frames
        Case("frame without WCS", "read_exposure", "error", r"edited_sci\.fits: .*wcs", _frame(_no_wcs)),
        Case(
            "frame NaN everywhere",
            "read_exposure",
            "error",
            r"edited_sci\.fits: field 'image' has \d+ NaN/inf pixels without the NO_DATA",
            _frame(_all_nan),
        ),
        Case(
            "frame NaN everywhere, flagged NO_DATA",
            "read_exposure",
            "error",
            r"edited_sci\.fits: field 'image' has no valid pixels",
            _frame(_all_nan_no_data),
        ),
        Case(
            "variance of another shape",
            "read_exposure",
            "error",
            r"edited_sci\.fits: .*'variance'.*shape",
            _frame(_short_variance),
        ),
        Case(
            "frame cut short",
            "read_exposure",
            "error",
            r"sci\.fits: truncated",
            _frame(None, garble=lambda b: b[: len(b) // 2]),
        ),
        Case(
            "frame that is not FITS",
            "read_exposure",
            "error",
            r"sci\.fits: not a valid FITS",
            _frame(None, garble=lambda b: b"P6 64 64 255\n" + b[:100]),
        ),
    ]
    return cases


def _only(bad: list[dict], d: Path) -> Path:
    pq.write_table(pa.Table.from_pylist(bad), d / "bad.parquet")
    return d / "bad.parquet"


# ------------------------------------------------------------------------------------- the runner


def call_cli(argv: list[str]) -> tuple[int, str]:
    """``hybrid ARGV`` in this process: exit status and stderr; an escaping exception is returned
    as status -1 with its traceback (what a user would have seen)."""
    import traceback

    from hybrid.cli import main

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
    except BaseException:
        return -1, traceback.format_exc()
    return rc, err.getvalue()


def _flags(rows: pd.DataFrame) -> Outcome:
    if rows.empty:
        return Outcome("clean", "alert missing from the output without a reason")
    parts = []
    for _, r in rows.iterrows():
        flags = []
        if r.get("flag_stamp_padding", r.get("stamp_edge_fraction", 0)) > 0:
            flags.append(
                f"flag_stamp_padding={r.get('flag_stamp_padding', r.get('stamp_edge_fraction')):.4f}"
            )
        nan = r.get("flag_nan_fraction", np.nan)
        if nan > 0:
            flags.append(f"flag_nan_fraction={nan:.4f}")
        if r.get("flag_repaired"):
            flags.append(f"flag_repaired={r['flag_repaired']}")
        if r.get("flag_duplicate_id"):
            flags.append("flag_duplicate_id=True")
        parts.append(" ".join(flags))
    detail = "; ".join(p for p in parts if p)
    # every row of the malformed alert must carry a flag (a duplicate's first row is the clean one)
    clean = [p for p in parts if not p]
    if clean and not (len(parts) > 1 and len(clean) == 1 and "duplicate" in detail):
        return Outcome("clean", detail or "scored without any flag")
    return Outcome("flag", detail)


def run_case(case: Case, work: Path, bundle: Path) -> Outcome:
    """Run ``case`` in the empty directory ``work`` and classify what happened."""
    inp = case.make(work)
    if case.entry == "hybrid build":
        rc, err = call_cli(["build", *inp, f"paths.cache_dir={work / 'cache'}", "data.progress=false"])
        return _cli_outcome(rc, err, None)
    if case.entry in ("load_catalog", "read_exposure"):
        return _library_outcome(case.entry, inp)
    if case.entry == "hybrid predict":
        out = work / "scores.parquet"
        rc, err = call_cli(["predict", str(bundle), str(inp), "--out", str(out), "--workers", "1"])
        if rc != 0:
            return _cli_outcome(rc, err, inp)
        rejected = work / "scores.rejected.csv"
        reasons = (
            pd.read_csv(rejected, dtype=str) if rejected.is_file() else pd.DataFrame(columns=["alert_id"])
        )
        table = pd.read_parquet(out) if out.is_file() else pd.DataFrame(columns=["alert_id"])
        skipped = reasons[reasons["alert_id"] == str(BAD)]
    else:  # hybrid ingest
        out = work / "dataset_out"
        rc, err = call_cli(["ingest", str(inp), "--out", str(out)])
        if rc != 0:
            return _cli_outcome(rc, err, inp)
        meta = json.loads((out / "meta.json").read_text())
        skipped = pd.DataFrame(meta["rejected"], columns=["alert_id", "source", "reason"])
        skipped = skipped[skipped["alert_id"] == str(BAD)]
        table = pd.read_parquet(out / "candidates.parquet")
    if len(skipped):
        return Outcome("skip", "; ".join(skipped["reason"]))
    return _flags(table[table["alert_id"].astype(str) == str(BAD)])


def _cli_outcome(rc: int, err: str, inp: object) -> Outcome:
    if rc == -1 or "Traceback" in err:
        return Outcome("traceback", err.strip().splitlines()[-1] if err.strip() else "")
    lines = [ln[ln.index("hybrid: error:") :] for ln in err.splitlines() if "hybrid: error:" in ln]
    if rc == 2 and lines:
        return Outcome("error", lines[0])
    return Outcome("clean", f"exit status {rc} without an error line")


def _library_outcome(entry: str, inp: object) -> Outcome:
    from hybrid.context.catalog import load_catalog
    from hybrid.data.fits import read_exposure
    from hybrid.validation import USER_ERRORS, user_message

    try:
        if entry == "load_catalog":
            load_catalog(inp)
        else:
            read_exposure(inp)
    except USER_ERRORS as err:
        return Outcome("error", user_message(err))
    except Exception as err:
        return Outcome("traceback", repr(err))
    return Outcome("clean", "read without an error")


def passes(case: Case, outcome: Outcome, inp_name: str | None = None) -> bool:
    """The outcome is the expected class and its message or flags match."""
    return outcome.kind == case.expect and re.search(case.match, outcome.detail) is not None
