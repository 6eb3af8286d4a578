"""Property-based fuzzing (hypothesis) of the cutout decoder and the alert readers: random bytes,
random truncations and random FITS header edits never crash the process (only the readers' named
errors), and never give a score without a flag (a fuzzed cutout is rejected with a reason, decodes to
the original stamp, or is scored with ``flag_stamp_padding`` / ``flag_nan_fraction`` set).

The budget (examples per property) is :data:`BUDGET`, scaled by ``HYBRID_FUZZ_SCALE`` (e.g. 10 for
a long local run); reports/reliability.md records it.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybrid.data.dataset import DatasetError
from hybrid.data.readers import CutoutError, ReaderError, decode_cutout, read_alerts
from hybrid.serving import Predictor
from tests.test_readers import AVRO, PARQUET, astropy_image, records

#: examples per property (x HYBRID_FUZZ_SCALE)
BUDGET = {
    "random bytes -> decode_cutout": 300,
    "truncated cutout -> decode_cutout": 200,
    "FITS header edits -> decode_cutout": 300,
    "random bytes -> every reader": 100,
    "truncated alert files -> readers": 60,
    "fuzzed diff cutout -> predict": 60,
}
SCALE = float(os.environ.get("HYBRID_FUZZ_SCALE", "1"))
READ_ERRORS = (ReaderError, DatasetError)


def budget(name: str):
    return settings(
        max_examples=max(int(BUDGET[name] * SCALE), 1),
        deadline=None,
        derandomize=True,  # the same examples in CI and here: a failure is reproducible
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


DIFF_GZ = records()[0]["cutoutDifference"]["stampData"]
DIFF = astropy_image(DIFF_GZ)
RAW = gzip.decompress(DIFF_GZ)
HEADER_CARDS = len(RAW[: RAW.find(b"END     ")]) // 80


def decodes_or_names_why(data: bytes) -> np.ndarray | None:
    """decode_cutout's image, or None after a CutoutError with a reason; anything else escapes."""
    try:
        image = decode_cutout(data)
    except CutoutError as err:
        assert str(err)
        return None
    assert image.ndim == 2 and image.dtype == np.float32 and image.dtype.isnative
    return image


@budget("random bytes -> decode_cutout")
@given(st.one_of(st.binary(max_size=4000), st.binary(max_size=3000).map(lambda b: b"SIMPLE  =" + b)))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    decodes_or_names_why(data)
    decodes_or_names_why(gzip.compress(data))


@budget("truncated cutout -> decode_cutout")
@given(st.sampled_from([DIFF_GZ, RAW]), st.integers(0, len(RAW)))
def test_truncated_cutouts_are_rejected_or_intact(data: bytes, cut: int) -> None:
    image = decodes_or_names_why(data[: min(cut, len(data) - 1)])
    if image is not None:  # cut inside the last block's padding: the data are all there
        np.testing.assert_array_equal(image, DIFF)


def _edit_card(index: int, text: str) -> bytes:
    raw = bytearray(RAW)
    raw[index * 80 : index * 80 + 80] = text.encode("ascii", "replace")[:80].ljust(80)
    return bytes(raw)


#: structural cards and values a corrupted header may carry. Left out, and said in the report: BITPIX
#: 32 in place of -32 (same width: the floats read as plausible integers) and a legal BSCALE / BZERO
#: (FITS says to rescale, and the decoder does): no byte-level check can tell them from real data.
STRUCTURAL = st.one_of(
    st.tuples(st.just("BITPIX"), st.sampled_from(["8", "16", "64", "-64", "7", "0", "-32.5", "x"])),
    st.tuples(st.sampled_from(["NAXIS", "NAXIS1", "NAXIS2"]), st.integers(-5, 5000).map(str)),
    st.tuples(st.sampled_from(["BSCALE", "BZERO"]), st.sampled_from(["0", "1e40", "nan", "x"])),
)


@budget("FITS header edits -> decode_cutout")
@given(
    st.integers(0, HEADER_CARDS),
    st.one_of(
        STRUCTURAL.map(lambda kv: f"{kv[0]:<8}= {kv[1]:>20}"),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
    ),
    st.booleans(),
)
def test_random_header_edits_are_rejected_or_decode_consistently(index: int, card: str, gz: bool) -> None:
    data = _edit_card(index, card)
    image = decodes_or_names_why(gzip.compress(data) if gz else data)
    if image is None or image.shape != DIFF.shape:
        return  # rejected, or another shape: fit_stamp pads or crops it (flag_stamp_padding)
    if not card.startswith(("BITPIX", "BSCALE", "BZERO")):
        np.testing.assert_array_equal(image, DIFF)  # any other card edit leaves the pixels alone


@budget("random bytes -> every reader")
@given(st.binary(max_size=3000), st.sampled_from([".parquet", ".avro", ".fits", ".npy", ""]))
def test_random_files_end_in_a_named_reader_error(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"input{suffix}"
        path.write_bytes(data)
        try:
            batch = read_alerts(path)
        except READ_ERRORS as err:
            assert path.name in str(err)
            return
        assert len(batch) == 0  # nothing decodable was made up


@budget("truncated alert files -> readers")
@given(st.sampled_from([PARQUET, AVRO]), st.integers(0, 999).map(lambda k: k / 1000))
def test_truncated_alert_files_fail_by_name_or_keep_whole_alerts(src: Path, fraction: float) -> None:
    # integers, not st.floats: a library of the suite turns on flush-to-zero, which st.floats refuses
    whole = read_alerts(src)
    raw = src.read_bytes()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / src.name
        path.write_bytes(raw[: int(len(raw) * fraction)])
        try:
            batch = read_alerts(path)
        except READ_ERRORS as err:
            assert path.name in str(err)
            return
    ids = whole.candidates["alert_id"].tolist()
    for i, alert in enumerate(batch.candidates["alert_id"]):  # what was read is exactly the original
        np.testing.assert_array_equal(batch.stamps[i], whole.stamps[ids.index(alert)])


def _fuzzed_cutout() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=2000),
        st.integers(0, len(DIFF_GZ) - 1).map(lambda n: DIFF_GZ[:n]),
        st.tuples(st.integers(0, HEADER_CARDS), STRUCTURAL).map(
            lambda t: gzip.compress(_edit_card(t[0], f"{t[1][0]:<8}= {t[1][1]:>20}"))
        ),
    )


@pytest.fixture(scope="module")
def predictor(tiny_bundle: Path) -> Predictor:
    return Predictor(tiny_bundle, workers=1)


@budget("fuzzed diff cutout -> predict")
@given(cutout=_fuzzed_cutout())
def test_a_fuzzed_cutout_is_never_scored_without_a_flag(predictor: Predictor, cutout: bytes) -> None:
    rec = records()[0]
    rec["cutoutDifference"]["stampData"] = cutout
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzz.parquet"
        pq.write_table(pa.Table.from_pylist([rec]), path)
        batch = read_alerts(path, stamp_size=predictor.stamp_size)
    if batch.rejected:
        assert len(batch) == 0 and batch.rejected[0].reason.startswith("diff cutout: ")
        return
    scores = predictor.score_batch(batch)
    clean = read_alerts(PARQUET, stamp_size=predictor.stamp_size).stamps[0, 2]
    flagged = (
        scores["flag_stamp_padding"].iloc[0] > 0
        or scores["flag_nan_fraction"].iloc[0] > np.isnan(clean).mean()
    )
    same = np.array_equal(batch.stamps[0, 2], clean, equal_nan=True)
    assert flagged or same, "a fuzzed cutout was scored as if it were clean"
