"""FITS I/O of exposures, catalogues and simulated fields: round trips, repairs and clear errors."""

from __future__ import annotations

import gzip
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from astropy.io import fits
from astropy.table import Table

from hybrid.config import CONF_DIR as CONF
from hybrid.data.fits import (
    FitsFormatError,
    read_catalog,
    read_exposure,
    write_catalog,
    write_exposure,
    write_field,
)
from hybrid.exposure import Exposure, InvalidExposureError, Mask
from hybrid.psf import ImagePSF
from hybrid.sim.field import SimConfig, SimulatedField, simulate_field
from hybrid.sim.survey import SurveyProfile


@pytest.fixture(scope="module")
def field() -> SimulatedField:
    d = yaml.safe_load((CONF / "survey" / "ztf.yaml").read_text())
    d.pop("_target_")
    return simulate_field(SurveyProfile(**d), SimConfig(shape=(128, 128), epochs_per_field=1), 0, 0)


@pytest.fixture
def exposure(field: SimulatedField) -> Exposure:
    """The science exposure with a NO_DATA strip (NaN) so NaN positions are exercised."""
    sci = field.epochs[0].science
    image, mask = sci.image.copy(), sci.mask.copy()
    image[:, :5] = np.nan
    mask[:, :5] |= Mask.NO_DATA
    return replace(sci, image=image, mask=mask)


def _assert_same(a: Exposure, b: Exposure) -> None:
    np.testing.assert_array_equal(a.image, b.image)  # NaN positions included
    np.testing.assert_array_equal(a.variance, b.variance)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert b.image.dtype == np.float32 and b.variance.dtype == np.float32 and b.mask.dtype == np.uint16
    assert b.image.dtype.isnative and b.mask.dtype.isnative
    ny, nx = a.shape
    px = np.array([[0, 0], [nx - 1, ny - 1], [nx / 3, ny / 2]], float)
    np.testing.assert_allclose(b.wcs.all_pix2world(px, 0), a.wcs.all_pix2world(px, 0), rtol=0, atol=1e-9)
    assert b.zero_point == pytest.approx(a.zero_point, abs=1e-12)
    assert (b.gain, b.saturation, b.survey, b.band) == (a.gain, a.saturation, a.survey, a.band)
    assert b.mjd == pytest.approx(a.mjd, abs=1e-9) and b.background_subtracted == a.background_subtracted
    for x, y in [(0, 0), (nx - 1, 10), (nx / 2, ny / 2)]:
        assert b.psf.fwhm_at(x, y) == pytest.approx(a.psf.fwhm_at(x, y), rel=1e-12)


@pytest.mark.parametrize("name", ["exp.fits", "exp.fits.gz"])
def test_exposure_round_trip(tmp_path: Path, exposure: Exposure, name: str) -> None:
    path = write_exposure(exposure, tmp_path / name)
    assert path.exists() and [p.name for p in tmp_path.iterdir()] == [name]  # no temp files left
    if name.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    back = read_exposure(path)
    _assert_same(exposure, back)
    assert back.source == str(path)
    assert back.meta["fwhm_arcsec"] == pytest.approx(exposure.meta["fwhm_arcsec"])
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "IMAGE", "VARIANCE", "MASK"]
        assert hdul["IMAGE"].header["BUNIT"] == "adu" and hdul["VARIANCE"].header["BUNIT"] == "adu2"
        assert hdul["MASK"].header["MASKBIT4"] == "NO_DATA"
        assert hdul[0].header["PSFTYPE"] == "MOFFAT"


def test_reference_and_image_psf_round_trip(tmp_path: Path, field: SimulatedField) -> None:
    ref = field.reference
    _assert_same(ref, read_exposure(write_exposure(ref, tmp_path / "ref.fits")))
    kernel = ref.psf.image_at(64, 64, 15)
    img = replace(ref, psf=ImagePSF(kernel))
    back = read_exposure(write_exposure(img, tmp_path / "img.fits"))
    assert isinstance(back.psf, ImagePSF)
    np.testing.assert_array_equal(back.psf.kernel, kernel)


def test_overwrite_false(tmp_path: Path, exposure: Exposure) -> None:
    path = write_exposure(exposure, tmp_path / "e.fits")
    with pytest.raises(FileExistsError):
        write_exposure(exposure, path, overwrite=False)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.fits"
    with pytest.raises(FitsFormatError, match=r"nope\.fits"):
        read_exposure(path)
    with pytest.raises(FileNotFoundError):
        read_exposure(path)


@pytest.mark.parametrize("cut", [0.5, 0.98, 0.0005])
def test_truncated_fits(tmp_path: Path, exposure: Exposure, cut: float) -> None:
    path = write_exposure(exposure, tmp_path / "t.fits")
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * cut)])
    with pytest.raises(FitsFormatError, match=r"t\.fits"):
        read_exposure(path)


def test_truncated_gzip(tmp_path: Path, exposure: Exposure) -> None:
    path = write_exposure(exposure, tmp_path / "t.fits.gz")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FitsFormatError, match=r"t\.fits\.gz.*gzip"):
        read_exposure(path)


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.fits"
    path.write_bytes(b"not a fits file " * 300)
    with pytest.raises(FitsFormatError, match=r"junk\.fits"):
        read_exposure(path)


def _edit(path: Path, edit) -> Path:
    """Rewrite the FITS file at ``path`` after ``edit(hdul)``."""
    with fits.open(path) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    edit(hdul)
    out = path.with_name("edited_" + path.name)
    hdul.writeto(out)
    return out


