"""Bring your own frames: real science and reference FITS in, candidates (and scores) out.

``hybrid pipeline SCI.fits REF.fits --out DIR [--catalog CAT] [--bundle B] [--regions]`` runs
:func:`run_pipeline`. Per frame pair (:func:`process_pair`, a pure function of the config and the
paths): read both frames with the survey's keyword names (:mod:`hybrid.data.real_frames`), check
bands and overlap, remove the sky, reproject the reference onto the science grid when the WCSs
differ, estimate both PSFs from the frames' stars, take the zero points from the headers or fit them
against the catalogue, then the same subtraction, detection, stamps, features and context as the
simulated build (:mod:`hybrid.data.frames`). The truth of simulated frames is never read.

Output directory ``DIR``:

* the dataset directory (``candidates.parquet``, ``stamps.npy``, ``meta.json``): one row per
  candidate of every pair, ids ``<pair>-<n>``, ``ra``/``dec`` (deg), ``x``/``y`` (px on the science
  frame), features with units; ``meta.json`` records each pair's zero points (and their source), PSF
  stars and FWHM, reprojection and overlap, repairs, and pairs skipped with the reason;
* ``scores.parquet`` with ``--bundle`` (the bundle's Predictor over the dataset directory);
* ``regions/<pair>.reg`` (DS9, fk5 circles: green positive, red negative) and
  ``regions/<pair>.png`` (the difference image, candidates circled) with ``--regions``.

Many pairs run in ``workers`` local processes. Each pair is written atomically to
``DIR.shards/<pair>/`` first, so a killed run resumes where it stopped. As in the build
(:mod:`hybrid.data.build`), the per-pair work runs on any engine; with Dask distributed::

    futures = client.map(lambda p: run_pair(cfg, p, shard_dir, regions=True), pairs)
    client.gather(futures)
    run_pipeline(cfg, pairs, out)   # finds every shard done and only merges (and scores)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

import hybrid
from hybrid.data.build import as_container, git_sha
from hybrid.data.dataset import (
    DatasetError,
    is_complete,
    read_dataset,
    write_dataset,
    write_dataset_streaming,
)
from hybrid.data.fits import read_catalog
from hybrid.data.frames import PairCandidates, StageTimer, pair_candidates, survey_stamps, with_context
from hybrid.data.real_frames import (
    FrameFormat,
    fit_zero_point,
    overlap_fraction,
    pixel_scale,
    read_frame,
    reproject_onto,
    same_grid,
    with_estimated_psf,
)
from hybrid.detection import FEATURE_UNITS, subtract_background
from hybrid.detection.candidates import CHANNELS
from hybrid.exposure import Exposure, InvalidExposureError
from hybrid.io import atomic_write, write_text_atomic

log = logging.getLogger(__name__)

#: Stages timed per pair (seconds in ``meta.json`` and in ``hybrid bench pipeline``).
STAGES = ("read", "reproject", "psf", "subtract", "detect", "cut", "context")


@dataclass
class PipelineOptions:
    """How real frames are prepared (``conf/pipeline/*.yaml``).

    Args:
        format: the survey's extension and keyword names.
        zero_point: ``header``: the header's, fitted against the catalogue where missing;
            ``catalog``: always fitted against the catalogue.
        match_radius: arcsec, star-catalogue matching radius of the zero-point fit.
        reproject_order: interpolation of the reference (``nearest-neighbor``, ``bilinear``,
            ``biquadratic``, ``bicubic``; :func:`reproject.reproject_interp`).
        wcs_tolerance: px; a reference whose pixels lie within this of the science pixels is used
            as it is, otherwise it is reprojected.
        min_overlap: smallest fraction of the science frame the reference must cover.
        psf_size: px (odd), side of the estimated PSF images.
        min_psf_stars: fewest stars for a PSF estimate (a clear error below).
    """

    format: FrameFormat = field(default_factory=FrameFormat)
    zero_point: str = "header"
    match_radius: float = 2.0
    reproject_order: str = "bilinear"
    wcs_tolerance: float = 0.05
    min_overlap: float = 0.1
    psf_size: int = 31
    min_psf_stars: int = 10

    def __post_init__(self) -> None:
        if self.zero_point not in ("header", "catalog"):
            raise ValueError(f"pipeline.zero_point must be 'header' or 'catalog', got {self.zero_point!r}")


@dataclass(frozen=True)
class FramePair:
    """A science frame, its reference, and the catalogue of their field (optional)."""

    science: Path
    reference: Path
    catalog: Path | None = None
    name: str = ""

    @classmethod
    def of(
        cls,
        science: str | os.PathLike,
        reference: str | os.PathLike,
        catalog: str | os.PathLike | None = None,
    ) -> FramePair:
        science, reference = Path(science), Path(reference)
        stem = science.name.removesuffix(".gz").removesuffix(".fz").removesuffix(".fits").removesuffix(".fit")
        prefix = f"{science.parent.name}_" if science.parent.name else ""
        return cls(science, reference, Path(catalog) if catalog else None, prefix + stem)


def read_pairs(path: str | os.PathLike, catalog: str | os.PathLike | None = None) -> list[FramePair]:
    """Pairs from a text file: one ``SCIENCE REFERENCE [CATALOG]`` per line (paths relative to the
    file's directory; ``#`` starts a comment); ``catalog`` for lines without one."""
    path = Path(path)
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        if len(parts) not in (2, 3):
            raise ValueError(f"{path}:{n}: expected 'SCIENCE REFERENCE [CATALOG]', got {line!r}")
        files = [p if Path(p).is_absolute() else path.parent / p for p in parts]
        pairs.append(FramePair.of(files[0], files[1], files[2] if len(files) == 3 else catalog))
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):  # same file names in one directory cannot happen; disambiguate
        pairs = [
            FramePair(p.science, p.reference, p.catalog, f"{i:04d}_{p.name}") for i, p in enumerate(pairs)
        ]
    return pairs


def load_catalog(path: str | os.PathLike) -> pd.DataFrame:
    """A source catalogue of the field (FITS table, Parquet or CSV) with ``ra``, ``dec`` in deg."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: catalogue file not found")
    suffix = path.name.lower()
    if suffix.endswith((".fits", ".fit", ".fits.gz")):
        table = read_catalog(path)
    elif suffix.endswith(".parquet"):
        table = pd.read_parquet(path)
    else:
        table = pd.read_csv(path)
    for col in ("ra", "dec"):
        if col not in table.columns:
            raise InvalidExposureError(f"{path}: catalogue column {col!r} missing")
    return table


def _options(cfg: DictConfig | dict) -> PipelineOptions:
    c = as_container(cfg)
    return (
        instantiate(OmegaConf.create(c["pipeline"]), _convert_="all")
        if c.get("pipeline")
        else PipelineOptions()
    )


def prepare_pair(
    pair: FramePair, options: PipelineOptions, catalog: pd.DataFrame | None, timer: StageTimer | None = None
) -> tuple[Exposure, Exposure, dict[str, Any]]:
    """Read, check and calibrate a frame pair: science and reference on one grid, sky removed, PSFs
    estimated, zero points set. Returns them and what was done (for ``meta.json``).

    Raises:
        InvalidExposureError: a frame without WCS, bands that differ, no overlap, too few stars for
            a PSF, no zero point (each naming the file and the keyword or field).
    """
    timer = timer or StageTimer()
    fmt = options.format
    with timer("read"):
        science = subtract_background(read_frame(pair.science, fmt))
        reference = subtract_background(read_frame(pair.reference, fmt))
    if science.band.strip().lower() != reference.band.strip().lower():
        raise InvalidExposureError(
            f"{reference.source}: keyword {fmt.band!r} = {reference.band!r}, but the science frame "
            f"{science.source} has {fmt.band!r} = {science.band!r}: bands differ"
        )
    info: dict[str, Any] = {
        "science": str(pair.science),
        "reference": str(pair.reference),
        "band": science.band,
    }
    if same_grid(science, reference, options.wcs_tolerance):
        info["reprojected"] = False
    else:
        covered = overlap_fraction(science, reference)
        if covered < options.min_overlap:
            raise InvalidExposureError(
                f"{reference.source}: field 'wcs': the reference covers {covered:.1%} of the science frame "
                f"{science.source} (at least {options.min_overlap:.0%} needed): the frames do not overlap"
            )
        with timer("reproject"):
            reference = reproject_onto(reference, science, order=options.reproject_order)
        info["reprojected"] = True
    info["overlap_fraction"] = float((science.valid() & reference.valid()).mean())
    if info["overlap_fraction"] < options.min_overlap:
        raise InvalidExposureError(
            f"{reference.source}: field 'image': valid pixels overlap {info['overlap_fraction']:.1%} of the "
            f"science frame {science.source} (at least {options.min_overlap:.0%} needed)"
        )
    with timer("psf"):
        science, reference = (
            with_estimated_psf(e, size=options.psf_size, min_stars=options.min_psf_stars)
            for e in (science, reference)
        )
        science, reference = (_calibrate(e, options, catalog) for e in (science, reference))
    for role, e in (("science", science), ("reference", reference)):
        ny, nx = e.shape
        info[role + "_frame"] = {
            "zero_point": e.zero_point,
            "zero_point_source": e.meta["zero_point_source"],
            "psf_stars": e.meta["psf_stars"],
            "psf_fwhm_px": float(e.psf.fwhm_at((nx - 1) / 2, (ny - 1) / 2)),
            "gain": e.gain,
            "saturation": e.saturation,
            "mjd": e.mjd,
            "masked_fraction": float((e.mask != 0).mean()),
            "repairs": e.meta["repairs"],
        }
    return science, reference, info


def _calibrate(exposure: Exposure, options: PipelineOptions, catalog: pd.DataFrame | None) -> Exposure:
    """The exposure with its zero point from the header or fitted against ``catalog``."""
    if options.zero_point == "header" and exposure.meta["zero_point_source"] == "header":
        return exposure
    if catalog is None:
        raise InvalidExposureError(
            f"{exposure.source}: keyword {options.format.zero_point!r} (zero point) missing and no catalogue "
            "to fit it against (give --catalog)"
            if options.zero_point == "header"
            else f"{exposure.source}: pipeline.zero_point=catalog needs a catalogue (give --catalog)"
        )
    zp, err, n = fit_zero_point(exposure, catalog, match_radius=options.match_radius)
    meta = {**exposure.meta, "zero_point_source": f"catalog ({n} stars, +-{err:.3f} mag)"}
    return replace(exposure, zero_point=zp, meta=meta)


@dataclass
class PairProducts:
    """One pair's candidates (table + (N, C, S, S) stamps), its frames and what was done."""

    name: str
    candidates: pd.DataFrame
    stamps: np.ndarray
    pair: PairCandidates
    info: dict[str, Any]
    seconds: dict[str, float]


def _nearest_source_catalog(catalog: pd.DataFrame | None, science: Exposure) -> pd.DataFrame | None:
    """The catalogue's sources on the science grid (``x``, ``y`` px, ``mag``, ``sgscore``)."""
    if catalog is None or "mag" not in catalog.columns:
        return None
    x, y = science.wcs.all_world2pix(catalog["ra"].to_numpy(float), catalog["dec"].to_numpy(float), 0)
    sg = catalog["sgscore"].to_numpy(float) if "sgscore" in catalog.columns else np.full(len(x), np.nan)
    return pd.DataFrame({"x": x, "y": y, "mag": catalog["mag"].to_numpy(float), "sgscore": sg})


def process_pair(cfg: DictConfig | dict, pair: FramePair) -> PairProducts:
    """Everything for one frame pair (see the module docstring); a pure function of its arguments."""
    cfg = OmegaConf.create(as_container(cfg))
    options = _options(cfg)
    timer = StageTimer()
    catalog = load_catalog(pair.catalog) if pair.catalog else None
    science, reference, info = prepare_pair(pair, options, catalog, timer)
    scale = pixel_scale(science.wcs)
    products = pair_candidates(
        science,
        reference,
        subtractor=instantiate(cfg.subtraction),
        detector=instantiate(cfg.detection),
        stamp_size=int(cfg.data.stamp_size),
        fill_value=float(cfg.data.fill_value),
        pixel_scale=scale,
        catalog=_nearest_source_catalog(catalog, science),
        psf_fit_errors=str(cfg.survey.get("psf_fit_errors", "variance")) if cfg.get("survey") else "variance",
        timer=timer,
    )
    context, kb = _context(cfg, catalog, info)
    table = with_context(products.candidates, context, kb, timer)
    n = len(table)
    ids = [f"{pair.name}-{i}" for i in range(n)]
    table.insert(0, "alert_id", ids)
    table.insert(1, "object_id", ids)
    table.insert(2, "pair", pair.name)
    table.insert(3, "survey", science.survey)
    table.insert(4, "band", science.band)
    table.insert(5, "mjd", science.mjd)
    info.update(
        name=pair.name,
        survey=science.survey,
        pixel_scale=scale,
        candidates=n,
        difference=products.frame.difference.method,
    )
    cube = survey_stamps(
        products.stamps,
        products.candidates,
        science,
        products.frame,
        instantiate(cfg.survey).cutouts,
        fill_value=float(cfg.data.fill_value),
    )
    return PairProducts(pair.name, table, cube, products, info, dict(timer.seconds))


def _context(cfg: DictConfig, catalog: pd.DataFrame | None, info: dict) -> tuple[Any, Any]:
    """The context associator and knowledge base: the field's catalogue read with the
    ``survey_catalog`` specs, else the configured catalogue files, else none (recorded in ``info``)."""
    context = instantiate(cfg.context) if cfg.get("context") else None
    if context is None:
        info["context"] = "none (no context configured)"
        return None, None
    if catalog is not None and context.survey_catalog:
        info["context"] = "the field's catalogue"
        return context, context.knowledge_base(catalog)
    if context.catalogs:
        info["context"] = "configured catalogues"
        return context, context.knowledge_base()
    info["context"] = "none (no catalogue given and none configured)"
    return None, None


# ------------------------------------------------------------------------------------------- output


def regions_text(table: pd.DataFrame, radius_arcsec: float = 5.0) -> str:
    """DS9 region file (fk5) of the candidates: circles, green positive and red negative, named by id."""
    lines = ["# Region file format: DS9 version 4.1", "# hybrid pipeline candidates", "fk5"]
    for row in table.itertuples(index=False):
        colour = "green" if row.sign > 0 else "red"
        shape = f'circle({row.ra:.7f},{row.dec:.7f},{radius_arcsec:.1f}")'
        lines.append(f"{shape} # color={colour} text={{{row.alert_id}}}")
    return "\n".join(lines) + "\n"


def plot_difference(products: PairProducts, path: Path) -> Path:
    """PNG of the difference image (zscale) with the candidates circled (green +, red -)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.visualization import ZScaleInterval

    image = products.pair.frame.difference.image
    lo, hi = ZScaleInterval().get_limits(image[np.isfinite(image)])
    fig, ax = plt.subplots(figsize=(8, 8), dpi=100)
    ax.imshow(image, origin="lower", cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    t = products.candidates
    for sign, colour in ((1, "lime"), (-1, "red")):
        sel = t["sign"] == sign
        ax.scatter(t["x"][sel], t["y"][sel], s=60, facecolors="none", edgecolors=colour, linewidths=0.8)
    ax.set_title(f"{products.name}: {len(t)} candidates (green +, red -)")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    fig.tight_layout()

    def save(tmp: Path) -> None:
        fig.savefig(tmp, format="png")

    atomic_write(path, save)
    plt.close(fig)
    return path


def run_pair(
    cfg: DictConfig | dict, pair: FramePair, shard_dir: Path, *, regions: bool = False
) -> dict[str, Any]:
    """Process one pair and write it atomically to ``shard_dir/<name>/`` (regions first, so that a
    complete shard has them); a pair that cannot be processed is written as a skip with its reason."""
    shard = shard_dir / pair.name
    try:
        products = process_pair(cfg, pair)
    except (InvalidExposureError, FileNotFoundError) as err:
        log.warning("skipped %s: %s", pair.name, err)
        info = {
            "name": pair.name,
            "science": str(pair.science),
            "reference": str(pair.reference),
            "skipped": str(err),
        }
        write_text_atomic(shard_dir / f"{pair.name}.skipped.json", json.dumps(info))
        return info
    if regions:
        text = regions_text(products.candidates)
        write_text_atomic(shard_dir / f"{pair.name}.reg", text)
        plot_difference(products, shard_dir / f"{pair.name}.png")
    info = {**products.info, "seconds": products.seconds}
    write_dataset(shard, products.candidates, products.stamps, info)
    return info


def _done(shard_dir: Path, pair: FramePair) -> bool:
    return is_complete(shard_dir / pair.name) or (shard_dir / f"{pair.name}.skipped.json").is_file()


def run_pipeline(
    cfg: DictConfig | dict,
    pairs: list[FramePair],
    out: str | os.PathLike,
    *,
    bundle: str | os.PathLike | None = None,
    regions: bool = False,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Run the pipeline on ``pairs`` into the directory ``out`` (see the module docstring).

    Raises:
        InvalidExposureError: every pair failed (the first pair's reason).
    """
    if not pairs:
        raise ValueError("no frame pairs given")
    out = Path(out)
    shard_dir = out.with_name(out.name + ".shards")
    shard_dir.mkdir(parents=True, exist_ok=True)
    pending = [p for p in pairs if not _done(shard_dir, p)]
    c = as_container(cfg)
    with tqdm(
        total=len(pairs),
        initial=len(pairs) - len(pending),
        unit="pair",
        desc="pipeline",
        disable=not progress,
    ) as bar:
        if workers <= 1 or len(pending) <= 1:
            for p in pending:
                run_pair(c, p, shard_dir, regions=regions)
                bar.update()
        else:
            with ProcessPoolExecutor(workers) as pool:
                for fut in as_completed(
                    [pool.submit(run_pair, c, p, shard_dir, regions=regions) for p in pending]
                ):
                    fut.result()
                    bar.update()
    done = [p for p in pairs if is_complete(shard_dir / p.name)]
    skipped = [json.loads((shard_dir / f"{p.name}.skipped.json").read_text()) for p in pairs if p not in done]
    if not done:
        raise InvalidExposureError(skipped[0]["skipped"])
    _merge(c, done, skipped, shard_dir, out)
    if regions:
        (out / "regions").mkdir(exist_ok=True)
        for p in done:
            for ext in (".reg", ".png"):
                shutil.copy2(shard_dir / f"{p.name}{ext}", out / "regions" / f"{p.name}{ext}")
    if bundle is not None:
        from hybrid.serving import Predictor

        scores = out / "scores.parquet"
        with Predictor(bundle, workers=1) as predictor:
            predictor.predict_to_parquet([out], scores, kind="dataset")
    shutil.rmtree(shard_dir, ignore_errors=True)
    return out


def _merge(c: dict, done: list[FramePair], skipped: list[dict], shard_dir: Path, out: Path) -> Path:
    shards = [read_dataset(shard_dir / p.name) for p in done]
    context = instantiate(c["context"]) if c.get("context") else None
    with_ctx = [s for s in shards if not str(s.meta.get("context", "none")).startswith("none")]
    context_units = context.feature_units() if context is not None and with_ctx else {}
    pairs_meta = [
        {k: v for k, v in s.meta.items() if k not in ("schema_version", "n_candidates")} for s in shards
    ]
    meta = {
        "name": out.name,
        "kind": "frames",
        "survey": shards[0].meta["survey"],
        "band": shards[0].meta["band"],
        "channels": list(CHANNELS),
        "channel_units": {
            "sci": "adu (sky subtracted)",
            "ref": "adu (sky subtracted, science grid)",
            "diff": "adu",
        },
        "stamp_size": int(c["data"]["stamp_size"]),
        "fill_value": str(c["data"]["fill_value"]),
        "pixel_scale": float(np.mean([s.meta["pixel_scale"] for s in shards])),
        "pixel_scale_unit": "arcsec/pixel",
        "features": {**FEATURE_UNITS, **context_units},
        "pairs": pairs_meta,
        "skipped": skipped,
        "stage_seconds": {k: float(sum(s.meta["seconds"].get(k, 0.0) for s in shards)) for k in STAGES},
        "provenance": {
            "config": {k: c.get(k) for k in ("pipeline", "subtraction", "detection", "context", "data")},
            "git_sha": git_sha(),
            "hybrid_version": hybrid.__version__,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }
    total = sum(len(s) for s in shards)
    if total == 0:
        raise DatasetError(f"{out}: no candidates in any frame pair")
    parts = ((s.candidates, np.asarray(s.stamps)) for s in shards if len(s))
    return write_dataset_streaming(out, parts, meta, total=total)
