"""`hybrid pipeline`: real frames read with astropy, masked, reprojected, calibrated, and the same
subtraction / detection / stamps / features as the build; clear errors for unusable pairs.

A real science + reference pair shipped in a package on PyPI was searched for and not found: the
wheels of photutils (its datasets download at run time), astropy (small single test images),
reproject (resampling reference outputs), ccdproc (a 50x100 px frame with a SIP WCS, raw CCD frames
without WCS), astroscrappy (one GMOS frame without a celestial WCS), aplpy (headers only),
properimage, astroalign and image-registration (no data), and the sdist of sfft (no FITS) hold no
two epochs of one field. The frames here are therefore synthetic (written as cameras write them) or
written by `hybrid simulate` and read as if real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from hybrid.cli import main
from hybrid.data.fits import FitsFormatError
from hybrid.data.frames import pair_candidates
from hybrid.data.real_frames import FrameFormat, fit_zero_point, read_frame, with_estimated_psf
from hybrid.detection import Detector
from hybrid.exposure import InvalidExposureError, Mask
from hybrid.pipeline import FramePair, PipelineOptions, prepare_pair, read_pairs, regions_text
from hybrid.subtraction.zogy import ZOGYSubtractor
from tests.conftest import SMALL
from tests.test_subtraction import make_exposure, make_wcs

SKY = 200.0  # ADU, left in the written frames as a real frame has it
GAIN = 2.0


def star_frame(
    seed: int,
    shape: tuple[int, int] = (256, 256),
    *,
    shift: tuple[float, float] = (0.0, 0.0),
    fwhm: float = 3.0,
    spacing: int = 26,
    transient: tuple[float, float, float] | None = None,
) -> tuple[np.ndarray, WCS, pd.DataFrame]:
    """Sky + stars on a jittered grid (fluxes 1e4 to 1e5 ADU) and an optional ``transient`` (x, y,
    flux); with ``shift`` (px) the same sky is rendered on a grid moved by it, whose WCS says so.
    Returns image, WCS and the stars' table."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    star_rng = np.random.default_rng(1000)  # the same stars in every frame
    gy, gx = np.mgrid[24 : ny - 23 : spacing, 24 : nx - 23 : spacing]
    x = gx.ravel() + star_rng.uniform(-2, 2, gx.size)
    y = gy.ravel() + star_rng.uniform(-2, 2, gx.size)
    flux = 10 ** star_rng.uniform(4, 5, gx.size)
    sources = list(zip(x + shift[0], y + shift[1], flux, strict=True)) + ([transient] if transient else [])
    exp = make_exposure(rng, shape, fwhm, 6.0, 25.0, sources)
    wcs = make_wcs(shape)
    wcs.wcs.crpix = np.add(wcs.wcs.crpix, shift)
    ra, dec = make_wcs(shape).all_pix2world(x, y, 0)
    return exp.image + SKY, wcs, pd.DataFrame({"ra": ra, "dec": dec, "flux": flux})


def write_plain(path: Path, image: np.ndarray, wcs: WCS | None, **keywords: object) -> Path:
    """A frame as cameras write them: one primary HDU, WCS and calibration keywords."""
    header = wcs.to_header() if wcs is not None else fits.Header()
    cards = {"GAIN": GAIN, "RDNOISE": 5.0, "SATURATE": 6e4, "MAGZP": 25.0, "FILTER": "r", **keywords}
    for key, value in cards.items():
        if value is not None:
            header[key] = value
    fits.PrimaryHDU(image.astype(np.float32), header=header).writeto(path)
    return path


def test_read_frame_masks_models_variance_and_reads_keywords(tmp_path: Path) -> None:
    image, wcs, _ = star_frame(1, spacing=64)  # sparse: sep's sky rms is biased by crowding
    image[10:14, 30:40] = np.nan
    image[100, 100] = 7e4  # above SATURATE
    path = write_plain(tmp_path / "sci.fits", image, wcs, **{"DATE-OBS": "2026-03-01T05:00:00"})
    exp = read_frame(path)
    assert exp.source == str(path) and exp.band == "r" and exp.gain == GAIN and exp.zero_point == 25.0
    assert exp.mjd == pytest.approx(Time("2026-03-01T05:00:00", scale="utc").mjd)
    assert ((exp.mask[10:14, 30:40] & Mask.NO_DATA) != 0).all() and np.isnan(exp.image[10:14, 30:40]).all()
    sat = (exp.mask & Mask.SATURATED) != 0
    assert sat[99:102, 99:102].all() and sat.sum() == 9  # grown by one pixel
    # modelled variance: the sky's (noise rms 6 ADU) where there are no stars
    empty = exp.variance[40:80, 40:80]
    assert np.median(empty) == pytest.approx(36.0, rel=0.15)
    assert "VARIANCE: modelled" in exp.meta["repairs"][0]


