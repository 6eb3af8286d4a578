"""Build a candidate dataset from the simulated survey: simulate -> subtract -> detect -> cut -> label.

``process_field(config, field_id)`` is the unit of work: a pure function of the resolved config and
the field id, returning that field's labelled candidates and stamps. ``build_dataset(config)`` runs
it over all fields in resumable shards and merges the shards into one dataset directory.

Parallelism is over shards of fields in local processes (``data.workers``). Because the per-field
work is pure, the same shards can run on any engine; with Dask distributed, for instance::

    from dask.distributed import Client
    client = Client("scheduler-address:8786")
    plan = BuildPlan.from_config(cfg)
    futures = client.map(plan.run_shard, plan.pending_shards())
    client.gather(futures)          # each shard is written atomically where all workers can see it
    plan.merge()                    # then merge once, on any machine

Resuming: shards are written atomically into ``<dataset>.shards/``; a build that is killed and
started again skips the finished shards, and the merged result equals an uninterrupted build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from tqdm.auto import tqdm

import hybrid
from hybrid.curation import EpochContext
from hybrid.curation.truth import match_truth
from hybrid.data.dataset import (
    DatasetError,
    is_complete,
    read_dataset,
    write_dataset,
    write_dataset_streaming,
)
from hybrid.data.frames import StageTimer, pair_candidates, survey_stamps, with_context
from hybrid.data.splits import assign_splits
from hybrid.detection import FEATURE_UNITS
from hybrid.detection.candidates import CHANNELS
from hybrid.sim.field import simulate_field
from hybrid.sim.survey import CutoutConvention
from hybrid.taxonomy import BOGUS_KINDS, LABEL_SOURCES, TRANSIENT_TYPES

log = logging.getLogger(__name__)

#: Config groups that determine the dataset's content (and so its cache key).
CONTENT_KEYS = ("survey", "sim", "subtraction", "detection", "curation", "context")
#: data.* keys that do not change the content.
NON_CONTENT_DATA_KEYS = ("workers", "fields_per_shard", "keep_shards", "progress")
STAGES = ("simulate", "subtract", "detect", "cut", "label", "context")


@dataclass
class FieldProducts:
    candidates: pd.DataFrame
    stamps: np.ndarray  # (N, C, S, S) float32
    seconds: dict[str, float]


def as_container(cfg: DictConfig | dict) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def process_field(cfg: DictConfig | dict, field_id: int) -> FieldProducts:
    """Simulate, subtract, detect, cut, measure and label every epoch of one field."""
    cfg = OmegaConf.create(as_container(cfg))
    seed = data_seed(cfg)
    timer = StageTimer()
    survey = instantiate(cfg.survey)
    sim = instantiate(cfg.sim)
    subtractor = instantiate(cfg.subtraction)
    detector = instantiate(cfg.detection)
    curation = instantiate(cfg.curation)
    context = instantiate(cfg.context) if cfg.get("context") else None
    size = int(cfg.data.stamp_size)
    fill = float(cfg.data.fill_value)
    with timer("simulate"):
        fld = simulate_field(survey, sim, seed, field_id)
    with timer("context"):
        kb = context.knowledge_base(fld.catalog) if context is not None else None
    tables, stamps = [], []
    for e, epoch in enumerate(fld.epochs):
        pair = pair_candidates(
            epoch.science,
            fld.reference,
            subtractor=subtractor,
            detector=detector,
            stamp_size=size,
            fill_value=fill,
            pixel_scale=survey.pixel_scale,
            catalog=fld.catalog,
            psf_fit_errors=survey.psf_fit_errors,
            timer=timer,
        )
        frame, table, cut = pair.frame, pair.candidates, pair.stamps
        issued = survey.issued(table)  # the survey's alert stream: only what it would send
        table, cut = table[issued].reset_index(drop=True), cut.take(np.flatnonzero(issued))
        with timer("label"):
            fwhm_px = epoch.conditions["fwhm_arcsec"] / survey.pixel_scale
            table = pd.concat([table, match_truth(table, fld, epoch, fwhm_px=fwhm_px)], axis=1)
            ctx = EpochContext(
                field=fld,
                epoch_index=e,
                epoch=epoch,
                frame=frame,
                candidates=table,
                stamps=cut,
                rng=np.random.default_rng([seed, field_id, e, 1]),
                stamp_size=size,
            )
            rows, kept = curation(ctx)
            rows = rows.assign(
                epoch=e,
                mjd=epoch.science.mjd,
                **{k: v for k, v in epoch.conditions.items() if k != "fwhm_arcsec"},
            )
        # after curation, so that injected candidates get their context too
        rows = with_context(rows, context, kb, timer)
        tables.append(rows)
        with timer("cut"):
            stamps.append(survey_stamps(kept, rows, epoch.science, frame, survey.cutouts, fill_value=fill))
    with timer("label"):
        table = pd.concat(tables, ignore_index=True)
        table.insert(0, "field", field_id)
        table.insert(1, "survey", survey.name)
        table.insert(2, "band", survey.band)
        table["object_id"] = object_ids(table, field_id)
    images = np.concatenate(stamps) if stamps else np.zeros((0, len(CHANNELS), size, size), np.float32)
    return FieldProducts(table, images, dict(timer.seconds))


def object_ids(table: pd.DataFrame, field_id: int, radius_px: float = 2.0) -> np.ndarray:
    """One id per astrophysical object or persistent artifact of a field.

    Real detections take their transient's id; injected rows are unique; bogus detections at the
    same place in several epochs (a hot pixel, a bright star's residual) share one id.
    """
    ids = np.empty(len(table), dtype=object)
    tid = table["transient_id"].to_numpy()
    real = table["truth_real"].to_numpy(bool) & (tid >= 0)
    ids[real] = [f"{field_id}-t{t}" for t in tid[real]]
    injected = (table["label_source"] == "injected").to_numpy()
    ids[injected] = [f"{field_id}-i{i}" for i in np.flatnonzero(injected)]
    rest = np.flatnonzero(~real & ~injected)
    if rest.size:
        xy = table[["x", "y"]].to_numpy()[rest]
        pairs = cKDTree(xy).query_pairs(radius_px, output_type="ndarray")
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(rest.size, rest.size))
        _, comp = connected_components(graph, directed=False)
        ids[rest] = [f"{field_id}-b{c}" for c in comp]
    return ids


#: Bump when the pipeline's output changes for an unchanged config, so cached datasets are rebuilt.
PIPELINE_VERSION = 3


def data_seed(cfg: DictConfig | dict) -> int:
    """The seed of the survey's realisation: ``data.seed`` (configs written before it existed used the
    top-level ``seed``, which is the training's seed now)."""
    c = as_container(cfg)
    return int(c.get("data", {}).get("seed", c.get("seed", 0)))


def config_hash(cfg: DictConfig | dict) -> str:
    c = as_container(cfg)
    content = {k: c.get(k) for k in CONTENT_KEYS}
    if isinstance(content.get("curation"), dict):  # human labels apply at load time: the same data
        content["curation"] = {k: v for k, v in content["curation"].items() if k != "human"}
    content["seed"] = data_seed(c)  # the survey's realisation (hashed under its old name)
    content["pipeline_version"] = PIPELINE_VERSION
    content["data"] = {
        k: v for k, v in c.get("data", {}).items() if k not in (*NON_CONTENT_DATA_KEYS, "seed")
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:10]


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class BuildPlan:
    """Where a dataset goes and which shards of fields make it."""

    cfg: dict
    path: Path

    @classmethod
    def from_config(cls, cfg: DictConfig | dict) -> BuildPlan:
        c = as_container(cfg)
        name = f"{c['survey']['name']}-{c['data']['name']}-{config_hash(c)}"
        return cls(c, Path(c["paths"]["cache_dir"]) / "datasets" / name)

    @property
    def shard_dir(self) -> Path:
        return self.path.with_name(self.path.name + ".shards")

    def shards(self) -> list[list[int]]:
        n, per = int(self.cfg["data"]["n_fields"]), int(self.cfg["data"]["fields_per_shard"])
        return [list(range(i, min(i + per, n))) for i in range(0, n, per)]

    def shard_path(self, fields: list[int]) -> Path:
        return self.shard_dir / f"fields-{fields[0]:06d}-{fields[-1]:06d}"

    def pending_shards(self) -> list[list[int]]:
        return [s for s in self.shards() if not is_complete(self.shard_path(s))]

    def run_shard(self, fields: list[int]) -> dict[str, float]:
        """Process the fields of one shard and write it atomically; returns stage seconds."""
        products = [process_field(self.cfg, f) for f in fields]
        table = pd.concat([p.candidates for p in products], ignore_index=True)
        stamps = np.concatenate([p.stamps for p in products])
        seconds: dict[str, float] = defaultdict(float)
        for p in products:
            for k, v in p.seconds.items():
                seconds[k] += v
        write_dataset(self.shard_path(fields), table, stamps, {"fields": fields, "seconds": dict(seconds)})
        return dict(seconds)

    def merge(self) -> Path:
        """Merge all shards (in field order) into the dataset directory, atomically."""
        paths = [self.shard_path(s) for s in self.shards()]
        missing = [p for p in paths if not is_complete(p)]
        if missing:
            raise DatasetError(f"{missing[0]}: shard not built; run the build again to finish it")
        shards = [read_dataset(p) for p in paths]
        total = sum(len(s) for s in shards)
        c = self.cfg
        context_units = instantiate(c["context"]).feature_units() if c.get("context") else {}
        parts = ((self._finish(s.candidates), np.asarray(s.stamps)) for s in shards)
        table_for_meta = pd.concat(
            [s.candidates[["label_real", "label_type", "label_source"]] for s in shards]
        )
        meta = {
            "name": self.path.name,
            "config_hash": config_hash(c),
            "survey": c["survey"]["name"],
            "band": c["survey"]["band"],
            "pixel_scale": c["survey"]["pixel_scale"],
            "pixel_scale_unit": "arcsec/pixel",
            "channels": list(CHANNELS),
            "channel_units": channel_units(instantiate(c["survey"]).cutouts),
            "stamp_size": int(c["data"]["stamp_size"]),
            "fill_value": str(c["data"]["fill_value"]),
            "features": {**FEATURE_UNITS, **context_units},
            "transient_types": list(TRANSIENT_TYPES),
            "bogus_kinds": list(BOGUS_KINDS),
            "label_sources": list(LABEL_SOURCES),
            "counts": {
                "label_type": table_for_meta["label_type"].value_counts().to_dict(),
                "label_source": table_for_meta["label_source"].value_counts().to_dict(),
                "real": int(table_for_meta["label_real"].sum()),
            },
            "stage_seconds": _sum_seconds(s.meta.get("seconds", {}) for s in shards),
            "provenance": {
                "config": c,
                "git_sha": git_sha(),
                "hybrid_version": hybrid.__version__,
                "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        }
        write_dataset_streaming(self.path, parts, meta, total=total)
        return self.path

    def _finish(self, table: pd.DataFrame) -> pd.DataFrame:
        fractions = tuple(self.cfg["data"]["split_fractions"])
        return table.assign(
            split=assign_splits(table["object_id"].to_numpy(), fractions, data_seed(self.cfg))
        )


def channel_units(convention: CutoutConvention) -> dict[str, str]:
    """What each stored stamp plane holds under the survey's cutout convention."""
    sky = "sky included" if convention.sky else "sky subtracted"
    ref = "adu, scaled to the science zero point" if convention.template_matched else "adu"
    ref_sky = sky if convention.template_matched else "sky subtracted"
    diff = (
        "template - science for negative detections" if convention.negative_flipped else "science - template"
    )
    return {"sci": f"adu ({sky})", "ref": f"{ref} ({ref_sky})", "diff": f"adu ({diff})"}


def _sum_seconds(items: Any) -> dict[str, float]:
    total: dict[str, float] = defaultdict(float)
    for d in items:
        for k, v in d.items():
            total[k] += v
    return dict(total)


def build_dataset(cfg: DictConfig | dict) -> Path:
    """Build (or reuse) the dataset the config describes; returns its directory.

    An existing complete dataset with the same content hash is reused. Otherwise the pending shards
    are processed (in ``data.workers`` processes, with a progress bar) and merged.
    """
    plan = BuildPlan.from_config(cfg)
    if is_complete(plan.path):
        log.info("dataset %s exists; reusing it", plan.path)
        return plan.path
    plan.path.parent.mkdir(parents=True, exist_ok=True)
    # the jobs of a parallel sweep that need the same dataset build it once; the others wait for it
    with FileLock(f"{plan.path}.lock"):
        if is_complete(plan.path):
            log.info("dataset %s was built by another process; reusing it", plan.path)
            return plan.path
        _build(plan)
    return plan.path


def _build(plan: BuildPlan) -> None:
    """Process the pending shards of ``plan`` (in ``data.workers`` processes) and merge them."""
    pending = plan.pending_shards()
    n_shards = len(plan.shards())
    log.info("building %s: %d of %d shards to do", plan.path, len(pending), n_shards)
    workers = int(plan.cfg["data"]["workers"])
    bar = tqdm(
        total=sum(len(s) for s in plan.shards()),
        initial=sum(len(s) for s in plan.shards()) - sum(len(s) for s in pending),
        unit="field",
        desc=f"build {plan.path.name}",
        disable=not plan.cfg["data"].get("progress", True),
    )
    with bar:
        if workers <= 1:
            for shard in pending:
                plan.run_shard(shard)
                bar.update(len(shard))
        else:
            with ProcessPoolExecutor(workers) as pool:
                futures = {pool.submit(plan.run_shard, s): s for s in pending}
                for fut in as_completed(futures):
                    fut.result()
                    bar.update(len(futures[fut]))
    path = plan.merge()
    if not plan.cfg["data"].get("keep_shards", False):
        shutil.rmtree(plan.shard_dir, ignore_errors=True)
    log.info("dataset written to %s", path)
