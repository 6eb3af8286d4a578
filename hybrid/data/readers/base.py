"""The reader contract: survey inputs -> batches of candidates + stamps on the dataset's conventions.

A reader (registered in :data:`READERS`) recognises its inputs (:meth:`AlertReader.sniff`) and cuts
them into :class:`Chunk` s without decoding anything (:meth:`AlertReader.chunks`); a chunk's
:meth:`~Chunk.decode` does the work -- decompressing cutouts, mapping survey fields to features --
and returns an :class:`AlertBatch`. Keeping I/O and decoding apart lets :class:`~hybrid.serving.Predictor`
decode chunks in worker threads, and keeps memory bounded by the chunk size.

Every batch has the same columns whatever the survey: ``alert_id``, ``object_id``, ``survey``, ``band``,
``ra``, ``dec`` (deg), ``mjd`` (d), ``source`` (the input file), every framework feature of
:func:`framework_features` (NaN where the survey has no equivalent: the model's imputation and
missing-value indicators handle those, nothing is invented), and survey extras prefixed by the survey
name (``ztf_rb``, ...). Stamps are float32 (N, 3, S, S): sci, ref, diff in the survey's counts (ADU /
DN), NaN where there are no data, as in :mod:`hybrid.detection.candidates`.

An alert that cannot be used (corrupt or missing cutout, a required field missing) becomes a
:class:`Rejection` with its id and the reason, and the rest of the batch goes on. A feature whose value
is impossible (:data:`FEATURE_VALID`: a negative FWHM, an infinite S/N, an ``isdiffpos`` that is
neither true nor false) is repaired to missing (NaN, imputed by the model) and its name listed in the
``flag_repaired`` column; infinite stamp pixels become NaN (counted by the stamps' NaN fraction).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from hybrid.data.dataset import DatasetError, write_dataset_streaming
from hybrid.data.readers.cutouts import (
    CutoutError,
    fit_stamp,
    implausible_fraction,
    nan_problem,
    read_cutout,
    value_problem,
)
from hybrid.detection.candidates import CHANNELS
from hybrid.registry import Registry

#: Columns every reader writes before the features.
ID_COLUMNS: tuple[str, ...] = ("alert_id", "object_id", "survey", "band", "ra", "dec", "mjd", "source")

#: feature -> (lowest, highest) physically possible value (inclusive); a finite value outside, or an
#: infinite one in any feature, is repaired to NaN and named in ``flag_repaired`` (S/N is signed)
FEATURE_VALID: dict[str, tuple[float, float]] = {
    "sigma_mag_psf": (0.0, np.inf),
    "flux_psf_err": (0.0, np.inf),
    "isdiffpos": (0.0, 1.0),
    "chi2_psf": (0.0, np.inf),
    "fwhm": (1e-9, np.inf),  # arcsec; 0 is ZTF's "not measured" as much as a negative one
    "fwhm_sci": (1e-9, np.inf),
    "elongation": (1e-9, np.inf),
    "ellipticity": (0.0, 1.0),
    "n_neg": (0.0, np.inf),
    "n_bad": (0.0, np.inf),
    "dist_nearest_src": (0.0, np.inf),
    "sgscore_nearest": (0.0, 1.0),
    "seeing_ratio": (1e-9, np.inf),
    "stamp_nan_fraction": (0.0, 1.0),
    "stamp_edge_fraction": (0.0, 1.0),
}


def framework_features() -> dict[str, str]:
    """Every feature name the models know, with units: detection features, then context features."""
    from hybrid.context.associate import CONTEXT_FEATURE_UNITS
    from hybrid.detection.features import FEATURE_UNITS

    return {**FEATURE_UNITS, **CONTEXT_FEATURE_UNITS}


@dataclass(frozen=True)
class Rejection:
    """An input that was skipped: its id (or position in the file), the file, and why."""

    alert_id: str
    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: alert {self.alert_id}: {self.reason}"


@dataclass
class AlertBatch:
    """Decoded candidates (one row per usable alert) with their stamps, and the rejected alerts.

    ``rows`` (set by readers that decode one chunk) are the positions of the candidates among the
    chunk's alerts, so one output row per input alert can be put back in input order (Spark, Kafka).
    """

    candidates: pd.DataFrame
    stamps: np.ndarray
    rejected: list[Rejection] = field(default_factory=list)
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.candidates)

    @staticmethod
    def concat(batches: Sequence[AlertBatch], stamp_size: int) -> AlertBatch:
        if not batches:
            return AlertBatch(
                pd.DataFrame(), np.empty((0, len(CHANNELS), stamp_size, stamp_size), np.float32)
            )
        return AlertBatch(
            pd.concat([b.candidates for b in batches], ignore_index=True),
            np.concatenate([b.stamps for b in batches]),
            [r for b in batches for r in b.rejected],
        )


class Chunk:
    """Undecoded alerts from one input; ``decode`` turns them into an :class:`AlertBatch`."""

    def decode(self, stamp_size: int) -> AlertBatch:  # pragma: no cover - interface
        raise NotImplementedError


class AlertReader:
    """Reads one kind of input. Subclasses set ``survey`` and implement ``sniff`` and ``chunks``."""

    name: str
    survey: str = ""
    #: feature -> the survey field or formula it comes from ("" = missing in this survey)
    feature_map: ClassVar[dict[str, str]] = {}

    def sniff(self, path: Path) -> bool:
        """Whether ``path`` is an input of this reader (cheap: suffix, magic bytes, schema name)."""
        raise NotImplementedError

    def chunks(self, path: Path, batch_size: int) -> Iterator[Chunk]:
        """The input in chunks of at most ``batch_size`` alerts, undecoded."""
        raise NotImplementedError

    def mismatch(self, path: Path) -> str | None:
        """Why ``path``, which looks meant for this reader (its suffix or layout), cannot be read by
        it (a named file or field), or None; asked when no reader's ``sniff`` accepts ``path``."""
        return None


