"""hybrid.photometry reproduces the photometry it replaces (psf_estimation, stars, detection
features, the subtraction benchmark) on a fixed simulated frame, bit for bit (or, for star
aperture errors, to float32 rounding: the old code passed sep an error map, the new one a variance)."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid import photometry
from hybrid.bench import subtraction as bench
from hybrid.detection.features import measure_stamps
from hybrid.exposure import Mask
from hybrid.subtraction import psf_estimation as old
from hybrid.subtraction import stars as old_stars
from hybrid.subtraction.stars import UNUSABLE
from tests.test_subtraction import make_exposure


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(11)
    src = [(30.0 + 23.3 * i, 20.0 + 17.7 * j, 500.0 + 800.0 * (i + j)) for i in range(8) for j in range(10)]
    exp = make_exposure(rng, (200, 200), 3.0, 5.0, 25.0, src)
    exp.mask[50:53, 40:43] |= Mask.BAD
    exp.mask[100, :] |= Mask.EDGE
    x = np.array([s[0] for s in src]) + rng.uniform(-0.4, 0.4, len(src))
    y = np.array([s[1] for s in src]) + rng.uniform(-0.4, 0.4, len(src))
    x[:3] = [2.0, 197.5, 41.0]  # off the edge, at the edge, on the bad pixels
    y[:3] = [100.0, 5.0, 51.0]
    return exp, x, y


def test_frame_photometry_matches_the_old_code(frame) -> None:
    exp, x, y = frame
    invalid = ((exp.mask & UNUSABLE) != 0) | ~np.isfinite(exp.image)
    psf = exp.psf.image_at(100.0, 100.0, 15)
    new = photometry.psf_fluxes(exp.image, exp.variance, invalid, x, y, psf)
    for a, b in zip(old.psf_fluxes(exp, x, y, psf), new, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(
        old.aperture_fluxes(exp, x, y, 7.5, psf),
        photometry.aperture_fluxes(exp.image, exp.variance, invalid, x, y, 7.5, psf=psf),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    f, e, _ = old_stars._aperture(exp, invalid, x, y, 6.0)
    nf, ne = photometry.aperture_fluxes(exp.image, exp.variance, invalid, x, y, 6.0)
    inside = np.isfinite(nf)
    assert inside.sum() >= 60
    np.testing.assert_array_equal(f[inside], nf[inside])
    np.testing.assert_allclose(e[inside], ne[inside], rtol=1e-6)


def test_benchmark_photometry_matches_the_old_code(frame) -> None:
    exp, x, y = frame
    exp.mask[:4, :] |= Mask.EDGE  # the simulation's edge margin: apertures off the frame touch it
    exp.mask[-4:, :] |= Mask.EDGE
    exp.mask[:, :4] |= Mask.EDGE
    exp.mask[:, -4:] |= Mask.EDGE
    out = bench.Output(exp.image, exp.variance, exp.psf, exp.mask, exp.wcs)
    bad = ~np.isfinite(exp.image) | ((exp.mask & (Mask.NO_DATA | Mask.EDGE)) != 0)
    kernels = np.stack([exp.psf.image_at(a, b, 15) for a, b in zip(x, y, strict=True)])
    for a, b in zip(
        bench.psf_photometry(out, x, y),
        photometry.psf_fluxes(exp.image, exp.variance, bad, x, y, kernels, background=False),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    r = 9.0
    size = 2 * int(np.ceil(r)) + 9
    kernels = np.stack([exp.psf.image_at(a, b, size) for a, b in zip(x, y, strict=True)])
    new, _ = photometry.aperture_fluxes(exp.image, exp.variance, bad, x, y, r, psf=kernels)
    np.testing.assert_array_equal(bench.aperture_photometry(out, x, y, r), new)


def test_stamp_photometry_matches_the_old_features(frame) -> None:
    exp, x, y = frame
    s, k = 21, 15
    ix, iy = np.rint(x[3:]).astype(int), np.rint(y[3:]).astype(int)
    keep = (ix >= s // 2) & (iy >= s // 2) & (ix < 200 - s // 2) & (iy < 200 - s // 2)

    def cut(a: np.ndarray) -> np.ndarray:
        h = s // 2
        centres = zip(ix[keep], iy[keep], strict=True)
        return np.stack([a[j - h : j + h + 1, i - h : i + h + 1] for i, j in centres])

    diff, var = cut(exp.image).copy(), cut(exp.variance)
    diff[0, 10, 10] = np.nan
    psf = exp.psf.image_at(100.0, 100.0, k)
    sign = np.where(np.arange(len(diff)) % 3 == 0, -1, 1)
    table = measure_stamps(diff, var, cut(exp.mask), psf, sign, zero_point=25.0, pixel_scale=1.0)
    c = slice(s // 2 - k // 2, s // 2 + k // 2 + 1)
    signed = diff[:, c, c] * sign.astype(np.float32)[:, None, None]
    flux, err, chi2 = photometry.forced_psf_fluxes(signed, var[:, c, c], psf)
    to_ujy = 10 ** (0.4 * (23.9 - 25.0))
    np.testing.assert_array_equal(table["flux_psf"], flux * sign * to_ujy)
    np.testing.assert_array_equal(table["flux_psf_err"], err * to_ujy)
    np.testing.assert_array_equal(table["chi2_psf"], chi2)
    fwhm = float(2.0 * np.sqrt((psf >= psf.max() / 2).sum() / np.pi))
    ap, ap_err = photometry.stamp_aperture_fluxes(signed, var[:, c, c], max(fwhm, 2.0))
    np.testing.assert_array_equal(table["flux_aper"], ap * sign * to_ujy)
    np.testing.assert_array_equal(table["snr_aper"], ap / ap_err)