def test_read_frame_weight_mask_and_survey_keyword_names(tmp_path: Path) -> None:
    image, wcs, _ = star_frame(2)
    weight = np.full(image.shape, 1 / 25.0, np.float32)
    weight[0:5] = 0.0
    bpm = np.zeros(image.shape, np.int16)
    bpm[50, :] = 4
    hdus = [
        fits.PrimaryHDU(header=fits.Header({"EGAIN": 3.0, "BAND": "g", "OBSMJD": 60000.5, "MAGZP": 24.0})),
        fits.ImageHDU(image.astype(np.float32), header=wcs.to_header(), name="SCI"),
        fits.ImageHDU(weight, name="WHT"),
        fits.ImageHDU(bpm, name="BPM"),
    ]
    fits.HDUList(hdus).writeto(tmp_path / "f.fits")
    fmt = FrameFormat(gain="EGAIN", band="BAND", mjd="OBSMJD", default_gain=None)
    exp = read_frame(tmp_path / "f.fits", fmt)
    assert (exp.gain, exp.band, exp.mjd) == (3.0, "g", 60000.5)
    assert np.allclose(exp.variance[10:], 25.0)
    assert ((exp.mask[0:5] & Mask.NO_DATA) != 0).all()  # zero weight: no data
    assert ((exp.mask[50] & Mask.BAD) != 0).all() and not ((exp.mask[60] & Mask.BAD) != 0).any()
    with pytest.raises(FitsFormatError, match=r"f\.fits: keyword 'GAIN' missing"):
        read_frame(tmp_path / "f.fits", FrameFormat(band="BAND", default_gain=None))


def test_read_frame_errors_name_file_and_keyword(tmp_path: Path) -> None:
    image, wcs, _ = star_frame(3, (64, 64))
    nowcs = write_plain(tmp_path / "nowcs.fits", image, None)
    with pytest.raises(FitsFormatError, match=r"nowcs\.fits: extension 'PRIMARY' has no celestial wcs"):
        read_frame(nowcs)
    noband = write_plain(tmp_path / "noband.fits", image, wcs, FILTER=None)
    with pytest.raises(FitsFormatError, match=r"noband\.fits: keyword 'FILTER' \(band\) missing"):
        read_frame(noband)
    with pytest.raises(FitsFormatError, match=r"missing\.fits: file not found"):
        read_frame(tmp_path / "missing.fits")


