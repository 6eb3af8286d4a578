"""Readers of real alerts: ZTF (avro, Parquet) on real fixture alerts, Rubin on lsst-alert-packet's
schemas, FITS directories, datasets; and a malformed-input set where every bad alert ends in a reason."""

from __future__ import annotations

import copy
import gzip
import io
import json
import warnings
from pathlib import Path

import fastavro
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from hybrid.data.dataset import read_dataset
from hybrid.data.readers import (
    READERS,
    CutoutError,
    ReaderError,
    alerts_to_dataset,
    decode_cutout,
    fit_stamp,
    framework_features,
    iter_alerts,
    read_alerts,
    reader_for,
)
from hybrid.data.readers.ztf import ZTF_PIXEL_SCALE

FIX = Path(__file__).parent / "fixtures" / "ztf_alerts"
PARQUET, AVRO = FIX / "alerts.parquet", FIX / "alerts.avro"
CUTOUTS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")


def records() -> list[dict]:
    return pq.read_table(PARQUET).to_pylist()


def astropy_image(stamp_data: bytes) -> np.ndarray:
    """The cutout as astropy reads it (ZTF's SIMPLE card is not quite standard: astropy warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        with fits.open(io.BytesIO(gzip.decompress(stamp_data))) as hdul:
            return np.array(hdul[0].data, np.float32)


def fits_gz(image: np.ndarray, *, data_byteorder: str = ">") -> bytes:
    """A gzipped single-HDU FITS cutout; ``data_byteorder="<"`` writes the data little-endian (wrong)."""
    header = fits.PrimaryHDU(image.astype(">f4")).header.tostring().encode()
    data = image.astype(f"{data_byteorder}f4").tobytes()
    data += b"\0" * (-len(data) % 2880)
    return gzip.compress(header + data)


def test_every_reader_is_registered_and_recognises_its_input() -> None:
    assert READERS.names() == ["dataset", "fits_dir", "rubin_avro", "ztf_avro", "ztf_parquet"]
    assert reader_for(PARQUET).name == "ztf_parquet"
    assert reader_for(AVRO).name == "ztf_avro"
    with pytest.raises(ReaderError, match="not a recognised input"):
        reader_for(FIX / "README.md")


def test_real_ztf_alerts_read_identically_from_avro_and_parquet() -> None:
    a, b = read_alerts(PARQUET), read_alerts(AVRO)
    assert len(a) == len(b) == 6 and not a.rejected and not b.rejected
    assert a.stamps.shape == (6, 3, 63, 63) and a.stamps.dtype == np.float32 and a.stamps.dtype.isnative
    np.testing.assert_array_equal(a.stamps, b.stamps)
    pd.testing.assert_frame_equal(a.candidates.drop(columns="source"), b.candidates.drop(columns="source"))
    # every framework feature is a column; the ones ZTF lacks are missing, not invented
    assert set(framework_features()) <= set(a.candidates.columns)
    assert a.candidates[["sharpness", "fwhm_sci", "seeing_ratio", "ctx_host_z"]].isna().all().all()


def test_ztf_fields_map_to_features_and_stamps_keep_fits_orientation() -> None:
    batch = read_alerts(PARQUET)
    for i, rec in enumerate(records()):
        c = rec["candidate"]
        row = batch.candidates.iloc[i]
        assert row["alert_id"] == str(rec["candid"]) and row["object_id"] == rec["objectId"]
        assert row["mag_psf"] == pytest.approx(c["magpsf"]) and row["maglim"] == pytest.approx(
            c["diffmaglim"]
        )
        assert row["fwhm"] == pytest.approx(c["fwhm"] * ZTF_PIXEL_SCALE)
        assert row["isdiffpos"] == (1.0 if c["isdiffpos"] in ("t", "1") else 0.0)
        assert row["snr_psf"] == pytest.approx(1.0857 / c["sigmapsf"])
        flux = 10 ** (-0.4 * (c["magpsf"] - 23.9))  # uJy, whatever the exposure zero point
        assert abs(row["flux_psf"]) == pytest.approx(flux, rel=1e-6)
        assert row["mjd"] == pytest.approx(c["jd"] - 2400000.5)
        assert row["band"] == {1: "g", 2: "r", 3: "i"}[c["fid"]]
        # sci / ref / diff in the dataset's channel order, exactly the FITS arrays (no flip)
        for ch, name in enumerate(CUTOUTS):
            np.testing.assert_array_equal(batch.stamps[i, ch], astropy_image(rec[name]["stampData"]))
        nan_fraction = np.isnan(batch.stamps[i, 2]).mean()
        assert row["stamp_nan_fraction"] == pytest.approx(nan_fraction)
    assert (batch.candidates["stamp_nan_fraction"] > 0).sum() == 2  # the fixture's two alerts with NaNs


def test_fast_fits_decoding_falls_back_to_astropy_for_unusual_files() -> None:
    image = np.arange(35, dtype=np.float32).reshape(5, 7)
    mef = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image), fits.ImageHDU(image * 0)]).writeto(mef)
    np.testing.assert_array_equal(decode_cutout(mef.getvalue()), image)  # image in an extension (Rubin)
    scaled = io.BytesIO()
    hdu = fits.PrimaryHDU((image * 10).astype(np.int16))
    hdu.header["BZERO"], hdu.header["BSCALE"] = 100.0, 0.5
    hdu.writeto(scaled)
    with fits.open(io.BytesIO(scaled.getvalue())) as hdul:
        np.testing.assert_array_equal(decode_cutout(scaled.getvalue()), hdul[0].data.astype(np.float32))


def test_short_cutouts_are_padded_on_the_side_of_the_ccd_edge() -> None:
    full = np.arange(63 * 63, dtype=np.float32).reshape(63, 63)
    cut = full[:, 18:]  # 63 rows x 45 columns: the CCD ended 18 columns to the left
    stamp, edge = fit_stamp(cut, 63, x=10.0, y=1500.0, frame=(3080, 3072))
    assert edge == pytest.approx(1 - 45 / 63)
    assert np.isnan(stamp[:, :18]).all()
    np.testing.assert_array_equal(stamp[:, 18:], cut)
    right = full[:, :45]  # near the high-x edge: missing columns on the right
    stamp, _ = fit_stamp(right, 63, x=3070.0, y=1500.0, frame=(3080, 3072))
    np.testing.assert_array_equal(stamp[:, :45], right)
    assert np.isnan(stamp[:, 45:]).all()
    big, edge = fit_stamp(np.ones((101, 101), np.float32), 63)
    assert big.shape == (63, 63) and edge == 0.0 and np.isfinite(big).all()


def malformed_alerts() -> tuple[list[dict], dict[str, str]]:
    """Fixture alerts broken one way each; returns the records and candid -> expected reason."""
    good = records()
    out, expect = [], {}

    def variant(base: dict, candid: int, reason: str | None) -> dict:
        rec = copy.deepcopy(base)
        rec["candid"] = rec["candidate"]["candid"] = candid
        if reason is not None:
            expect[str(candid)] = reason
        out.append(rec)
        return rec

    diff = good[0]["cutoutDifference"]["stampData"]
    rec = variant(good[0], 1, "diff cutout: corrupt gzip stream")
    rec["cutoutDifference"]["stampData"] = diff[: len(diff) // 2]
    rec = variant(good[0], 2, "sci cutout: all 3969 pixels are NaN")
    rec["cutoutScience"]["stampData"] = fits_gz(np.full((63, 63), np.nan, np.float32))
    rec = variant(good[1], 3, "candidate.magpsf missing")
    del rec["candidate"]["magpsf"]
    rec = variant(good[0], 4, "diff cutout: wrong byte order")
    rec["cutoutDifference"]["stampData"] = fits_gz(astropy_image(diff), data_byteorder="<")
    rec = variant(good[2], 5, "ref cutout: not a FITS file")
    rec["cutoutTemplate"]["stampData"] = gzip.compress(b"<html>502 Bad Gateway</html>")
    rec = variant(good[0], 6, "ref cutout: cutout missing")
    rec["cutoutTemplate"] = None
    # usable: a 63x45 chip-edge triplet, and an alert without its PS1 match (imputed, not invented)
    rec = variant(good[3], 7, None)
    rec["candidate"]["xpos"] = 12.0
    for name in CUTOUTS:
        rec[name]["stampData"] = fits_gz(astropy_image(rec[name]["stampData"])[:, 18:])
    rec = variant(good[3], 8, None)
    rec["candidate"]["sgscore1"] = None
    rec["candidate"]["distpsnr1"] = -999.0
    return out, expect


def test_malformed_alerts_end_in_a_reason_and_the_batch_goes_on(tmp_path: Path) -> None:
    bad, expect = malformed_alerts()
    path = tmp_path / "malformed.parquet"
    pq.write_table(pa.Table.from_pylist(records() + bad), path)
    batch = read_alerts(path)
    reasons = {r.alert_id: r.reason for r in batch.rejected}
    assert set(reasons) == set(expect)
    for candid, reason in expect.items():
        assert reasons[candid].startswith(reason), (candid, reasons[candid])
    assert all(r.source == str(path) for r in batch.rejected)
    assert len(batch) == 6 + 2
    edge = batch.candidates.set_index("alert_id").loc["7"]
    assert edge["stamp_edge_fraction"] == pytest.approx(1 - 45 / 63)
    assert np.isnan(batch.stamps[batch.candidates["alert_id"] == "7"][0, :, :, :18]).all()
    no_match = batch.candidates.set_index("alert_id").loc["8"]
    assert np.isnan(no_match["sgscore_nearest"]) and np.isnan(no_match["dist_nearest_src"])
    assert np.isfinite(no_match["mag_psf"])


def test_malformed_avro_alerts_are_rejected_too(tmp_path: Path) -> None:
    bad, expect = malformed_alerts()
    with open(AVRO, "rb") as f:
        schema = fastavro.reader(f).writer_schema
    keep = [r for r in bad if "magpsf" in r["candidate"] and r["cutoutTemplate"] is not None]
    path = tmp_path / "malformed.avro"
    with open(path, "wb") as f:
        fastavro.writer(f, schema, [*records(), *keep])
    batch = read_alerts(path)
    assert {r.alert_id for r in batch.rejected} == {str(r["candid"]) for r in keep} & set(expect)
    assert len(batch) == 6 + 2


def test_cutout_errors_name_what_is_wrong() -> None:
    with pytest.raises(CutoutError, match="no bytes"):
        decode_cutout(None)
    with pytest.raises(CutoutError, match="truncated"):
        decode_cutout(gzip.decompress(records()[0]["cutoutScience"]["stampData"])[:3000])


def rubin_sample() -> tuple[dict, object]:
    """lsst-alert-packet's v11.1 sample alert and its schema."""
    import lsst.alert.packet
    from lsst.alert.packet import SchemaRegistry

    schema = SchemaRegistry.from_filesystem(schema_root="lsst.v11_1.alert").get_by_version("11.1")
    sample = Path(lsst.alert.packet.__file__).parent / "schema/11/1/sample_data/alert.json"
    return json.loads(sample.read_text()), schema


