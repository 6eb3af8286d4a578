"""Per-candidate measurements used in real-bogus work, computed from stamp cubes.

All measurements work on stamps, vectorised over candidates, so detections and injected synthetic
candidates are measured by one piece of code. The set follows the features of ZTF alert packets
(Masci et al. 2019, PASP 131, 018003; Duev et al. 2019, MNRAS 489, 3582) and of gotorb (Killestein et
al. 2021): PSF-fit flux and magnitude, shape, negative and bad pixel counts, the ratio of signed to
absolute flux, and the distance to the nearest catalogued source with its magnitude and star-galaxy
score.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from hybrid.photometry import PSF_FIT_ERRORS, forced_psf_fluxes, stamp_aperture_fluxes

#: AB magnitude of 1 microjansky: fluxes are features in uJy, never in a detector's DN, so that a model
#: trained at one zero point reads another survey's (or another night's) fluxes the same way.
AB_ZERO_POINT_UJY = 23.9

#: Feature name -> unit; the dataset's meta.json records this table.
FEATURE_UNITS: dict[str, str] = {
    "flux_psf": "uJy",
    "flux_psf_err": "uJy",
    "snr_psf": "",
    "mag_psf": "mag",
    "sigma_mag_psf": "mag",
    "isdiffpos": "bool",
    "chi2_psf": "",
    "flux_aper": "uJy",
    "snr_aper": "",
    "fwhm": "arcsec",
    "elongation": "",
    "ellipticity": "",
    "sharpness": "",
    "n_neg": "count",
    "n_bad": "count",
    "sumrat": "",
    "scorr_peak": "sigma",
    "dist_nearest_src": "arcsec",
    "mag_nearest_src": "mag",
    "sgscore_nearest": "",
    "fwhm_sci": "arcsec",
    "seeing_ratio": "",
    "maglim": "mag",
    "stamp_nan_fraction": "",
    "stamp_edge_fraction": "",
}


def measure_stamps(
    diff: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray,
    psf: np.ndarray,
    sign: np.ndarray,
    *,
    zero_point: float,
    pixel_scale: float,
    score: np.ndarray | None = None,
    psf_fit_errors: str = "variance",
) -> pd.DataFrame:
    """Measure candidates at the centres of difference-image stamps.

    Args:
        diff, variance, mask: (N, S, S) stamps of the difference image (ADU), its variance (ADU^2)
            and its mask bits; NaN pixels are treated as missing.
        psf: (K, K) unit-sum PSF of the difference, K odd and <= S, or (N, K, K): each candidate's own
            (the PSF varies across a frame; a fit with another place's PSF leaves chi2 on bright
            sources).
        sign: +1 or -1 per candidate (detected on +D or -D).
        zero_point: magnitude of 1 ADU in the difference image (fluxes are returned in uJy with it).
        pixel_scale: arcsec / pixel.
        score: optional (N, S, S) stamps of a detection score (ZOGY's S_corr, in sigma).
        psf_fit_errors: how the PSF fit weighs pixels and states its error (the survey's convention):
            ``"variance"``: each pixel by its own variance (sky, read noise and the sources' photons),
            the error from those weights, chi2 per pixel of the box; ``"background_chi2"``: every
            pixel by the stamp's background variance (its median), chi2 weighted by the PSF (the
            core the fit relies on) and the error scaled by sqrt(max(chi2, 1)), so the photon noise
            of a bright star under a candidate and any subtraction residual show as chi2 and inflate
            the error. ZTF's alerts follow the second: over the real alerts of
            fink-science 7.4.0, sigmapsf relative to the diffmaglim error grows with the brightness
            of the underlying PS1 source as sqrt(chipsf) does (both ~3 at 14-15 mag, ~1.2 at 17-18).
    """
    if psf_fit_errors not in PSF_FIT_ERRORS:
        raise ValueError(f"psf_fit_errors must be one of {PSF_FIT_ERRORS}, got {psf_fit_errors!r}")
    n, s, _ = diff.shape
    c = s // 2
    psf = psf if psf.ndim == 3 else psf[None]
    k = psf.shape[-1] // 2
    sl = slice(c - k, c + k + 1)
    sgn = sign.astype(np.float32)[:, None, None]
    d = diff[:, sl, sl] * sgn
    v = variance[:, sl, sl]
    if psf_fit_errors == "background_chi2":  # every pixel weighed by the stamp's background level
        with np.errstate(all="ignore"):  # a stamp without finite variance stays NaN
            background = np.nanmedian(np.where(variance > 0, variance, np.nan), axis=(1, 2))
        v = np.where(np.isfinite(v), background[:, None, None], np.nan)
    # forced photometry at the stamp centre (ZTF's magpsf) and in a circle of about one FWHM
    flux, flux_err, chi2 = forced_psf_fluxes(d, v, psf, background_chi2=psf_fit_errors == "background_chi2")
    fwhm_px = _psf_fwhm(psf.mean(axis=0))
    flux_ap, err_ap = stamp_aperture_fluxes(d, v, max(fwhm_px, 2.0))
    good = np.isfinite(d) & np.isfinite(v) & (v > 0)
    d0 = np.where(good, d, 0.0)
    yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
    r2 = xx * xx + yy * yy

    # shape: Gaussian-weighted second moments of the source's own (positive) pixels, corrected for the
    # weight (adaptive-moment style); like SExtractor's, on which ZTF's fwhm and elong are measured,
    # they ignore the negative lobe of a dipole
    sigma_w = max(fwhm_px / 2.3548, 0.8)
    g = np.exp(-r2 / (2 * sigma_w**2))[None]
    dp = np.maximum(d0, 0.0)
    m0 = np.maximum((dp * g).sum(axis=(1, 2)), 1e-30)
    mx = (dp * g * xx).sum(axis=(1, 2)) / m0
    my = (dp * g * yy).sum(axis=(1, 2)) / m0
    dx, dy = xx[None] - mx[:, None, None], yy[None] - my[:, None, None]
    ixx = (dp * g * dx * dx).sum(axis=(1, 2)) / m0
    iyy = (dp * g * dy * dy).sum(axis=(1, 2)) / m0
    ixy = (dp * g * dx * dy).sum(axis=(1, 2)) / m0
    tr, det = ixx + iyy, ixx * iyy - ixy**2
    disc = np.sqrt(np.maximum((tr / 2) ** 2 - det, 0))
    lam1, lam2 = np.maximum(tr / 2 + disc, 1e-3), np.maximum(tr / 2 - disc, 1e-3)
    sw2 = sigma_w**2
    # a Gaussian of variance S measured with weight variance W gives S W / (S + W)
    s1 = np.where(lam1 < sw2 * 0.98, lam1 * sw2 / np.maximum(sw2 - lam1, 1e-3), 50 * sw2)
    s2 = np.where(lam2 < sw2 * 0.98, lam2 * sw2 / np.maximum(sw2 - lam2, 1e-3), 50 * sw2)
    a, b = np.sqrt(s1), np.sqrt(np.maximum(s2, 1e-3))
    fwhm = 2.3548 * np.sqrt(a * b) * pixel_scale

    box = slice(c - 2, c + 3)  # the 5x5 box of ZTF's nneg, nbad and sumrat
    d5 = diff[:, box, box] * sgn
    finite5 = np.isfinite(d5)
    d5z = np.where(finite5, d5, 0.0)
    peak = d5z.max(axis=(1, 2))
    scorr = (
        np.nanmax(np.where(np.isfinite(score[:, box, box]), score[:, box, box] * sgn, -np.inf), axis=(1, 2))
        if score is not None
        else np.full(n, np.nan)
    )
    abs_flux = np.abs(flux)
    to_ujy = 10 ** (0.4 * (AB_ZERO_POINT_UJY - zero_point))
    return pd.DataFrame(
        {
            "flux_psf": flux * sign * to_ujy,
            "flux_psf_err": flux_err * to_ujy,
            "snr_psf": flux / flux_err,
            "mag_psf": zero_point - 2.5 * np.log10(np.maximum(abs_flux, 1e-6)),
            "sigma_mag_psf": 1.0857 * flux_err / np.maximum(abs_flux, 1e-6),
            "isdiffpos": sign > 0,
            "chi2_psf": chi2,
            "flux_aper": flux_ap * sign * to_ujy,
            "snr_aper": flux_ap / err_ap,
            "fwhm": fwhm,
            "elongation": a / b,
            "ellipticity": 1.0 - b / a,
            "sharpness": peak / np.maximum(np.abs(flux_ap), 1e-6),
            "n_neg": (finite5 & (d5z < 0)).sum(axis=(1, 2)),
            "n_bad": ((mask[:, box, box] != 0) | ~finite5).sum(axis=(1, 2)),
            "sumrat": d5z.sum(axis=(1, 2)) / np.maximum(np.abs(d5z).sum(axis=(1, 2)), 1e-6),
            "scorr_peak": np.where(np.isfinite(scorr), scorr, np.nan),
            "stamp_nan_fraction": (~np.isfinite(diff)).mean(axis=(1, 2)),
        }
    )


def _psf_fwhm(psf: np.ndarray) -> float:
    """FWHM (px) of a centred kernel from the area above half its maximum."""
    return float(2.0 * np.sqrt((psf >= psf.max() / 2).sum() / np.pi))


def nearest_source_features(
    x: np.ndarray, y: np.ndarray, catalog: pd.DataFrame, pixel_scale: float, *, radius: float = 30.0
) -> pd.DataFrame:
    """Distance (arcsec), magnitude and star-galaxy score of the nearest catalogued source.

    The ZTF equivalents are distpsnr1, sgmag1 and sgscore1 (Tachibana & Miller 2018), searched within
    ``radius`` (30 arcsec in ZTF's alerts). Without a catalogue, or without a source within ``radius``,
    the columns are NaN (ZTF writes -999) and are imputed downstream with a missing-value indicator.
    """
    nan = np.full(len(x), np.nan)
    if catalog is None or len(catalog) == 0:
        return pd.DataFrame({"dist_nearest_src": nan, "mag_nearest_src": nan, "sgscore_nearest": nan})
    d, j = cKDTree(catalog[["x", "y"]].to_numpy()).query(np.c_[x, y])
    d = d * pixel_scale
    found = d <= radius
    j = np.where(found, j, 0)
    return pd.DataFrame(
        {
            "dist_nearest_src": np.where(found, d, np.nan),
            "mag_nearest_src": np.where(found, catalog["mag"].to_numpy()[j], np.nan),
            "sgscore_nearest": np.where(found, catalog["sgscore"].to_numpy()[j], np.nan),
        }
    )
