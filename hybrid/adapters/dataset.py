"""Adapter stage on dataset directories: harmonised and merged datasets, and other surveys' datasets.

``dataset dir -> adapters -> HybridModel``: every function here reads dataset directories and writes
new ones next to them (atomically, cached by a content hash), so training and evaluation read an
adapted dataset exactly as they read a built one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from hybrid.adapters.harmonize import StampHarmonizer, harmonize_features
from hybrid.config import CONF_DIR, group_options
from hybrid.data.build import build_dataset
from hybrid.data.dataset import (
    CANDIDATES,
    META,
    DatasetError,
    is_complete,
    read_dataset,
    write_dataset_streaming,
)

log = logging.getLogger(__name__)

#: Bump when the harmonised output changes for an unchanged harmonizer config.
ADAPTER_VERSION = 1

#: Per channel, the candidate-table columns whose PSF FWHM (arcsec) applies; the difference image
#: carries the broader of the two PSFs (the one matched to in Alard-Lupton and naive subtraction).
CHANNEL_FWHM = {"sci": ("fwhm_sci",), "ref": ("ref_fwhm_arcsec",), "diff": ("fwhm_sci", "ref_fwhm_arcsec")}


def _digest(content: object) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:10]


def channel_fwhm(
    table: pd.DataFrame, channels: list[str], *, where: str, fallback: dict[str, float] | None = None
) -> np.ndarray:
    """(N, C) PSF FWHM of each channel of each candidate (arcsec), from the candidate table.

    ``fallback`` (channel -> arcsec) fills columns that are missing or NaN, for inputs that do not
    record the seeing (real alerts: the survey's median seeing); without it they are an error.
    """
    fallback = fallback or {}
    cols = []
    for ch in channels:
        if ch not in CHANNEL_FWHM:
            raise DatasetError(f"{where}: no PSF FWHM is known for channel {ch!r}")
        names = [n for n in CHANNEL_FWHM[ch] if n in table.columns]
        value = np.max(table[names].to_numpy(float), axis=1) if names else np.full(len(table), np.nan)
        if ch in fallback:
            value = np.where(np.isfinite(value), value, fallback[ch])
        elif len(names) < len(CHANNEL_FWHM[ch]) or not np.isfinite(value).all():
            missing = [n for n in CHANNEL_FWHM[ch] if n not in names] or list(CHANNEL_FWHM[ch])
            raise DatasetError(
                f"{where}: column {missing[0]!r} (PSF FWHM, arcsec) is needed to homogenise PSFs"
            )
        cols.append(value)
    return np.stack(cols, axis=1)


def harmonize_dataset(
    src: str | Path,
    harmonizer: StampHarmonizer,
    *,
    pixel_scale: float | None = None,
    fallback_fwhm: dict[str, float] | None = None,
    chunk: int = 1024,
) -> Path:
    """The dataset ``src`` in the harmonizer's common frame, written beside it (reused when present).

    Stamps are resampled, PSF-homogenised and noise-normalised (:class:`StampHarmonizer`); features go
    to common units (:func:`harmonize_features`); meta.json records the new pixel scale, stamp size,
    channel and feature units and the harmonizer. A boolean column ``psf_homogenized`` says whether
    the science stamp reached the target FWHM.

    ``pixel_scale`` (arcsec / px) is used when meta.json has none (alert datasets), and
    ``fallback_fwhm`` (channel -> arcsec) where the table records no seeing (see :func:`channel_fwhm`).
    """
    src = Path(src)
    ds = read_dataset(src)
    meta = ds.meta
    key = _digest(
        {
            "src": meta.get("name", src.name),
            "n": len(ds),
            "h": harmonizer.to_dict(),
            "v": ADAPTER_VERSION,
            "fallback": [pixel_scale, fallback_fwhm],
        }
    )
    out = src.with_name(f"{src.name}.h-{key}")
    if is_complete(out):
        log.info("harmonised dataset %s exists; reusing it", out)
        return out
    where = str(src / CANDIDATES)
    scale = meta.get("pixel_scale") or pixel_scale
    if not isinstance(scale, int | float) or scale <= 0:
        raise DatasetError(f"{src / META}: field 'pixel_scale' must be a positive number, got {scale!r}")
    beta = (meta.get("provenance", {}).get("config", {}).get("survey") or {}).get("psf_beta")
    table = ds.candidates
    channels = list(meta["channels"])
    fwhm = (
        channel_fwhm(table, channels, where=where, fallback=fallback_fwhm)
        if harmonizer.fwhm is not None
        else None
    )
    features, units = harmonize_features(table, dict(meta["features"]), pixel_scale=float(scale), where=where)
    reached = np.ones(len(table), bool)

    def parts():
        for i in tqdm(range(0, len(ds), chunk), desc=f"harmonise {src.name}", unit="chunk"):
            sl = slice(i, min(i + chunk, len(ds)))
            f = fwhm[sl] if fwhm is not None else np.ones((sl.stop - sl.start, len(meta["channels"])))
            stamps, ok = harmonizer(np.asarray(ds.stamps[sl]), f, pixel_scale=float(scale), beta=beta)
            reached[sl] = ok[:, 0]
            yield features.iloc[sl].assign(psf_homogenized=ok[:, 0]), stamps

    unit = "sigma (robust noise)" if harmonizer.noise else "flux per output pixel"
    new_meta = {
        **{k: v for k, v in meta.items() if k not in ("schema_version", "n_candidates")},
        "name": out.name,
        "pixel_scale": harmonizer.pixel_scale,
        "stamp_size": harmonizer.size,
        "channel_units": {c: f"{unit}, harmonised" for c in meta["channels"]},
        "features": units,
        "adapter": {
            "harmonize": harmonizer.to_dict(),
            "source": meta.get("name", src.name),
            "source_pixel_scale": scale,
            "source_features": meta["features"],
            "psf_beta": beta if beta is not None else harmonizer.beta,
        },
    }
    write_dataset_streaming(out, parts(), new_meta, total=len(ds))
    log.info("harmonised %s -> %s (%.1f%% of stamps reached the target FWHM)", src, out, 100 * reached.mean())
    return out


def merge_datasets(paths: list[str | Path], *, out_dir: str | Path | None = None) -> Path:
    """One dataset with the rows of several (for instance one per survey), splits kept as they were.

    The datasets must share channels, stamp shape and feature names. Object ids are prefixed with the
    survey so that objects of different surveys never share an id. ``pixel_scale`` is kept when all
    agree and is otherwise None, with ``pixel_scales`` per survey.
    """
    paths = [Path(p) for p in paths]
    if len(paths) == 1:
        return paths[0]
    sets = [read_dataset(p) for p in paths]
    first = sets[0]
    for ds in sets[1:]:
        for field in ("channels", "features"):
            if list(ds.meta[field]) != list(first.meta[field]):
                raise DatasetError(f"{ds.path / META}: field {field!r} differs from {first.path / META}")
        if ds.stamps.shape[1:] != first.stamps.shape[1:]:
            raise DatasetError(
                f"{ds.path}: stamps {ds.stamps.shape[1:]} differ from {first.path}'s {first.stamps.shape[1:]}"
            )
    names = [ds.meta.get("name", ds.path.name) for ds in sets]
    out = Path(out_dir or paths[0].parent) / f"merged-{_digest(names)}"
    if is_complete(out):
        return out
    surveys = [str(ds.meta.get("survey")) for ds in sets]
    scales = {s: ds.meta.get("pixel_scale") for s, ds in zip(surveys, sets, strict=True)}

    def parts():
        for s, ds in zip(surveys, sets, strict=True):
            t = ds.candidates
            yield t.assign(object_id=s + ":" + t["object_id"].astype(str)), np.asarray(ds.stamps)

    counts = pd.concat([ds.candidates[["label_real", "label_type"]] for ds in sets])
    meta = {
        **{k: v for k, v in first.meta.items() if k not in ("schema_version", "n_candidates", "provenance")},
        "name": out.name,
        "survey": "+".join(surveys),
        "surveys": surveys,
        "pixel_scale": next(iter(scales.values())) if len(set(scales.values())) == 1 else None,
        "pixel_scales": scales,
        "merged_from": names,
        "counts": {
            "label_type": counts["label_type"].value_counts().to_dict(),
            "real": int(counts["label_real"].sum()),
        },
        "provenance": {n: ds.meta.get("provenance") for n, ds in zip(names, sets, strict=True)},
    }
    return write_dataset_streaming(out, parts(), meta, total=sum(len(ds) for ds in sets))


def survey_config(cfg: DictConfig, survey: str) -> DictConfig:
    """The config with its survey profile replaced by ``conf/survey/<survey>.yaml`` (all else kept)."""
    path = CONF_DIR / "survey" / f"{survey}.yaml"
    if not path.is_file():
        known = ", ".join(group_options("survey"))
        raise KeyError(f"unknown survey {survey!r} ({path} not found); known: {known}")
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    out.survey = OmegaConf.load(path)
    return out


def survey_dataset(cfg: DictConfig, survey: str) -> Path:
    """Build (or reuse) the dataset of ``cfg`` for another survey."""
    return build_dataset(survey_config(cfg, survey))