def test_rubin_sample_alert_is_read_and_rejected_for_its_missing_cutouts() -> None:
    import lsst.alert.packet

    path = Path(lsst.alert.packet.__file__).parent / "schema/11/1/sample_data/fakeAlert.avro"
    assert reader_for(path).name == "rubin_avro"
    batch = read_alerts(path)
    assert len(batch) == 0 and batch.rejected[0].reason.endswith("cutout missing (no bytes)")


def test_rubin_alerts_with_cutouts_map_to_features(tmp_path: Path) -> None:
    data, schema = rubin_sample()
    image = astropy_image(records()[0]["cutoutDifference"]["stampData"])[16:47, 16:47]  # 31x31
    mef = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image), fits.ImageHDU(np.ones_like(image))]).writeto(mef)
    plain = io.BytesIO()
    fits.PrimaryHDU(image).writeto(plain)
    data["cutoutDifference"] = mef.getvalue()
    data["cutoutScience"] = data["cutoutTemplate"] = plain.getvalue()
    data["diaSource"].update({"ixx": 0.5, "iyy": 0.5, "ixy": 0.0, "diaObjectId": 42})
    path = tmp_path / "rubin.avro"
    with open(path, "wb") as f:
        schema.store_alerts(f, [data])
    batch = read_alerts(path)
    assert not batch.rejected and len(batch) == 1
    row = batch.candidates.iloc[0]
    src = data["diaSource"]
    assert row["survey"] == "rubin" and row["object_id"] == "42" and row["band"] == "r"
    assert row["mag_psf"] == pytest.approx(31.4 - 2.5 * np.log10(src["psfFlux"]), rel=1e-6)
    assert row["snr_psf"] == pytest.approx(src["psfFlux"] / src["psfFluxErr"], rel=1e-6)
    assert row["fwhm"] == pytest.approx(2.3548 * 0.5**0.5, rel=1e-5) and row["elongation"] == pytest.approx(1)
    assert np.isnan(row["flux_psf"]) and np.isnan(row["maglim"])  # nJy, not counts: missing
    np.testing.assert_array_equal(batch.stamps[0, 2, 16:47, 16:47], image)
    assert np.isnan(batch.stamps[0, 2, :16]).all()


