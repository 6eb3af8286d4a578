"""A simulated survey field: one deep reference and several science epochs of the same sky.

``simulate_field(survey, config, seed, field_id)`` is a pure function of its arguments, so a
survey-scale build can run fields anywhere (local processes, Dask) and get identical results.

Noise: each pixel's count is drawn with the variance of Poisson statistics on the expected electrons
(sky + sources) plus read noise. The normal approximation to the Poisson law is used because every
profile's sky gives hundreds of electrons per pixel, where the two agree far below the read noise.
The science image keeps its sky, as survey cutouts do; the reference is a background-subtracted
stack of ``reference_exposures`` exposures at a better seeing, scaled to one exposure.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from astropy.wcs import WCS
from scipy import ndimage

from hybrid.exposure import Exposure, Mask
from hybrid.psf import MoffatPSF, render_points
from hybrid.sim import artifacts as art
from hybrid.sim.render import convolve_tiled, render_intrinsic_galaxies
from hybrid.sim.sky import SkyConfig, draw_galaxies, draw_stars, observe_catalog
from hybrid.sim.survey import SurveyProfile
from hybrid.sim.transients import TransientConfig, draw_asteroids, draw_persistent, trail_points


@dataclass(frozen=True)
class SimConfig:
    """How a field is simulated (the survey profile says with what instrument)."""

    shape: tuple[int, int] = (1024, 1024)
    epochs_per_field: int = 2
    cadence_days: float = 2.0
    psf_variation: float = 0.04  # typical fractional FWHM change across the field
    psf_model_error: float = 0.02  # fractional error of the PSF model the pipeline is given
    sky_gradient: float = 0.02  # fractional sky change across the field
    sky: SkyConfig = field(default_factory=SkyConfig)
    transients: TransientConfig = field(default_factory=TransientConfig)
    artifacts: art.ArtifactConfig = field(default_factory=art.ArtifactConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        ny, nx = self.shape
        if not (64 <= ny <= 4096 and 64 <= nx <= 4096):
            raise ValueError(f"sim.shape must be between 64 and 4096 pixels per side, got {self.shape}")


@dataclass
class SimulatedEpoch:
    """One science exposure with its truth: transients and asteroids present, and the artifact map."""

    science: Exposure
    transients: pd.DataFrame  # id, type, x, y, flux (difference flux, ADU), mag, host, known, ...
    artifact_map: np.ndarray  # uint8 codes of hybrid.sim.artifacts.Artifact
    conditions: dict
    true_psf: MoffatPSF  # the PSF the image was rendered with (science.psf is the pipeline's model)


@dataclass
class SimulatedField:
    field_id: int
    survey: SurveyProfile
    reference: Exposure
    epochs: list[SimulatedEpoch]
    stars: pd.DataFrame
    galaxies: pd.DataFrame
    catalog: pd.DataFrame
    reference_true_psf: MoffatPSF


def make_wcs(rng: np.random.Generator, shape: tuple[int, int], pixel_scale: float) -> WCS:
    """A north-up, east-left TAN WCS at a random pointing with a small rotation."""
    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-30)), np.sin(np.radians(80)))))
    w.wcs.crval = [rng.uniform(0, 360), dec]
    rot = np.radians(rng.normal(0, 0.5))
    s = pixel_scale / 3600.0
    w.wcs.cd = [[-s * np.cos(rot), s * np.sin(rot)], [s * np.sin(rot), s * np.cos(rot)]]
    w.wcs.radesys = "ICRS"
    return w


def _draw_psf(
    rng: np.random.Generator, fwhm_px: float, beta: float, shape: tuple[int, int], variation: float
) -> MoffatPSF:
    return MoffatPSF(
        fwhm=fwhm_px,
        beta=max(1.8, beta + rng.normal(0, 0.2)),
        shape=shape,
        e1=rng.normal(0, 0.03),
        e2=rng.normal(0, 0.03),
        fwhm_slope=(rng.normal(0, variation), rng.normal(0, variation)),
        fwhm_curvature=abs(rng.normal(variation, variation / 2)),
        astigmatism=rng.normal(0, 0.04),
    )


def _pipeline_psf(rng: np.random.Generator, true: MoffatPSF, error: float) -> MoffatPSF:
    """The PSF model a pipeline would have estimated: the true PSF with small errors in width, wings
    and shape (PSF models fitted to a few dozen stars are good to a few per cent)."""
    return replace(
        true,
        fwhm=true.fwhm * (1 + rng.normal(0, error)),
        beta=max(1.8, true.beta + rng.normal(0, 5 * error)),
        e1=true.e1 + rng.normal(0, error / 2),
        e2=true.e2 + rng.normal(0, error / 2),
    )


def _observe(
    rng: np.random.Generator,
    expected_e: np.ndarray,
    survey: SurveyProfile,
    n_exposures: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy image and variance (ADU, ADU^2) of the mean of ``n_exposures`` with ``expected_e`` each."""
    var_e = (np.maximum(expected_e, 0) + survey.read_noise**2) / n_exposures
    noisy = expected_e + np.sqrt(var_e) * rng.standard_normal(expected_e.shape, dtype=np.float32)
    return (noisy / survey.gain).astype(np.float32), (var_e / survey.gain**2).astype(np.float32)


