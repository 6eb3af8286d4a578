"""Readers of real survey inputs: ZTF and Rubin alert packets, FITS stamps with a catalog, datasets.

Each reader turns its input into batches of candidates and stamps on the conventions of the dataset
directory (:mod:`hybrid.data.dataset`), with a documented mapping from the survey's fields to the
framework's features; :func:`alerts_to_dataset` writes them as a dataset directory, and
:class:`hybrid.serving.Predictor` scores them. See :mod:`hybrid.data.readers.base` for the contract.

============  ===================================================================================
reader        input
============  ===================================================================================
ztf_avro      ZTF alert packets, avro (:mod:`~hybrid.data.readers.ztf`)
ztf_parquet   ZTF alerts in the Parquet layout of brokers (Fink)
rubin_avro    Rubin alert packets, avro, lsst-alert-packet schemas (:mod:`~hybrid.data.readers.rubin`)
fits_dir      a directory of FITS stamps with a catalog table (:mod:`~hybrid.data.readers.fits_dir`)
dataset       a dataset directory (:mod:`~hybrid.data.readers.dataset_dir`)
============  ===================================================================================
"""

from hybrid.data.readers.base import (
    READERS,
    AlertBatch,
    AlertReader,
    Chunk,
    ReaderError,
    Rejection,
    add_context,
    alerts_to_dataset,
    framework_features,
    iter_alerts,
    iter_chunks,
    read_alerts,
    reader_for,
)
from hybrid.data.readers.cutouts import CutoutError, decode_cutout, fit_stamp

__all__ = [
    "READERS",
    "AlertBatch",
    "AlertReader",
    "Chunk",
    "CutoutError",
    "ReaderError",
    "Rejection",
    "add_context",
    "alerts_to_dataset",
    "decode_cutout",
    "fit_stamp",
    "framework_features",
    "iter_alerts",
    "iter_chunks",
    "read_alerts",
    "reader_for",
]