def test_fits_directory_with_a_catalog(tmp_path: Path) -> None:
    alerts = read_alerts(PARQUET)
    rows = []
    for i, row in alerts.candidates.iterrows():
        for ch, name in enumerate(("sci", "ref", "diff")):
            suffix = ".fits.gz" if i % 2 else ".fits"
            fits.PrimaryHDU(alerts.stamps[i, ch]).writeto(tmp_path / f"c{i}_{name}{suffix}")
        rows.append(
            {"id": f"c{i}", "ra": row["ra"], "dec": row["dec"], "mag_psf": row["mag_psf"], "survey": "ztf"}
        )
    rows.append({"id": "lost", "ra": 1.0, "dec": 2.0, "mag_psf": 18.0, "survey": "ztf"})  # no stamps
    pd.DataFrame(rows).to_csv(tmp_path / "catalog.csv", index=False)
    assert reader_for(tmp_path).name == "fits_dir"
    batch = read_alerts(tmp_path)
    np.testing.assert_array_equal(batch.stamps, alerts.stamps)
    np.testing.assert_allclose(batch.candidates["mag_psf"], alerts.candidates["mag_psf"])
    assert batch.candidates["fwhm"].isna().all()  # not in the catalog: missing
    assert [(r.alert_id, r.reason) for r in batch.rejected] == [
        ("lost", "sci cutout: cutout missing (no bytes)")
    ]