def _pair(
    tmp_path: Path, sci_kw: dict | None = None, ref_kw: dict | None = None, **ref_frame: object
) -> FramePair:
    """A science frame with a transient at (x, y) = (141, 77) and its reference (``ref_frame``:
    arguments of :func:`star_frame`)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    image, wcs, _ = star_frame(4, transient=(141.0, 77.0, 3e3))
    ref_image, ref_wcs, _ = star_frame(5, **ref_frame)
    sci = write_plain(tmp_path / "sci.fits", image, wcs, **(sci_kw or {}))
    ref = write_plain(tmp_path / "ref.fits", ref_image, ref_wcs, **(ref_kw or {}))
    return FramePair.of(sci, ref)


def test_pair_errors_bands_overlap_stars(tmp_path: Path) -> None:
    options = PipelineOptions()
    with pytest.raises(
        InvalidExposureError, match=r"ref\.fits: keyword 'FILTER' = 'g'.*sci\.fits.*bands differ"
    ):
        prepare_pair(_pair(tmp_path / "a", ref_kw={"FILTER": "g"}), options, None)
    with pytest.raises(InvalidExposureError, match=r"ref\.fits: field 'wcs'.*covers 0\.0%.*do not overlap"):
        prepare_pair(_pair(tmp_path / "b", shift=(900.0, 0.0)), options, None)
    noise = np.random.default_rng(6).normal(SKY, 6.0, (128, 128))
    sci = write_plain(tmp_path / "n_sci.fits", noise, make_wcs((128, 128)))
    ref = write_plain(tmp_path / "n_ref.fits", noise, make_wcs((128, 128)))
    with pytest.raises(InvalidExposureError, match=r"n_sci\.fits: field 'image' has 0 usable stars for PSF"):
        prepare_pair(FramePair.of(sci, ref), options, None)
    with pytest.raises(
        InvalidExposureError, match=r"sci\.fits: keyword 'MAGZP' \(zero point\) missing.*--catalog"
    ):
        prepare_pair(_pair(tmp_path / "c", sci_kw={"MAGZP": None}), options, None)


def test_zero_point_fitted_against_a_catalogue(tmp_path: Path) -> None:
    image, wcs, stars = star_frame(7, fwhm=2.5)
    exp = with_estimated_psf(read_frame(write_plain(tmp_path / "f.fits", image, wcs, MAGZP=None)))
    assert exp.meta["zero_point_source"] == "none" and exp.meta["psf_stars"] >= 10
    true_zp = 27.3
    catalog = stars.assign(mag=true_zp - 2.5 * np.log10(stars["flux"]))
    zp, err, n = fit_zero_point(exp, catalog)
    assert n >= 10 and err < 0.02
    assert zp == pytest.approx(true_zp, abs=max(3 * err, 0.02))


def test_reprojected_reference_subtracts_static_stars(tmp_path: Path) -> None:
    """The reference on a grid moved by (3.4, -2.7) px: reprojected, its static stars subtract."""
    pair = _pair(tmp_path, shift=(3.4, -2.7))
    science, reference, info = prepare_pair(pair, PipelineOptions(), None)
    assert info["reprojected"] and info["overlap_fraction"] > 0.95
    assert reference.shape == science.shape and reference.wcs is science.wcs
    assert ((reference.mask & Mask.NO_DATA) != 0)[:, -3:].all()  # the strip the reference does not cover
    found = pair_candidates(
        science,
        reference,
        subtractor=ZOGYSubtractor(flux_ratio="fit"),
        detector=Detector(),
        stamp_size=31,
        fill_value=np.nan,
        pixel_scale=1.0,
    )
    diff = found.frame.difference
    inner = (slice(20, -20), slice(20, -20))
    chi2 = np.nanmean(diff.image[inner] ** 2 / diff.variance[inner])
    assert chi2 < 1.5
    assert len(found.candidates) <= 0.1 * 81  # of 81 static stars
    c = found.candidates
    assert (
        (c["x"] - 141).abs().lt(2) & (c["y"] - 77).abs().lt(2) & c["sign"].eq(1)
    ).sum() == 1  # the transient


def test_pairs_file_and_regions(tmp_path: Path) -> None:
    (tmp_path / "pairs.txt").write_text("# science reference\na/s1.fits r.fits\nb/s1.fits r.fits cat.fits\n")
    pairs = read_pairs(tmp_path / "pairs.txt", catalog=tmp_path / "all.parquet")
    assert [p.catalog for p in pairs] == [tmp_path / "all.parquet", tmp_path / "cat.fits"]
    assert [p.name for p in pairs] == ["a_s1", "b_s1"] and pairs[0].science == tmp_path / "a" / "s1.fits"
    table = pd.DataFrame(
        {"ra": [150.0, 150.01], "dec": [2.0, 2.01], "sign": [1, -1], "alert_id": ["x-0", "x-1"]}
    )
    lines = regions_text(table).splitlines()
    assert lines[2] == "fk5" and len(lines) == 5
    assert "color=green" in lines[3] and "text={x-0}" in lines[3] and "color=red" in lines[4]


def test_cli_pipeline_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pair = _pair(tmp_path, ref_kw={"FILTER": "i"})
    code = main(["pipeline", str(pair.science), str(pair.reference), "--out", str(tmp_path / "out"), *SMALL])
    err = capsys.readouterr().err
    assert code == 2 and "bands differ" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_simulated_frames_as_real_recover_the_builds_transients(tmp_path: Path, tiny_bundle: Path) -> None:
    """`hybrid simulate` frames through `hybrid pipeline` (truth not passed; PSFs estimated from the
    stars): the injected transients are recovered as completely as the build recovers them from the
    same field, matched to the truth by the build's own matcher; scores and regions are written."""
    from hydra.utils import instantiate

    from hybrid.cli import load_config
    from hybrid.curation.truth import match_truth
    from hybrid.data.build import process_field
    from hybrid.data.dataset import read_dataset
    from hybrid.sim.field import simulate_field

    overrides = [*SMALL, "sim.shape=[512,512]", "pipeline.min_psf_stars=5", f"paths.cache_dir={tmp_path}"]
    frames, out = tmp_path / "frames", tmp_path / "out"
    assert main(["simulate", "--out", str(frames), "--fields", "1", *overrides]) == 0
    f = frames / "field-0000"
    args = [str(f / "science_epoch0.fits"), str(f / "reference.fits"), "--catalog", str(f / "catalog.fits")]
    assert (
        main(["pipeline", *args, "--out", str(out), "--regions", "--bundle", str(tiny_bundle), *overrides])
        == 0
    )

    ds = read_dataset(out)
    assert ds.meta["kind"] == "frames" and not ds.meta["pairs"][0]["reprojected"]
    assert ds.meta["pairs"][0]["science_frame"]["zero_point_source"] == "header"
    assert "truth_real" not in ds.candidates and ds.stamps.shape[1:] == (3, 31, 31)
    assert ds.candidates["ctx_no_host"].notna().all()  # context from the field's catalogue
    scores = pd.read_parquet(out / "scores.parquet")
    assert sorted(scores["alert_id"]) == sorted(ds.candidates["alert_id"])
    name = ds.meta["pairs"][0]["name"]
    assert len((out / "regions" / f"{name}.reg").read_text().splitlines()) == len(ds) + 3
    assert (out / "regions" / f"{name}.png").stat().st_size > 10_000

    cfg = load_config(overrides)
    survey = instantiate(cfg.survey)
    fld = simulate_field(survey, instantiate(cfg.sim), int(cfg.data.seed), 0)
    epoch = fld.epochs[0]
    fwhm_px = epoch.conditions["fwhm_arcsec"] / survey.pixel_scale
    matched = match_truth(ds.candidates, fld, epoch, fwhm_px=fwhm_px)
    found = set(matched["transient_id"][matched["truth_real"]])
    built = process_field(cfg, 0).candidates
    built = built[(built["epoch"] == 0) & built["truth_real"] & (built["label_source"] != "injected")]
    expected = set(built["transient_id"])
    assert len(expected) >= 5
    assert len(found) >= 0.85 * len(expected)
    assert len(found & expected) >= 0.75 * len(expected)


