"""Deep ensembles (Lakshminarayanan, Pritzel & Blundell 2017, NeurIPS): M members of the configured
HybridModel, each from its own seed (initialisation, dropout masks, batch order, augmentation), trained
on the same data with :func:`hybrid.training.train.fit`."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from hybrid.models import HybridModel
from hybrid.rundir import RunDir
from hybrid.training.data import CandidateDataModule
from hybrid.training.train import build_model, fit, normalize_splits

log = logging.getLogger(__name__)


def member_config(cfg: DictConfig, index: int) -> DictConfig:
    """The config of member ``index``: ``seed + index``, everything else unchanged."""
    out = cfg.copy()
    out.seed = int(cfg.seed) + index
    return out


def train_ensemble(
    cfg: DictConfig,
    dm: CandidateDataModule,
    n_members: int,
    run_dir: str | Path,
    *,
    normalize: bool = True,
    **trainer_kwargs: object,
) -> list[HybridModel]:
    """Train ``n_members`` models on ``dm``; member i checkpoints under ``run_dir/member-i``.

    A finished member's directory holds ``checkpoints/best.ckpt``, ``metrics.json`` (the dataset,
    epochs and seed) and ``config.yaml`` (its resolved config, written last), so it is a run directory that
    :class:`hybrid.rundir.RunDir` (``hybrid export``, ``hybrid drift --model``) can load; a
    repeated call loads finished members instead of training them again, and resumes unfinished ones.

    Args:
        cfg: the run config (model, train, trainer groups).
        dm: the data; its stamps are normalised here with the members' (shared) stamp normaliser
            unless ``normalize`` is False (they already are).
        n_members: M.
        run_dir: where the members' checkpoints go.
        trainer_kwargs: overrides of the ``trainer`` config.
    """
    if n_members < 1:
        raise ValueError(f"n_members must be >= 1, got {n_members}")
    members = []
    for i in range(n_members):
        mcfg = member_config(cfg, i)
        L.seed_everything(int(mcfg.seed), workers=True, verbose=False)
        model = build_model(mcfg, dm)
        if i == 0 and normalize:
            normalize_splits(dm, model)
        member = RunDir(Path(run_dir) / f"member-{i}")
        if member.config_path.exists():  # config.yaml, written last, marks a finished member
            model, _, _ = member.load_model()
            log.info("ensemble member %d/%d loaded from %s", i + 1, n_members, member.path)
        else:
            _, epochs = fit(mcfg, dm, model, member.path, **trainer_kwargs)
            # the member's seed is not its data's: record the dataset for the loader
            member.write_metrics(
                {"dataset": str(dm.root), "epochs": epochs, "member": i, "seed": int(mcfg.seed)}
            )
            member.write_config(mcfg)
            log.info("ensemble member %d/%d trained (%d epochs)", i + 1, n_members, epochs)
        members.append(model.eval())
    return members