def test_alerts_convert_to_a_dataset_directory_and_read_back(tmp_path: Path) -> None:
    out = alerts_to_dataset([PARQUET], tmp_path / "ztf-fixture", batch_size=4)
    ds = read_dataset(out)
    assert len(ds) == 6 and ds.meta["survey"] == "ztf" and ds.meta["channels"] == ["sci", "ref", "diff"]
    assert ds.meta["features"]["fwhm"] == "arcsec" and ds.meta["feature_sources"]["ztf_parquet"]["fwhm"]
    back = read_alerts(out)
    np.testing.assert_array_equal(back.stamps, read_alerts(PARQUET).stamps)
    assert back.candidates["alert_id"].tolist() == read_alerts(PARQUET).candidates["alert_id"].tolist()
    # chunks are bounded by the batch size
    assert [len(b) for b in iter_alerts([PARQUET], batch_size=4)] == [4, 2]


def test_fink_recipe_refuses_a_package_with_the_wrong_checksum(tmp_path: Path) -> None:
    from hybrid.context.recipes import RecipeError
    from hybrid.data.readers.recipes import fetch_fink_alerts

    fake = tmp_path / "fink-science-7.4.0.tar.gz"
    fake.write_bytes(b"not the package")
    with pytest.raises(RecipeError, match="SHA-256"):
        fetch_fink_alerts(tmp_path / "cache", sdist=fake)