def test_run_pipeline_skips_a_bad_pair_and_resumes(tmp_path: Path) -> None:
    """Two pairs: the good one's candidates (its transient among them) make the dataset, the bad
    one is skipped with its reason; a pair finished before a restart is not processed again."""
    from hybrid.cli import load_config
    from hybrid.data.dataset import read_dataset
    from hybrid.pipeline import run_pair, run_pipeline

    cfg = load_config([*SMALL, f"paths.cache_dir={tmp_path}"])
    good, bad = _pair(tmp_path / "good"), _pair(tmp_path / "bad", ref_kw={"FILTER": "z"})
    out = tmp_path / "out"
    run_pair(cfg, good, out.with_name("out.shards"))  # as if a killed run had finished this pair
    good.science.unlink()  # processing it again would now fail
    assert run_pipeline(cfg, [good, bad], out, progress=False) == out
    ds = read_dataset(out)
    assert set(ds.candidates["pair"]) == {good.name} and len(ds) == len(ds.stamps) >= 1
    hit = ds.candidates[(ds.candidates["x"] - 141).abs().lt(2) & (ds.candidates["y"] - 77).abs().lt(2)]
    assert (
        len(hit) == 1
        and hit["sign"].iloc[0] == 1
        and hit["mag_psf"].iloc[0] == pytest.approx(25.0 - 2.5 * np.log10(3e3), abs=0.15)
    )
    assert [s["name"] for s in ds.meta["skipped"]] == [bad.name] and "bands differ" in ds.meta["skipped"][0][
        "skipped"
    ]
    assert not out.with_name("out.shards").exists()


def test_pipeline_configs_compose() -> None:
    from hydra.utils import instantiate

    from hybrid.cli import load_config

    options = instantiate(load_config(["pipeline=ztf"]).pipeline, _convert_="all")
    assert isinstance(options, PipelineOptions) and isinstance(options.format, FrameFormat)
    assert (options.format.read_noise, options.format.mjd, options.format.default_gain) == (
        "READNOI",
        "OBSMJD",
        None,
    )
    assert options.format.image_hdu == ["IMAGE", "SCI"]