READERS: Registry[AlertReader] = Registry("alert reader", "hybrid.data.readers", contract=AlertReader)


class AvroAlertReader(AlertReader):
    """Alert packets in avro object-container files whose schema name starts with ``schema_prefix``;
    subclasses turn a list of records into a chunk (``make_chunk``)."""

    schema_prefix: str

    def make_chunk(self, records: list[dict], source: str) -> Chunk:
        raise NotImplementedError

    def sniff(self, path: Path) -> bool:
        return (
            path.is_file()
            and path.suffix == ".avro"
            and avro_schema_name(path).startswith(self.schema_prefix)
        )

    def chunks(self, path: Path, batch_size: int) -> Iterator[Chunk]:
        for records in avro_records(path, batch_size):
            yield self.make_chunk(records, str(path))

    def mismatch(self, path: Path) -> str | None:
        if path.suffix != ".avro" or not path.is_file():
            return None
        name = avro_schema_name(path)
        if not name:
            return "not an avro object-container file (no readable 'Obj' header and schema)"
        return f"avro schema {name!r} is neither a ZTF ('ztf...') nor a Rubin ('lsst...') alert schema"


class ReaderError(ValueError):
    """An input no reader recognises, or a file that cannot be opened at all; names the file."""


def reader_for(path: str | Path, kind: str | None = None) -> AlertReader:
    """The reader registered as ``kind``, or the first one whose ``sniff`` accepts ``path``."""
    path = Path(path)
    if not path.exists():
        raise ReaderError(f"{path}: no such file or directory")
    if kind is not None:
        return READERS.get(kind)()
    for name in READERS.names():
        reader = READERS.get(name)()
        if reader.sniff(path):
            return reader
    why = _mismatches(path)
    raise ReaderError(
        f"{path}: "
        + ("; ".join(why) if why else "not a recognised input")
        + f"; readers: {', '.join(READERS.names())}"
    )


def _mismatches(path: Path) -> list[str]:
    """What the readers whose kind of input ``path`` looks like say is wrong with it."""
    return sorted({w for n in READERS.names() if (w := READERS.get(n)().mismatch(path))})