def test_missing_variance(tmp_path: Path, exposure: Exposure) -> None:
    path = _edit(write_exposure(exposure, tmp_path / "e.fits"), lambda h: h.pop(2))
    with pytest.raises(FitsFormatError, match=r"edited_e\.fits.*'VARIANCE'"):
        read_exposure(path)


@pytest.mark.parametrize("how", ["removed", "linear"])
def test_missing_wcs(tmp_path: Path, exposure: Exposure, how: str) -> None:
    def strip(hdul: fits.HDUList) -> None:
        header = hdul["IMAGE"].header
        if how == "removed":
            for key in exposure.wcs.to_header(relax=True):
                header.remove(key, ignore_missing=True)
        else:
            header["CTYPE1"], header["CTYPE2"] = "LINEAR", "LINEAR"

    path = _edit(write_exposure(exposure, tmp_path / "e.fits"), strip)
    with pytest.raises(FitsFormatError, match=r"edited_e\.fits.*wcs"):
        read_exposure(path)


def test_missing_zero_point(tmp_path: Path, exposure: Exposure) -> None:
    path = _edit(write_exposure(exposure, tmp_path / "e.fits"), lambda h: h[0].header.remove("MAGZP"))
    with pytest.raises(FitsFormatError, match=r"edited_e\.fits.*'MAGZP'"):
        read_exposure(path)


@pytest.mark.parametrize("dtype", [">f8", ">f4", "<f4", np.int16, np.int32])
def test_image_dtype_repaired(tmp_path: Path, exposure: Exposure, dtype) -> None:
    want = np.nan_to_num(exposure.image).round().astype(dtype)

    def retype(hdul: fits.HDUList) -> None:
        hdul["IMAGE"] = fits.ImageHDU(want, header=hdul["IMAGE"].header, name="IMAGE")

    path = _edit(write_exposure(exposure, tmp_path / "e.fits"), retype)
    back = read_exposure(path)
    assert back.image.dtype == np.float32 and back.image.dtype.isnative
    np.testing.assert_array_equal(back.image, want.astype(np.float32))
    if np.dtype(dtype).kind == "i" or np.dtype(dtype).itemsize == 8:
        assert any("IMAGE" in r for r in back.meta["fits_repairs"])


def test_shape_mismatch(tmp_path: Path, exposure: Exposure) -> None:
    def crop(hdul: fits.HDUList) -> None:
        hdul["VARIANCE"].data = hdul["VARIANCE"].data[:100]

    path = _edit(write_exposure(exposure, tmp_path / "e.fits"), crop)
    with pytest.raises(InvalidExposureError, match=r"edited_e\.fits.*'variance'.*shape"):
        read_exposure(path)


def test_nan_without_no_data(tmp_path: Path, exposure: Exposure) -> None:
    def poke(hdul: fits.HDUList) -> None:
        hdul["IMAGE"].data[60, 60] = np.nan

    path = _edit(write_exposure(exposure, tmp_path / "e.fits"), poke)
    with pytest.raises(InvalidExposureError, match=r"edited_e\.fits.*'image'.*NO_DATA"):
        read_exposure(path)


@pytest.mark.parametrize("name", ["cat.fits", "cat.fits.gz"])
def test_catalog_round_trip(tmp_path: Path, field: SimulatedField, name: str) -> None:
    cat = field.catalog.copy()
    cat["note"] = pd.Series(["é", None, *["x"] * (len(cat) - 2)], dtype=object)
    cat["flag"] = np.arange(len(cat)) % 2 == 0
    cat["z_kind"] = cat["z_kind"].astype("category")
    path = write_catalog(cat, tmp_path / name)
    back = read_catalog(path)
    assert list(back.columns) == list(cat.columns)
    pd.testing.assert_frame_equal(back, cat)  # dtypes too: str, object (with None), category, bool
    assert back["x"].dtype == np.float64 and back["x"].dtype.isnative and back["flag"].dtype == bool
    units = back.attrs["units"]
    assert units["ra"] == "deg" and units["dec"] == "deg" and units["mag"] == "mag"
    assert units["r_eff"] == "arcsec" and units["x"] == "pix" and "sgscore" not in units
    t = Table.read(path)
    assert str(t["mag_err"].unit) == "mag" and str(t["y"].unit) == "pix"


def test_write_field(tmp_path: Path, field: SimulatedField) -> None:
    paths = write_field(field, tmp_path / "f")
    names = sorted(p.name for p in paths)
    assert names == ["catalog.fits", "reference.fits", "science_epoch0.fits", "truth_epoch0.parquet"]
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == names
    truth = pd.read_parquet(tmp_path / "f" / "truth_epoch0.parquet")
    pd.testing.assert_frame_equal(truth, field.epochs[0].transients, check_dtype=False)


def test_cli_simulate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from hybrid.cli import main

    overrides = ["sim.shape=[128,128]", "sim.epochs_per_field=1"]
    assert main(["simulate", "--out", str(tmp_path), "--fields", "1", *overrides]) == 0
    out, printed = tmp_path / "field-0000", capsys.readouterr().out
    for name in ("reference.fits", "science_epoch0.fits", "catalog.fits", "truth_epoch0.parquet"):
        assert (out / name).is_file()
        assert str(out / name) in printed
    assert read_exposure(out / "science_epoch0.fits").shape == (128, 128)


def test_gzip_helper_detects_by_magic(tmp_path: Path, exposure: Exposure) -> None:
    """A gzip file without the .gz suffix is still read (detection by magic bytes)."""
    plain = write_exposure(exposure, tmp_path / "e.fits")
    odd = tmp_path / "e_gz.fits"
    odd.write_bytes(gzip.compress(plain.read_bytes()))
    _assert_same(exposure, read_exposure(odd))