def cloud_screen(
    rng: np.random.Generator, shape: tuple[int, int], rms: float, scale_px: float = 48.0
) -> np.ndarray:
    """A smooth transparency screen of mean 1 and fractional rms ``rms`` with structure on
    ``scale_px`` (thin cloud moving over a frame during the exposure)."""
    ny, nx = shape
    coarse = rng.standard_normal((max(2, int(ny / scale_px) + 2), max(2, int(nx / scale_px) + 2)))
    fine = ndimage.zoom(coarse, (ny / (coarse.shape[0] - 1), nx / (coarse.shape[1] - 1)), order=3)[:ny, :nx]
    fine = (fine - fine.mean()) / max(float(fine.std()), 1e-6)
    return np.clip(1.0 + rms * fine, 0.05, None).astype(np.float32)


def simulate_field(survey: SurveyProfile, config: SimConfig, seed: int, field_id: int) -> SimulatedField:
    """Simulate one field: static sky, reference, and ``config.epochs_per_field`` science epochs."""
    rng = np.random.default_rng([seed, field_id])
    shape = config.shape
    ny, nx = shape
    area_deg2 = nx * ny * survey.pixel_area / 3600.0**2
    faint = survey.depth_m5 + config.sky.faint_margin
    wcs = make_wcs(rng, shape, survey.pixel_scale)
    source_id = f"sim:{survey.name}:seed={seed}:field={field_id}"

    stars = draw_stars(rng, config.sky, shape, area_deg2, faint)
    galaxies = draw_galaxies(rng, config.sky, shape, area_deg2, faint, survey.pixel_scale)
    catalog = observe_catalog(rng, stars, galaxies, config.sky, survey.depth_m5)
    ra, dec = wcs.all_pix2world(catalog["x"], catalog["y"], 0)
    catalog["ra"], catalog["dec"] = ra, dec

    epoch_days = np.arange(config.epochs_per_field) * config.cadence_days
    transients, sci_flux = draw_persistent(rng, config.transients, survey, stars, galaxies, epoch_days, shape)
    defects = art.draw_defects(rng, config.artifacts, shape)
    mjd0 = 60000.0 + rng.uniform(0, 1500)
    star_flux = survey.mag_to_adu(stars["mag"].to_numpy())
    gal_flux = survey.mag_to_adu(galaxies["mag"].to_numpy())
    variable = transients["type"] == "variable_star"
    in_reference = ~variable.to_numpy() & (transients["ref_flux"].to_numpy(float) > 0)  # nuclei, AGN, CVs
    edge = art.edge_mask(shape, config.artifacts.edge_margin)
    yy, xx = np.mgrid[:ny, :nx].astype(np.float32)

    def sky_plane(level: float) -> np.ndarray:
        g = rng.normal(0, config.sky_gradient, 2)
        return (level * (1 + g[0] * (xx / nx - 0.5) + g[1] * (yy / ny - 0.5))).astype(np.float32)

    # reference: a deep stack with better seeing, misregistered against the science grid
    ref_fwhm = (
        survey.seeing_median * survey.reference_seeing_factor * np.exp(rng.normal(0, survey.seeing_sigma / 3))
    )
    ref_psf = _draw_psf(rng, ref_fwhm / survey.pixel_scale, survey.psf_beta, shape, config.psf_variation)
    ref_throughput = 10 ** (-0.4 * abs(rng.normal(0, survey.transparency_sigma / 3)))
    ref_model = np.zeros(shape, np.float32)
    misregister = art.misregistration(rng, config.artifacts, shape)
    star_shift = misregister(stars["x"].to_numpy(), stars["y"].to_numpy())
    galaxy_light = np.zeros(shape, np.float32)
    render_intrinsic_galaxies(galaxy_light, galaxies, gal_flux)
    render_points(
        ref_model,
        ref_psf,
        stars["x"] + star_shift[:, 0],
        stars["y"] + star_shift[:, 1],
        star_flux * ref_throughput,
    )
    ref_model += convolve_tiled(galaxy_light, ref_psf, shift=misregister) * ref_throughput
    nuc = transients[in_reference]
    render_points(ref_model, ref_psf, nuc["x"], nuc["y"], nuc["ref_flux"].to_numpy() * ref_throughput)
    ref_sky = (
        survey.sky_adu(survey.sky_brightness + abs(rng.normal(0, survey.sky_sigma / 2))) * ref_throughput
    )
    sky = sky_plane(ref_sky)
    ref_image, ref_var = _observe(rng, (ref_model + sky) * survey.gain, survey, survey.reference_exposures)
    ref_mask = np.where(edge, Mask.EDGE, 0).astype(np.uint16)
    art.saturate(ref_image, ref_mask, None, survey.saturation)
    ref_image -= sky  # the stacking pipeline removed the sky
    missing = art.no_data_strip(rng, config.artifacts, shape)
    ref_image[missing] = np.nan
    ref_mask[missing] |= Mask.NO_DATA
    reference = Exposure(
        image=ref_image,
        variance=ref_var,
        mask=ref_mask,
        psf=_pipeline_psf(rng, ref_psf, config.psf_model_error),
        wcs=wcs,
        zero_point=survey.zero_point + 2.5 * np.log10(ref_throughput),
        gain=survey.gain * survey.reference_exposures,
        saturation=survey.saturation,
        survey=survey.name,
        band=survey.band,
        mjd=mjd0 - 200.0,
        background_subtracted=True,
        source=f"{source_id}:reference",
        meta={"fwhm_arcsec": ref_fwhm},
    )

    epochs = []
    for e, day in enumerate(epoch_days):
        fwhm = survey.seeing_median * np.exp(rng.normal(0, survey.seeing_sigma))
        psf = _draw_psf(rng, fwhm / survey.pixel_scale, survey.psf_beta, shape, config.psf_variation)
        cond = survey.draw_conditions(rng)
        extinction = cond.extinction
        # source and sky counts scale with the exposure time; clouds dim the sources (and the sky)
        throughput = cond.throughput * cond.exposure_time / survey.exposure_time
        sky_mu = survey.sky_brightness + rng.normal(0, survey.sky_sigma)
        model = np.zeros(shape, np.float32)
        flux_e = sci_flux[:, e]
        star_now = star_flux.copy()
        star_now[transients.loc[variable, "star"].to_numpy(int)] = flux_e[variable.to_numpy()]
        render_points(model, psf, stars["x"], stars["y"], star_now * throughput)
        model += convolve_tiled(galaxy_light, psf) * throughput
        point = ~variable.to_numpy()
        render_points(model, psf, transients["x"][point], transients["y"][point], flux_e[point] * throughput)
        asteroids = draw_asteroids(rng, config.transients, survey, shape, cond.exposure_time)
        ax, ay, af, _ = trail_points(asteroids)
        render_points(model, psf, ax, ay, af * throughput)
        if cond.cloud_patchiness > 0:  # patchy cloud: a transparency screen no global flux ratio removes
            model *= cloud_screen(rng, shape, cond.cloud_patchiness)
        sky_level = survey.sky_adu(sky_mu) * throughput
        image, var = _observe(rng, (model + sky_plane(sky_level)) * survey.gain, survey, 1)
        mask = np.where(edge, Mask.EDGE, 0).astype(np.uint16)
        amap = np.zeros(shape, np.uint8)
        art.apply_defects(image, mask, amap, defects, float(np.sqrt(np.median(var))))
        n_cr = art.add_cosmic_rays(
            rng,
            image,
            amap,
            config.artifacts,
            pixel_size_um=survey.pixel_size,
            exposure_time=cond.exposure_time,
            gain=survey.gain,
        )
        art.saturate(image, mask, amap, survey.saturation)
        science = Exposure(
            image=image,
            variance=var,
            mask=mask,
            psf=_pipeline_psf(rng, psf, config.psf_model_error),
            wcs=wcs,
            zero_point=cond.zero_point,
            gain=survey.gain,
            saturation=survey.saturation,
            survey=survey.name,
            band=survey.band,
            mjd=mjd0 + day,
            background_subtracted=False,
            source=f"{source_id}:epoch={e}",
            meta={"fwhm_arcsec": fwhm, "exposure_time": cond.exposure_time},
        )
        truth = transients.drop(columns=["ref_flux"]).assign(
            flux=flux_e - transients["ref_flux"].to_numpy(), known=False
        )
        ast = asteroids.assign(
            transient_id=len(transients) + np.arange(len(asteroids)),
            type="asteroid",
            host=-1,
            star=-1,
            host_offset=np.nan,
            host_offset_re=np.nan,
        )
        truth = pd.concat([truth, ast[[*truth.columns, "trail_px"]]], ignore_index=True)
        truth["mag"] = survey.zero_point - 2.5 * np.log10(
            np.maximum(np.abs(truth["flux"].to_numpy(float)), 1e-3)
        )
        epochs.append(
            SimulatedEpoch(
                science=science,
                transients=truth,
                artifact_map=amap,
                conditions={
                    "fwhm_arcsec": fwhm,
                    "ref_fwhm_arcsec": ref_fwhm,
                    "sky_brightness": sky_mu,
                    "extinction": extinction,
                    "exposure_time": cond.exposure_time,
                    "zero_point": cond.zero_point,
                    "cosmic_rays": n_cr,
                    # background-limited: depth grows by 1.25 log10 of the exposure time
                    "depth_m5": survey.limiting_magnitude(fwhm, sky_mu)
                    - extinction
                    + 1.25 * np.log10(cond.exposure_time / survey.exposure_time),
                },
                true_psf=psf,
            )
        )
    return SimulatedField(field_id, survey, reference, epochs, stars, galaxies, catalog, ref_psf)
