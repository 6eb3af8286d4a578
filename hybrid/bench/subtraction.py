"""Subtraction benchmark (`hybrid bench subtraction`): every subtractor on the same simulated pairs.

Frame pairs come from :func:`hybrid.sim.field.simulate_field` with the configured survey profile
(ZTF by default), in scenarios that differ in frame size, star density (``sim.sky.
star_density_range`` pinned to its sparse or crowded end) and seeing ratio (the profile's
``reference_seeing_factor``, with the seeing spread narrowed so that the ratio holds). Every registered
subtractor runs with its ``conf/subtraction`` defaults, and so do the variants of
``conf/bench/subtraction.yaml`` (ZOGY in the paper's set-up, with the frames' own PSFs, with the zero
points' flux ratio). The registered peers (:mod:`hybrid.subtraction.peers`: ois, properimage, sfft,
the optional ``[peers]`` extra) run once, on the smaller pairs; a peer that is not installed is
reported as such, with the reason. The pairs, the variants and the goals the report judges are that
config's; this module only measures and reports.

Measured per method and pair, against the simulation's truth:

* wall time of the subtraction (median of ``repeats`` runs; peers once);
* residual at known stars: the PSF-weighted flux of the difference at the true positions of bright
  (science S/N > 20), unsaturated, isolated, non-variable stars, divided by its error from the
  difference's variance plane -- the rms of that pull is 1 for a subtraction down to the noise;
  also the median absolute residual as a fraction of the star's flux;
* false positives: sep detections above 5 sigma (:class:`hybrid.detection.Detector`) that lie near
  no injected transient or asteroid and no cosmic ray, hot pixel, bad column or bleed trail of the
  artifact map -- i.e. what the subtraction itself creates; for ZOGY also the peaks of |S_corr| > 5,
  its own detection statistic, which includes source and astrometric noise;
* completeness of the injected transients (point sources; asteroids excluded) in bins of magnitude,
  a transient counting as found when a detection of its sign lies within 2 pixels;
* flux bias: the median ratio of the PSF flux on the difference (with the method's difference PSF)
  to the true flux, for transients detected at S/N > 20; also of the aperture flux (3 FWHM, with an
  aperture correction from the difference PSF), which does not depend on the PSF model's accuracy.
  Both with :mod:`hybrid.photometry`.

The goals are comparative: each of our methods against the registered peer implementing the same
algorithm (its ``peer_of``), on the pairs both ran. Written to ``reports/bench_subtraction.md`` and
``.json``, with ``reports/subtraction_residuals.png`` showing the same stars' residuals for every
method.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from scipy import ndimage
from scipy.spatial import cKDTree

from hybrid import config
from hybrid.detection import Detector, subtract_background
from hybrid.exposure import Difference, Exposure, Mask
from hybrid.photometry import aperture_fluxes, psf_fluxes
from hybrid.sim.field import SimulatedField, simulate_field
from hybrid.subtraction import SUBTRACTORS, Subtractor, subtractor_names

SETTINGS = config.CONF_DIR / "bench" / "subtraction.yaml"
MAG_BINS = np.arange(14.0, 22.01, 1.0)


def settings(cfg: DictConfig | None = None) -> DictConfig:
    """The benchmark's pairs, variants and goals: ``cfg.bench`` when composed (``+bench=subtraction``),
    else conf/bench/subtraction.yaml."""
    composed = OmegaConf.select(cfg, "bench") if cfg is not None else None
    return composed if composed is not None else OmegaConf.load(SETTINGS)


@dataclass(frozen=True)
class Scenario:
    """One simulated pair: frame side (pixels), star density class and reference/science seeing."""

    size: int
    density: str
    seeing_ratio: float  # reference FWHM / science FWHM
    seed: int

    @property
    def name(self) -> str:
        return f"{self.size}px-{self.density}-ref{self.seeing_ratio:.2f}"


def default_scenarios(conf: DictConfig, sizes: tuple[int, ...] | None = None) -> list[Scenario]:
    """``scenarios.seeing_ratios`` x densities at the smallest size, ``seeing_ratios_larger`` x
    densities above (``sizes``: those of the settings)."""
    grid = conf.scenarios
    out = []
    for k, size in enumerate(sizes or tuple(grid.sizes)):
        ratios = grid.seeing_ratios if k == 0 else grid.seeing_ratios_larger
        for density in grid.densities:
            for ratio in ratios:
                out.append(Scenario(int(size), str(density), float(ratio), seed=len(out)))
    return out


# -- methods ----------------------------------------------------------------------------------------


def build_subtractor(name: str, overrides: dict | None = None) -> Subtractor:
    """Registered subtractor ``name`` with its conf/subtraction defaults and ``overrides`` on top."""
    path = config.CONF_DIR / "subtraction" / f"{name}.yaml"
    if not path.exists():
        return SUBTRACTORS.get(name)(**(overrides or {}))
    return instantiate({**OmegaConf.to_container(OmegaConf.load(path)), **(overrides or {})})


def methods(conf: DictConfig) -> dict[str, tuple[str, Callable[[], Subtractor]]]:
    """Method label -> (registered subtractor, factory): our registered subtractors, the variants of
    the settings, then the registered peers."""
    ours = subtractor_names()
    out = {n: (n, partial(build_subtractor, n)) for n in ours}
    for label, v in conf.variants.items():
        out[str(label)] = (
            v.subtractor,
            partial(build_subtractor, v.subtractor, OmegaConf.to_container(v.overrides)),
        )
    out |= {n: (n, partial(build_subtractor, n)) for n in subtractor_names(peers=True) if n not in ours}
    return out


def peer_status() -> dict[str, str | None]:
    """Registered peer -> why it cannot run here (None: installed)."""
    ours = set(subtractor_names())
    return {n: SUBTRACTORS.get(n).unavailable() for n in subtractor_names(peers=True) if n not in ours}


# -- truth and metrics ------------------------------------------------------------------------------


def _science_flux_scale(fld: SimulatedField, epoch: int) -> float:
    """Science ADU per truth-table ADU (the truth is at the survey's nominal zero point)."""
    return 10.0 ** (0.4 * (fld.epochs[epoch].science.zero_point - fld.survey.zero_point))


def _unmeasurable(diff: Difference) -> np.ndarray:
    return ~np.isfinite(diff.image) | ((diff.mask & (Mask.NO_DATA | Mask.EDGE)) != 0)


def _psf_images(diff: Difference, x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """The difference PSF at each position, ``(n, size, size)``."""
    images = [diff.psf.image_at(xs, ys, size) for xs, ys in zip(x, y, strict=True)]
    return np.array(images) if images else np.zeros((0, size, size))


def psf_photometry(
    diff: Difference, x: np.ndarray, y: np.ndarray, size: int = 15
) -> tuple[np.ndarray, np.ndarray]:
    """PSF-weighted flux ``sum(P D) / sum(P^2)`` with the difference PSF at each position and its
    error from the variance plane; NaN where the stamp touches invalid pixels."""
    kernels = _psf_images(diff, x, y, size)
    return psf_fluxes(diff.image, diff.variance, _unmeasurable(diff), x, y, kernels, background=False)


def aperture_photometry(diff: Difference, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Flux in a circle of ``radius`` pixels divided by the difference PSF's fraction within it, i.e.
    total flux almost independent of the PSF's shape; NaN where the aperture touches invalid pixels."""
    kernels = _psf_images(diff, x, y, 2 * int(np.ceil(radius)) + 9)
    return aperture_fluxes(diff.image, diff.variance, _unmeasurable(diff), x, y, radius, psf=kernels)[0]


def test_stars(fld: SimulatedField, epoch: int, max_stars: int = 300) -> pd.DataFrame:
    """Bright, unsaturated, isolated, non-variable stars of the truth, with their science flux."""
    ep = fld.epochs[epoch]
    sci = ep.science
    stars = fld.stars.reset_index(drop=True)
    flux = fld.survey.mag_to_adu(stars["mag"].to_numpy()) * _science_flux_scale(fld, epoch)
    fwhm = sci.psf.fwhm_at(sci.shape[1] / 2, sci.shape[0] / 2)
    sky_sigma = float(np.sqrt(np.median(sci.variance)))
    snr = flux / np.sqrt(sky_sigma**2 * 2.27 * fwhm**2 + flux)
    peak = flux / (1.13 * fwhm**2)
    ok = (snr > 20) & (peak < 0.3 * fld.survey.saturation)
    variable = ep.transients.loc[ep.transients["type"] == "variable_star", "star"].to_numpy(int)
    ok[variable[(variable >= 0) & (variable < len(ok))]] = False
    sources = np.concatenate([stars[["x", "y"]].to_numpy(), fld.galaxies[["x", "y"]].to_numpy()])
    src_flux = np.concatenate([flux, fld.survey.mag_to_adu(fld.galaxies["mag"].to_numpy())])
    tree = cKDTree(sources)
    idx = np.flatnonzero(ok)
    for i, near in zip(
        idx, tree.query_ball_point(stars.loc[idx, ["x", "y"]].to_numpy(), 4 * fwhm), strict=True
    ):
        if any(j != i and src_flux[j] > 0.02 * flux[i] for j in near):
            ok[i] = False
    transient_tree = cKDTree(ep.transients[["x", "y"]].to_numpy())
    near_transient = transient_tree.query_ball_point(stars[["x", "y"]].to_numpy(), 4 * fwhm)
    ok &= np.array([len(n) == 0 for n in near_transient])
    hit = ndimage.maximum_filter(ep.artifact_map, size=7) > 0
    ix = np.clip(np.rint(stars["x"]).astype(int), 0, sci.shape[1] - 1)
    iy = np.clip(np.rint(stars["y"]).astype(int), 0, sci.shape[0] - 1)
    ok &= ~hit[iy, ix]
    out = stars[ok].assign(flux=flux[ok], snr=snr[ok])
    return out.sort_values("flux", ascending=False).head(max_stars).reset_index(drop=True)


def star_residuals(diff: Difference, stars: pd.DataFrame) -> dict:
    flux, err = psf_photometry(diff, stars["x"].to_numpy(), stars["y"].to_numpy())
    good = np.isfinite(flux) & np.isfinite(err) & (err > 0)
    pull = flux[good] / err[good]
    frac = np.abs(flux[good]) / stars["flux"].to_numpy()[good]
    return {
        "n_stars": int(good.sum()),
        "pull_rms": float(np.sqrt(np.mean(pull**2))) if good.any() else float("nan"),
        "pull_median_abs": float(np.median(np.abs(pull))) if good.any() else float("nan"),
        "residual_frac_median": float(np.median(frac)) if good.any() else float("nan"),
    }


def detection_metrics(diff: Difference, fld: SimulatedField, epoch: int, detector: Detector) -> dict:
    ep = fld.epochs[epoch]
    sci = ep.science
    det = detector.detect(diff)
    truth = ep.transients
    fwhm = sci.psf.fwhm_at(sci.shape[1] / 2, sci.shape[0] / 2)
    trail = truth["trail_px"].fillna(0.0).to_numpy() if "trail_px" in truth else np.zeros(len(truth))
    radius = np.maximum(3.0 * fwhm, trail / 2 + 3.0 * fwhm)
    dxy = det[["x", "y"]].to_numpy()
    near_truth = np.zeros(len(det), bool)
    if len(truth) and len(det):
        d = np.hypot(
            dxy[:, None, 0] - truth["x"].to_numpy()[None], dxy[:, None, 1] - truth["y"].to_numpy()[None]
        )
        near_truth = (d <= radius[None]).any(axis=1)
    artifact = ndimage.maximum_filter(ep.artifact_map, size=7) > 0

    def bogus(points: np.ndarray) -> np.ndarray:
        """Detections near no true transient and no simulated detector artifact."""
        if len(points) == 0:
            return np.zeros(0, bool)
        d = np.hypot(
            points[:, None, 0] - truth["x"].to_numpy()[None], points[:, None, 1] - truth["y"].to_numpy()[None]
        )
        near = (d <= radius[None]).any(axis=1) if len(truth) else np.zeros(len(points), bool)
        ix = np.clip(np.rint(points[:, 0]).astype(int), 0, sci.shape[1] - 1)
        iy = np.clip(np.rint(points[:, 1]).astype(int), 0, sci.shape[0] - 1)
        return ~near & ~artifact[iy, ix]

    false_pos = bogus(dxy)
    score_fp = float("nan")
    if diff.score is not None:  # ZOGY's own detection statistic: peaks of |S_corr| above 5
        import sep

        invalid = ~np.isfinite(diff.score) | ((diff.mask & (Mask.NO_DATA | Mask.EDGE | Mask.BAD)) != 0)
        peaks = []
        for sign in (1, -1):
            data = np.ascontiguousarray(np.where(invalid, 0.0, sign * diff.score), dtype=np.float32)
            objs = sep.extract(data, 5.0, mask=invalid, minarea=detector.min_area, filter_kernel=None)
            peaks.append(np.column_stack([objs["x"], objs["y"]]))
        score_fp = float(bogus(np.concatenate(peaks)).sum())

    # completeness and flux of injected point transients
    point = truth[(truth["type"] != "asteroid") & (truth["flux"].abs() > 0)].reset_index(drop=True)
    true_flux = point["flux"].to_numpy() * _science_flux_scale(fld, epoch)
    tx, ty = point["x"].to_numpy(), point["y"].to_numpy()
    tix = np.clip(np.rint(tx).astype(int), 0, sci.shape[1] - 1)
    tiy = np.clip(np.rint(ty).astype(int), 0, sci.shape[0] - 1)
    usable = (diff.mask[tiy, tix] & (Mask.NO_DATA | Mask.EDGE)) == 0
    found = np.zeros(len(point), bool)
    if len(det) and len(point):
        d = np.hypot(dxy[:, None, 0] - tx[None], dxy[:, None, 1] - ty[None])
        same_sign = det["sign"].to_numpy()[:, None] == np.sign(true_flux)[None]
        found = ((d <= 2.0) & same_sign).any(axis=0)
    mags = point["mag"].to_numpy()
    completeness = []
    for lo, hi in itertools.pairwise(MAG_BINS):
        sel = usable & (mags >= lo) & (mags < hi)
        completeness.append([float(lo), float(hi), int(sel.sum()), int((found & sel).sum())])
    flux, err = psf_photometry(diff, tx, ty)
    bright = usable & found & np.isfinite(flux) & (np.abs(true_flux) / np.maximum(err, 1e-30) > 20)
    ratio = flux[bright] / true_flux[bright]
    ap = aperture_photometry(diff, tx[bright], ty[bright], 3.0 * fwhm)
    ap_ratio = ap / true_flux[bright]
    ap_ratio = ap_ratio[np.isfinite(ap_ratio)]
    if not diff.meta.get("flux_calibrated", True):
        ratio = ap_ratio = np.zeros(0)
    return {
        "detections": len(det),
        "false_positives": int(false_pos.sum()),
        "false_positives_score": score_fp,
        "false_positives_with_artifacts": int((~near_truth).sum()),
        "completeness": completeness,
        "flux_ratio_median": float(np.median(ratio)) if ratio.size else float("nan"),
        "flux_ratio_n": int(ratio.size),
        "aperture_flux_ratio_median": float(np.median(ap_ratio)) if ap_ratio.size else float("nan"),
    }


# -- running ------------------------------------------------------------------------------------------


def simulate_pair(cfg: DictConfig, scenario: Scenario, conf: DictConfig) -> SimulatedField:
    """The scenario's pair: the survey at the scenario's seeing ratio, the settings' star density and
    simulation overrides (``scenarios.sim``)."""
    survey = instantiate(cfg.survey)
    survey = replace(survey, reference_seeing_factor=scenario.seeing_ratio, seeing_sigma=0.03)
    density = list(conf.scenarios.densities[scenario.density])
    pinned = {
        "shape": [scenario.size, scenario.size],
        "epochs_per_field": 1,
        "sky": {"star_density_range": density},
    }
    sim = instantiate(OmegaConf.merge(cfg.sim, pinned, conf.scenarios.sim))
    return simulate_field(survey, sim, int(cfg.seed) + 1000, scenario.seed)


def _timed(
    build: Callable[[], Subtractor], science: Exposure, reference: Exposure, repeats: int
) -> tuple[Difference | None, float, str]:
    runs, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        try:
            out = build().subtract(science, reference)
        except Exception as err:  # a failing method is a result of the benchmark, not its end
            return None, float("nan"), f"{type(err).__name__}: {err}"
        runs.append(time.perf_counter() - t0)
    return out, statistics.median(runs), "ok"


def run_scenario(
    cfg: DictConfig, scenario: Scenario, conf: DictConfig, *, repeats: int = 3, run_peers: bool = True
) -> tuple[list[dict], dict]:
    """Every method on the scenario's pair (peers once, where installed and the pair is no larger
    than ``peer_max_size``): one row of metrics per method, and the outputs for the figure."""
    fld = simulate_pair(cfg, scenario, conf)
    ep = fld.epochs[0]
    science = subtract_background(ep.science)
    reference = fld.reference
    detector = instantiate(cfg.detection)
    stars = test_stars(fld, 0)
    peer_run = run_peers and scenario.size <= int(conf.peer_max_size)
    rows, outputs = [], {}
    fwhm_sci = ep.true_psf.fwhm
    fwhm_ref = fld.reference_true_psf.fwhm
    for label, (name, build) in methods(conf).items():
        entry = SUBTRACTORS.get(name)
        if entry.peer_of is not None and (not peer_run or entry.unavailable()):
            continue
        diff, wall, status = _timed(build, science, reference, 1 if entry.peer_of else repeats)
        row = {
            "scenario": scenario.name,
            "size": scenario.size,
            "density": scenario.density,
            "seeing_ratio": fwhm_ref / fwhm_sci,
            "method": label,
            "status": status,
            "wall_s": wall,
        }
        if diff is not None:
            meta = diff.meta or {}
            if meta.get("flux_ratio") == "fit":  # the simulation's zero points are exact
                row["flux_ratio_fit_error"] = meta["F_r"] / meta["F_r_zero_point"] - 1.0
            row |= star_residuals(diff, stars)
            row |= detection_metrics(diff, fld, 0, detector)
            outputs[label] = diff
        rows.append(row)
    return rows, {"field": fld, "science": science, "stars": stars, "outputs": outputs}


def _fmt(v: float, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def summarise(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    ok = df[df["status"] == "ok"]
    summary = []
    for method, g in ok.groupby("method", sort=False):
        counts = np.array([[c[2:] for c in cs] for cs in g["completeness"]], float).sum(axis=0)
        summary.append(
            {
                "method": method,
                "wall_1024_s": g.loc[g["size"] == 1024, "wall_s"].median(),
                "wall_2048_s": g.loc[g["size"] == 2048, "wall_s"].median(),
                "pull_rms": g["pull_rms"].median(),
                "residual_frac": g["residual_frac_median"].median(),
                "false_positives": g["false_positives"].mean(),
                "false_positives_score": g["false_positives_score"].mean(),
                "flux_ratio": g["flux_ratio_median"].median(),
                "aperture_flux_ratio": g["aperture_flux_ratio_median"].median(),
                "flux_ratio_fit_error": (
                    g["flux_ratio_fit_error"].abs().median() if "flux_ratio_fit_error" in g else float("nan")
                ),
                "completeness": {
                    f"{lo:.0f}-{hi:.0f}": (n_found / n if n else float("nan"))
                    for lo, hi, (n, n_found) in zip(MAG_BINS[:-1], MAG_BINS[1:], counts, strict=True)
                },
            }
        )
    return pd.DataFrame(summary)


def _markdown(result: dict, summary: pd.DataFrame, rows: list[dict]) -> list[str]:
    m = result["machine"]
    lines = [
        "# Subtraction benchmark",
        "",
        f"Survey `{result['survey']}`; {len(result['scenarios'])} simulated pairs (one science epoch "
        f"against its reference each); machine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}; "
        f"load average at start {m['load_start']}. Written by `hybrid bench subtraction`. Times are "
        "medians of repeated runs of the subtraction alone (background subtraction and simulation "
        f"excluded); peers run once, on the pairs up to {_side(result['peer_max_size'])} only.",
        "",
        "Peers (registered in `hybrid.subtraction.peers`): "
        + ", ".join(
            f"{k}: {('measured' if result['peers_run'] else 'installed, not run') if not why else why}"
            for k, why in result["peers"].items()
        )
        + ".",
        "",
        "## Summary (medians over pairs; false positives: mean per frame)",
        "",
        "| method | 1024² s | 2048² s | star pull rms | star residual / flux | FP > 5σ / frame | "
        "FP on S_corr | PSF flux / true | aperture flux / true | completeness by mag |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, s in summary.iterrows():
        comp = ", ".join(f"{k}: {_fmt(v, '.2f')}" for k, v in s["completeness"].items() if np.isfinite(v))
        lines.append(
            f"| {s['method']} | {_fmt(s['wall_1024_s'], '.2f')} | {_fmt(s['wall_2048_s'], '.2f')} | "
            f"{_fmt(s['pull_rms'], '.2f')} | {_fmt(100 * s['residual_frac'], '.2f')}% | "
            f"{_fmt(s['false_positives'], '.1f')} | {_fmt(s['false_positives_score'], '.1f')} | "
            f"{_fmt(s['flux_ratio'], '.4f')} | "
            f"{_fmt(s['aperture_flux_ratio'], '.4f')} | {comp} |"
        )
    fits = summary[np.isfinite(summary["flux_ratio_fit_error"].astype(float))]
    if len(fits):
        lines += [
            "",
            "Fitted flux ratio F_r against the simulation's exact zero points (median |error| over pairs):",
            "",
        ]
        lines += [f"- {r['method']}: {100 * r['flux_ratio_fit_error']:.2f}%" for _, r in fits.iterrows()]
    lines += ["", "## Goals", ""]
    lines += result["goal_lines"]
    lines += [
        "",
        "## Every pair",
        "",
        "| pair | seeing ref/sci | method | s | stars | pull rms | residual / flux | FP | "
        "FP incl. artifacts | FP on S_corr | PSF flux ratio (n) | aperture flux ratio | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['seeing_ratio']:.2f} | {r['method']} | {_fmt(r['wall_s'], '.2f')} | "
            f"{r.get('n_stars', '—')} | {_fmt(r.get('pull_rms', float('nan')), '.2f')} | "
            f"{_fmt(100 * r.get('residual_frac_median', float('nan')), '.2f')}% | "
            f"{r.get('false_positives', '—')} | {r.get('false_positives_with_artifacts', '—')} | "
            f"{_fmt(r.get('false_positives_score', float('nan')), '.0f')} | "
            f"{_fmt(r.get('flux_ratio_median', float('nan')), '.4f')} ({r.get('flux_ratio_n', 0)}) | "
            f"{_fmt(r.get('aperture_flux_ratio_median', float('nan')), '.4f')} | "
            f"{r['status'][:60]} |"
        )
    lines += [
        "",
        "Definitions: *star pull rms* is the rms over test stars of (PSF-weighted residual flux) / (its "
        "error from the propagated variance), 1.0 for residuals at the noise; *residual / flux* is the "
        "median |residual| relative to the star's flux; *FP* counts 5σ detections of the pipeline's "
        "detector (sep on the matched-filtered difference) near no injected transient, asteroid or "
        "simulated detector artifact, *FP incl. artifacts* also those on cosmic rays, hot pixels, bad "
        "columns and bleed trails, *FP on S_corr* the same for peaks of ZOGY's |S_corr| > 5 (which "
        "includes source and astrometric noise); *PSF flux / true* is the median ratio of the PSF flux "
        "on the difference (with the method's difference PSF) to the injected flux for transients "
        "detected at S/N > 20, *aperture flux / true* the same for a 3 FWHM aperture corrected by the "
        "difference PSF (insensitive to errors of the PSF model). Peers' variance planes are the "
        "science variance scaled to their empirical sky noise, properimage's S_corr is scaled to unit "
        "robust standard deviation, and properimage's D is not in flux units.",
    ]
    return lines


def _shared_medians(rows: list[dict], ours: str, peer: str) -> tuple[dict, dict, int]:
    """Medians (false positives: means) of the two methods over the pairs on which both succeeded."""
    df = pd.DataFrame(rows)
    ok = df[df["status"] == "ok"]
    pairs = set(ok.loc[ok["method"] == ours, "scenario"]) & set(ok.loc[ok["method"] == peer, "scenario"])
    out = []
    for method in (ours, peer):
        g = ok[(ok["method"] == method) & ok["scenario"].isin(pairs)]
        out.append(
            {
                "wall_s": g["wall_s"].median(),
                "pull_rms": g["pull_rms"].median(),
                "residual_frac": g["residual_frac_median"].median(),
                "false_positives": g["false_positives"].mean(),
                "false_positives_score": g["false_positives_score"].mean(),
            }
        )
    return out[0], out[1], len(pairs)


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _side(size: int) -> str:
    return f"{size}x{size}"


def _goal_lines(
    summary: pd.DataFrame,
    rows: list[dict],
    conf: DictConfig,
    peer_status: dict[str, str | None],
    peers_run: bool = True,
) -> list[str]:
    """The settings' goals: speed, star residuals and false positives against the registered peer
    implementing the same algorithm (``peer_status``: each peer's reason for not running, or None),
    on the pairs both ran in this run; recovered flux within ``flux_bias_max`` for every method."""
    goals = conf.goals
    by = summary.set_index("method")
    lines = [
        f"Compared on the pairs both methods ran in this run (peers run on the pairs up to "
        f"{_side(conf.peer_max_size)} only): "
        f"speed at least {goals.speedup_min:g}x the peer's, star pull rms, star residual / flux and false "
        "positives per frame no worse than the peer's. False positives of both are those of the same "
        "detector on each method's difference image; for ZOGY against properimage also on each one's "
        "S_corr, the statistic ZOGY detects on.",
        "",
    ]
    for name, why in conf.unavailable_peers.items():
        lines.append(f"- {name}: {why}.")
    for peer, why in peer_status.items():
        ours = SUBTRACTORS.get(peer).peer_of
        if ours not in by.index:
            lines.append(f"- {ours} vs {peer}: {ours} did not run.")
            continue
        if why:
            lines.append(f"- {ours} vs {peer}: **not measured**, {why}.")
            continue
        if not peers_run:
            lines.append(f"- {ours} vs {peer}: **not measured**, the peers were not run (peers=False).")
            continue
        a, b, n = _shared_medians(rows, ours, peer)
        if n == 0:
            lines.append(f"- {ours} vs {peer}: no pair on which both succeeded.")
            continue
        speedup = b["wall_s"] / a["wall_s"]
        parts = [
            f"time {_fmt(a['wall_s'], '.2f')} s vs {_fmt(b['wall_s'], '.2f')} s, {_fmt(speedup, '.1f')}x "
            f"faster ({_verdict(speedup >= goals.speedup_min)})",
            f"star pull rms {_fmt(a['pull_rms'], '.2f')} vs {_fmt(b['pull_rms'], '.2f')} "
            f"({_verdict(a['pull_rms'] <= b['pull_rms'])})",
            f"star residual / flux {_fmt(100 * a['residual_frac'], '.2f')}% vs "
            f"{_fmt(100 * b['residual_frac'], '.2f')}% "
            f"({_verdict(a['residual_frac'] <= b['residual_frac'])})",
            f"false positives per frame {_fmt(a['false_positives'], '.1f')} vs "
            f"{_fmt(b['false_positives'], '.1f')} ({_verdict(a['false_positives'] <= b['false_positives'])})",
        ]
        if np.isfinite(a["false_positives_score"]) and np.isfinite(b["false_positives_score"]):
            parts.append(
                f"on S_corr {_fmt(a['false_positives_score'], '.1f')} vs "
                f"{_fmt(b['false_positives_score'], '.1f')} "
                f"({_verdict(a['false_positives_score'] <= b['false_positives_score'])})"
            )
        lines.append(f"- {ours} vs {peer} ({n} pairs): " + "; ".join(parts) + ".")
    for ours, ref in goals.reference_times.items():
        if ours in by.index:
            t = float(by.loc[ours, "wall_1024_s"])
            peer, seconds = ref.peer, ref.seconds
            target = seconds / goals.speedup_min
            lines.append(
                f"- {ours} under {target:.1f} s on 1024x1024 ({goals.speedup_min:g}x faster than {peer}'s "
                f"{seconds} s measured by the issue author on another machine; all 1024x1024 pairs): "
                f"{_fmt(t, '.2f')} s ({_verdict(t < target)})."
            )
    lines += [
        "",
        f"Recovered flux of injected transients within {100 * goals.flux_bias_max:g}% (median over pairs):",
        "",
    ]
    for method in by.index:
        flux, aperture = float(by.loc[method, "flux_ratio"]), float(by.loc[method, "aperture_flux_ratio"])
        if not np.isfinite(flux):
            lines.append(f"- {method}: not in flux units (no flux measured).")
            continue
        lines.append(
            f"- {method}: PSF flux {_fmt(100 * (flux - 1), '+.2f')}% "
            f"({_verdict(abs(flux - 1) <= goals.flux_bias_max)}), aperture flux "
            f"{_fmt(100 * (aperture - 1), '+.2f')}% ({_verdict(abs(aperture - 1) <= goals.flux_bias_max)})."
        )
    return lines


def residual_figure(detail: dict, path: Path, n_stars: int = 4, half: int = 10) -> Path:
    """The same bright test stars on the science, the reference and every method's difference (pull)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stars = detail["stars"]
    outputs = detail["outputs"]
    sci, ref = detail["science"], detail["field"].reference
    ny, nx = sci.shape
    pick = []
    for _, s in stars.iterrows():
        x, y = round(s["x"]), round(s["y"])
        if (
            half <= x < nx - half
            and half <= y < ny - half
            and all(
                np.isfinite(o.image[y - half : y + half + 1, x - half : x + half + 1]).all()
                for o in outputs.values()
            )
        ):
            pick.append((x, y))
        if len(pick) == n_stars:
            break
    cols = ["science", "reference", *outputs]
    fig, axes = plt.subplots(
        len(pick), len(cols), figsize=(1.6 * len(cols), 1.7 * len(pick) + 0.6), squeeze=False
    )
    for r, (x, y) in enumerate(pick):
        box = (slice(y - half, y + half + 1), slice(x - half, x + half + 1))
        for c, name in enumerate(cols):
            ax = axes[r, c]
            if name in ("science", "reference"):
                img = (sci if name == "science" else ref).image[box]
                ax.imshow(
                    np.arcsinh(img / np.sqrt(np.median((sci if name == "science" else ref).variance))),
                    cmap="gray",
                    origin="lower",
                )
            else:
                o = outputs[name]
                ax.imshow(
                    o.image[box] / np.sqrt(o.variance[box]), cmap="RdBu_r", vmin=-5, vmax=5, origin="lower"
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name.replace("[", "\n[").replace(",", ",\n"), fontsize=6)
    fig.suptitle(
        f"Residuals (difference / sqrt(variance), -5..5) at the same stars, {detail['name']}", fontsize=8
    )
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def run(
    cfg: DictConfig,
    *,
    out_dir: str | Path = "reports",
    fields: int | None = None,
    sizes: tuple[int, ...] | None = None,
    repeats: int = 3,
    peers: bool = True,
    scenarios: list[Scenario] | None = None,
) -> Path:
    """Run the subtraction benchmark; write ``bench_subtraction.md``/``.json`` and the residual figure.

    ``fields`` limits the number of simulated pairs (``None``: all of ``scenarios``, by default
    :func:`default_scenarios` of ``sizes``, by default the settings' sizes); ``peers``: run the
    installed registered peers.
    """
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    conf = settings(cfg)
    scenarios = list(scenarios) if scenarios is not None else default_scenarios(conf, sizes)
    sizes = tuple(sorted({s.size for s in scenarios}))
    if fields is not None:
        scenarios = scenarios[: max(1, fields)]
    rows: list[dict] = []
    figure_detail = None
    for scenario in scenarios:
        scenario_rows, detail = run_scenario(cfg, scenario, conf, repeats=repeats, run_peers=peers)
        rows += scenario_rows
        # the figure shows the smallest frames on which the most methods succeeded
        rank = (scenario.size == sizes[0], len(detail["outputs"]))
        if figure_detail is None or rank > figure_detail["rank"]:
            figure_detail = {**detail, "name": scenario.name, "rank": rank}
    summary = summarise(rows)
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_start": round(load_start, 2),
        },
        "survey": cfg.survey.name,
        "scenarios": [s.name for s in scenarios],
        "peers": (peers_here := peer_status()),
        "peers_run": peers,
        "peer_max_size": int(conf.peer_max_size),
        "goals": {
            **OmegaConf.to_container(conf.goals),
            "comparisons": [[SUBTRACTORS.get(p).peer_of, p] for p in peers_here],
        },
        "summary": json.loads(summary.to_json(orient="records")),
        "pairs": json.loads(pd.DataFrame(rows).to_json(orient="records")),
    }
    result["goal_lines"] = _goal_lines(summary, rows, conf, peers_here, peers)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_subtraction.json").write_text(json.dumps(result, indent=2))
    if figure_detail is not None and figure_detail["outputs"]:
        residual_figure(figure_detail, out_dir / "subtraction_residuals.png")
    md = out_dir / "bench_subtraction.md"
    md.write_text("\n".join(_markdown(result, summary, rows)) + "\n")
    return md