def iter_chunks(
    paths: Iterable[str | Path], *, kind: str | None = None, batch_size: int = 1024
) -> Iterator[Chunk]:
    """Chunks of every input in turn (directories of avro files are read file by file)."""
    for path in paths:
        path = Path(path)
        if path.is_dir() and not any(READERS.get(n)().sniff(path) for n in READERS.names()):
            files = sorted(p for p in path.rglob("*.avro"))
            if not files:
                why = "; ".join(_mismatches(path))
                raise ReaderError(
                    f"{path}: {why or 'directory holds no dataset, FITS catalog or .avro alerts'}"
                )
            yield from iter_chunks(files, kind=kind, batch_size=batch_size)
            continue
        yield from reader_for(path, kind).chunks(path, batch_size)


def iter_alerts(
    paths: Iterable[str | Path], *, kind: str | None = None, stamp_size: int = 63, batch_size: int = 1024
) -> Iterator[AlertBatch]:
    """Decoded batches of every input in turn."""
    for chunk in iter_chunks(paths, kind=kind, batch_size=batch_size):
        yield chunk.decode(stamp_size)


def read_alerts(
    paths: str | Path | Iterable[str | Path], *, kind: str | None = None, stamp_size: int = 63
) -> AlertBatch:
    """All alerts of ``paths`` in one batch (for small inputs; stream with :func:`iter_alerts`)."""
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    return AlertBatch.concat(list(iter_alerts(paths, kind=kind, stamp_size=stamp_size)), stamp_size)


def numeric_column(table: pd.DataFrame, name: str) -> np.ndarray:
    """Column ``name`` as float64 (NaN for nulls and non-numbers; all NaN when the column is absent)."""
    if name not in table:
        return np.full(len(table), np.nan)
    col = table[name]
    if col.dtype.kind in "fiub":  # plain numpy column (integers with nulls arrive as floats)
        return col.to_numpy(np.float64)
    return pd.to_numeric(col, errors="coerce").to_numpy(np.float64, na_value=np.nan)


def avro_schema_name(path: Path) -> str:
    """The full name of an avro object-container file's writer schema ("" if not such a file)."""
    import fastavro

    with open(path, "rb") as f:
        if f.read(4) != b"Obj\x01":
            return ""
        f.seek(0)
        try:
            schema = fastavro.reader(f).writer_schema
        except Exception:  # any unreadable header means "not ours"
            return ""
    return str(schema.get("name", "")) if isinstance(schema, dict) else ""


def avro_records(path: Path, batch_size: int) -> Iterator[list[dict]]:
    """The records of an avro object-container file, in lists of at most ``batch_size``."""
    import fastavro

    with open(path, "rb") as f:
        records: list[dict] = []
        try:
            for record in fastavro.reader(f):
                records.append(record)
                if len(records) == batch_size:
                    yield records
                    records = []
        except (ValueError, EOFError, StopIteration, OSError, IndexError, KeyError, TypeError) as err:
            # fastavro raises many kinds of errors on corrupt blocks (zlib, schema, index errors)
            raise ReaderError(
                f"{path}: corrupt avro after {len(records)} records of a chunk ({err})"
            ) from err
        if records:
            yield records


