"""A directory of FITS stamps with a catalog table: the simplest way to bring any survey's cutouts.

Layout::

    <dir>/catalog.csv | catalog.parquet   one row per candidate
    <dir>/<id>_sci.fits[.gz]  <id>_ref.fits[.gz]  <id>_diff.fits[.gz]   (or paths in sci/ref/diff columns)

Catalog columns: ``id`` (required), ``ra``, ``dec`` (deg, required), optionally ``mjd`` (d), ``band``,
``survey``, ``object_id``, ``x``, ``y`` (px, 1-based, to place short cutouts), ``sci``, ``ref``,
``diff`` (stamp paths relative to the directory), and any framework feature by its own name and unit
(:func:`~hybrid.data.readers.base.framework_features`); other features stay missing. Stamps are
single-image FITS files (gzip optional), in the survey's counts, rows = y.
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
    Chunk,
    ReaderError,
    assemble,
    framework_features,
    numeric_column,
    stamps_from_cutouts,
)
from hybrid.detection.candidates import CHANNELS

CATALOGS = ("catalog.parquet", "catalog.csv")


def _catalog_path(path: Path) -> Path | None:
    return next((path / c for c in CATALOGS if (path / c).is_file()), None)


def _stamp_path(root: Path, row: pd.Series, channel: str) -> Path | None:
    if channel in row and isinstance(row[channel], str) and row[channel]:
        return root / row[channel]
    for suffix in (".fits", ".fits.gz", ".fit", ".fits.fz"):
        candidate = root / f"{row['id']}_{channel}{suffix}"
        if candidate.is_file():
            return candidate
    return None


@dataclass
class FitsDirChunk(Chunk):
    root: Path
    table: pd.DataFrame

    def decode(self, stamp_size: int) -> AlertBatch:
        t = self.table.reset_index(drop=True)
        ids = t["id"].astype(str).tolist()
        cutouts: dict[str, list[bytes | None]] = {c: [] for c in CHANNELS}
        for _, row in t.iterrows():
            for c in CHANNELS:
                p = _stamp_path(self.root, row, c)
                cutouts[c].append(p.read_bytes() if p is not None and p.is_file() else None)
        stamps, edge, failed = stamps_from_cutouts(
            ids, cutouts, stamp_size, x=numeric_column(t, "x"), y=numeric_column(t, "y")
        )
        for i in range(len(t)):
            for col in ("ra", "dec"):
                if not np.isfinite(numeric_column(t, col)[i]):
                    failed.setdefault(i, f"catalog column {col!r} missing")
        idcols = pd.DataFrame(
            {
                "alert_id": ids,
                "object_id": t["object_id"].astype(str).to_numpy() if "object_id" in t else ids,
                "survey": t["survey"].astype(str).to_numpy() if "survey" in t else "",
                "band": t["band"].astype(str).to_numpy() if "band" in t else "",
                "ra": numeric_column(t, "ra"),
                "dec": numeric_column(t, "dec"),
                "mjd": numeric_column(t, "mjd"),
                "source": str(self.root),
            }
        )
        names = [f for f in framework_features() if f in t and not f.startswith("stamp_")]
        features = pd.DataFrame({f: numeric_column(t, f) for f in names})
        return assemble(idcols, features, stamps, edge, failed, str(self.root))


@READERS.register("fits_dir")
class FitsDirReader(AlertReader):
    """FITS stamps (sci, ref, diff per candidate) with a catalog table in one directory."""

    survey = ""

    def sniff(self, path: Path) -> bool:
        return path.is_dir() and _catalog_path(path) is not None

    def chunks(self, path: Path, batch_size: int) -> Iterator[Chunk]:
        cat = _catalog_path(path)
        table = pd.read_parquet(cat) if cat.suffix == ".parquet" else pd.read_csv(cat)
        missing = [c for c in ("id", "ra", "dec") if c not in table]
        if missing:
            raise ReaderError(f"{cat}: catalog column(s) {missing} missing")
        for start in range(0, len(table), batch_size):
            yield FitsDirChunk(path, table.iloc[start : start + batch_size])
