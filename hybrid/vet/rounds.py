"""One active-learning round of the vetting page: retrain on the human labels, rescore, reorder.

The round trains the configured model on the pool's dataset with the ``human`` label source
(:class:`hybrid.curation.HumanLabels`: voted training rows take the volunteers' consensus, unvoted
ones are dropped; validation rows keep the dataset's labels where nobody voted), scores every
candidate of the pool (with ``mc_samples`` MC-dropout passes for the BALD queue) and hands the new
scores to the session, whose queue is then reordered. Each round is a run directory
``<work dir>/round-NNN/`` with ``config.yaml``, ``checkpoints/``, ``metrics.json`` (the test split,
against the truth when the dataset has it) and ``scores.parquet``, written last and atomically: it
marks a finished round, and a restarted page takes the newest one's scores.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import lightning as L
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from hybrid.curation.human import HumanLabels, candidate_keys
from hybrid.data.dataset import read_dataset
from hybrid.evaluation import evaluate
from hybrid.models import HybridModel
from hybrid.training.data import SplitTensors
from hybrid.training.train import build_model, fit, make_datamodule, normalize_splits, score_split
from hybrid.uncertainty.sampling import MCDropout, sample_split
from hybrid.vet.session import VetSession, round_dirs

log = logging.getLogger(__name__)


def score_dataset(
    model: HybridModel,
    dataset: Path,
    feature_names: list[str],
    channels: list[str],
    *,
    mc_samples: int = 0,
    chunk: int = 2048,
    seed: int = 0,
) -> pd.DataFrame:
    """``score``, ``p_<type>`` (and with ``mc_samples``, ``entropy`` and ``mutual_info`` of MC dropout)
    of every candidate of ``dataset``, indexed by candidate key; read ``chunk`` rows at a time."""
    ds = read_dataset(dataset)
    index = [ds.meta["channels"].index(c) for c in channels]
    parts = []
    for start in range(0, len(ds.candidates), chunk):
        rows = ds.candidates.iloc[start : start + chunk]
        split = SplitTensors(ds.stamps, rows, feature_names, index)
        if model.image_encoder is not None:
            split.normalize_stamps(model.stamps)
        scored = score_split(model, split, rotation_average=False)
        cols = ["score", *[c for c in scored if c.startswith("p_")]]
        part = scored[cols].set_index(pd.Index(candidate_keys(rows), name="key"))
        if mc_samples:
            pred = sample_split(MCDropout(model, mc_samples, seed=seed), split).real_bogus()
            part["entropy"], part["mutual_info"] = pred.entropy, pred.mutual_info
        parts.append(part)
    return pd.concat(parts)


def active_round(session: VetSession, cfg: DictConfig, work_dir: str | Path, *, mc_samples: int = 10) -> Path:
    """Retrain on the session's votes, rescore its pool and reorder its queue; returns the round's
    directory. ``cfg`` is the training config (model, trainer, train, seed)."""
    pool = session.pool
    if pool.dataset is None:
        raise ValueError(
            f"{pool.name}: an active-learning round trains on a dataset directory (`hybrid ingest` first)"
        )
    run_dir = Path(work_dir) / f"round-{len(round_dirs(work_dir)) + 1:03d}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    human = HumanLabels(session.store.path, dataset=pool.name)
    dm = make_datamodule(cfg, pool.dataset, relabel=human)
    model = build_model(cfg, dm)
    normalize_splits(dm, model)
    _, epochs = fit(cfg, dm, model, run_dir, enable_progress_bar=False, enable_model_summary=False)
    scored = score_split(model, dm.splits["test"], rotation_average=False)
    metrics = evaluate(scored, run_dir, threshold=session.threshold) if "truth_real" in scored else {}
    metrics.update(human.metrics(), epochs=epochs, n_train=len(dm.splits["train"]))
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    stochastic = mc_samples if session.queue == "bald" else 0
    scores = score_dataset(model, pool.dataset, dm.feature_names, dm.channel_names, mc_samples=stochastic)
    tmp = run_dir / ".scores.parquet.tmp"
    scores.to_parquet(tmp)
    os.replace(tmp, run_dir / "scores.parquet")
    session.refresh(pool.with_scores(scores))
    log.info("round %s: %d human labels, test AUC %s", run_dir.name, metrics["n_train"], metrics.get("auc"))
    return run_dir


def latest_scores(work_dir: str | Path) -> pd.DataFrame | None:
    """The scores of the newest finished round of ``work_dir`` (None before the first)."""
    done = round_dirs(work_dir)
    return pd.read_parquet(done[-1] / "scores.parquet") if done else None


__all__ = ["active_round", "latest_scores", "score_dataset"]