def stamps_from_cutouts(
    ids: Sequence[str],
    cutouts: dict[str, Sequence[bytes | None]],
    size: int,
    *,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    frame: tuple[int, int] | None = None,
    skip: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Stamps (N, 3, size, size) from the sci / ref / diff cutout bytes of N alerts.

    Args:
        ids: alert ids (for messages).
        cutouts: channel name ("sci", "ref", "diff") -> the N cutouts (gzipped FITS or FITS bytes).
        size: stamp size (px).
        x, y: candidate positions (px, 1-based) for placing short cutouts (see :func:`fit_stamp`).
        frame: (ny, nx) of the detector the cutouts come from.
        skip: alerts already rejected (not decoded).

    Returns:
        stamps, edge fraction per alert (the largest over the channels), and index -> reason for the
        alerts that failed.
    """
    n = len(ids)
    stamps = np.full((n, len(CHANNELS), size, size), np.nan, np.float32)
    edge = np.zeros(n)
    failed: dict[int, str] = {}
    for i in range(n):
        if skip is not None and skip[i]:
            continue
        for c, channel in enumerate(CHANNELS):
            try:
                image = read_cutout(cutouts[channel][i])
            except CutoutError as err:
                failed[i] = f"{channel} cutout: {err}"
                break
            if image.shape == (size, size):
                stamps[i, c] = image  # converted to native float32 by the assignment
                continue
            stamps[i, c], frac = fit_stamp(
                image.astype(np.float32),
                size,
                x=None if x is None or not np.isfinite(x[i]) else float(x[i]),
                y=None if y is None or not np.isfinite(y[i]) else float(y[i]),
                frame=frame,
            )
            edge[i] = max(edge[i], frac)
    # pixel values are checked for the whole batch at once; the few suspects get a precise reason
    # (every third row and column: byte-swapped data make about 40% of pixels implausible)
    empty = ~np.isfinite(stamps).any(axis=(-2, -1))
    with warnings.catch_warnings():  # all-NaN stamps are caught as empty
        warnings.simplefilter("ignore", RuntimeWarning)
        flat = np.nanmax(stamps, axis=(-2, -1)) == np.nanmin(stamps, axis=(-2, -1))
    suspect = (implausible_fraction(stamps[..., ::3, ::3]) >= 0.05) | flat
    for i, c in zip(*np.nonzero(empty | suspect), strict=True):
        if i not in failed and not (skip is not None and skip[i]):
            problem = nan_problem(stamps[i, c]) or value_problem(stamps[i, c])
            if problem:
                failed[int(i)] = f"{CHANNELS[c]} cutout: {problem}"
    stamps[np.isinf(stamps)] = np.nan  # no data, as NaN is: counted in the NaN fraction
    return stamps, edge, failed


def assemble(
    ids: pd.DataFrame,
    features: pd.DataFrame,
    stamps: np.ndarray,
    edge: np.ndarray,
    failed: dict[int, str],
    source: str,
    extras: pd.DataFrame | None = None,
    repaired: dict[str, np.ndarray] | None = None,
) -> AlertBatch:
    """The batch of the alerts that did not fail: ids, every framework feature, extras, stamps.

    ``stamp_nan_fraction`` and ``stamp_edge_fraction`` are measured here on the final stamps, as the
    simulated cutter records them. Impossible feature values (:data:`FEATURE_VALID`) become NaN;
    ``flag_repaired`` lists, comma-separated, those features and the reader's own ``repaired`` fields
    (field -> rows whose value the reader replaced by NaN), "" for an alert left as it came.
    """
    n = len(ids)
    ok = np.ones(n, bool)
    ok[list(failed)] = False
    names = list(framework_features())
    index = {name: j for j, name in enumerate(names)}
    values = np.full((n, len(names)), np.nan)
    for name in features.columns:
        if name not in index:
            raise KeyError(f"reader produced {name!r}, which is not a framework feature")
        values[:, index[name]] = features[name].to_numpy(np.float64)
    values[:, index["stamp_nan_fraction"]] = (~np.isfinite(stamps[:, CHANNELS.index("diff")])).mean(
        axis=(1, 2)
    )
    values[:, index["stamp_edge_fraction"]] = edge
    fixed = {name: np.asarray(rows, bool) for name, rows in (repaired or {}).items()}
    for name in names:
        lo, hi = FEATURE_VALID.get(name, (-np.inf, np.inf))
        col = values[:, index[name]]
        with np.errstate(invalid="ignore"):
            bad = np.isinf(col) | (col < lo) | (col > hi)
        if bad.any():
            col[bad] = np.nan
            fixed[name] = fixed.get(name, np.zeros(n, bool)) | bad
    table = pd.DataFrame({col: ids[col].to_numpy() if col in ids else source for col in ID_COLUMNS})
    table["flag_repaired"] = [",".join(k for k, rows in fixed.items() if rows[i]) for i in range(n)]
    parts = [table, pd.DataFrame(values, columns=names)]
    if extras is not None:
        parts.append(extras.reset_index(drop=True))
    table = pd.concat(parts, axis=1)
    rejected = [Rejection(str(ids["alert_id"].iloc[i]), source, failed[i]) for i in sorted(failed)]
    if ok.all():
        return AlertBatch(table, stamps, rejected, np.arange(n))
    return AlertBatch(table[ok].reset_index(drop=True), stamps[ok], rejected, np.flatnonzero(ok))


def duplicate_ids(alert_ids: Sequence[str], seen: set[str]) -> np.ndarray:
    """Which of ``alert_ids`` repeat an id of ``seen`` or an earlier one of the list; adds them all to
    ``seen`` (the first occurrence of an id is not a duplicate, so a broker keeps one clean row)."""
    out = np.zeros(len(alert_ids), bool)
    for i, a in enumerate(alert_ids):
        out[i] = a in seen
        seen.add(a)
    return out


def add_context(batch: AlertBatch, associator: Any) -> AlertBatch:
    """The batch with its ``ctx_*`` features (and the context class, names and sentence as text
    columns) computed by ``associator`` -- a :class:`~hybrid.context.ContextAssociator`, the one the
    simulated build runs (:func:`hybrid.data.build.process_field`), with its catalogue files and, for
    alerts that carry them, the survey's own nearest sources (its ``nearby_sources`` columns)."""
    if len(batch) == 0:
        return batch
    ctx = associator.features(batch.candidates.reset_index(drop=True))
    table = batch.candidates.reset_index(drop=True).copy()
    for name in ctx.columns:
        values = ctx[name].to_numpy()
        table[name] = values.astype(np.float64) if name in framework_features() else values
    return AlertBatch(table, batch.stamps, batch.rejected)


def context_provenance(associator: Any) -> dict[str, Any]:
    """What ``meta.json`` records of a context configuration: mode, catalogues and the features it
    defines (with units)."""
    return {
        "mode": associator.mode,
        "catalogs": [{"name": s.name, "kind": s.kind, "path": s.path} for s in associator.catalogs],
        "nearby_sources": associator.nearby_sources or None,
        "features": associator.feature_units(),
    }


def alerts_to_dataset(
    paths: str | Path | Iterable[str | Path],
    out: str | Path,
    *,
    kind: str | None = None,
    stamp_size: int = 63,
    batch_size: int = 1024,
    context: Any = None,
) -> Path:
    """Write the alerts of ``paths`` as a dataset directory (atomically), rejections in meta.json.

    The dataset has no labels; ``meta.json`` records the features with units, each reader's mapping
    from survey fields to features, the rejected alerts with reasons, and the inputs. With a
    ``context`` associator (:class:`~hybrid.context.ContextAssociator`) the ``ctx_*`` features come
    from its knowledge base (:func:`add_context`) instead of being missing, and meta.json says how.
    """
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    batches = list(iter_alerts(paths, kind=kind, stamp_size=stamp_size, batch_size=batch_size))
    batch = AlertBatch.concat(batches, stamp_size)
    if len(batch) == 0:
        reasons = "; ".join(str(r) for r in batch.rejected[:5])
        raise DatasetError(
            f"{out}: no usable alerts in {[str(p) for p in paths]}" + (f" ({reasons})" if reasons else "")
        )
    batch.candidates["flag_duplicate_id"] = duplicate_ids(batch.candidates["alert_id"].tolist(), set())
    if context is not None:
        batch = add_context(batch, context)
    surveys = sorted(set(batch.candidates["survey"]))
    readers = [READERS.get(n)() for n in READERS.names()]
    meta = {
        "name": Path(out).name,
        "kind": "alerts",
        "survey": surveys[0] if len(surveys) == 1 else surveys,
        "channels": list(CHANNELS),
        "channel_units": {"sci": "survey counts (ADU/DN)", "ref": "survey counts", "diff": "survey counts"},
        "stamp_size": stamp_size,
        "fill_value": "nan",
        "features": framework_features(),
        "feature_sources": {r.name: r.feature_map for r in readers if r.feature_map and r.survey in surveys},
        "rejected": [
            {"alert_id": r.alert_id, "source": r.source, "reason": r.reason} for r in batch.rejected
        ],
        "context": context_provenance(context) if context is not None else None,
        "provenance": {
            "inputs": [str(p) for p in paths],
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }
    json.dumps(meta)  # fail before writing anything if meta is not serialisable
    return write_dataset_streaming(out, [(batch.candidates, batch.stamps)], meta)
