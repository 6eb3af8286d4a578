"""The datasets of the uncertainty, drift and active-learning studies (one place for all three).

Small ZTF-like fields (512x512 px) keep the studies inside a 2-core CPU budget. The base dataset
(seed 0) trains the models; the stream datasets are new fields: seed 1 and seed 2 without change,
and seed 2 again (the same fields and transients) with one thing changed:

* ``seeing``: science seeing 3.3" FWHM instead of 2.2" (the reference stack keeps its 1.87");
* ``naive``: the naive PSF-matching subtraction instead of ZOGY;
* ``atlas``: the ATLAS survey profile (1.86"/px, 3.6" seeing, shallower) instead of ZTF.

Datasets are built on first use and cached by content (``.cache/datasets``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import DictConfig

from hybrid.config import load_config
from hybrid.data.build import build_dataset
from hybrid.training.data import CandidateDataModule
from hybrid.training.train import make_datamodule

SMALL = ["sim.shape=[512,512]", "data.progress=false"]
BASE = [*SMALL, "data.name=base", "data.seed=0", "data.n_fields=80"]
_STREAM = [*SMALL, "data.name=stream", "data.n_fields=24"]
STREAMS = {
    "clean-1": [*_STREAM, "data.seed=1"],
    "clean-2": [*_STREAM, "data.seed=2"],
    "seeing": [*_STREAM, "data.seed=2", "survey.seeing_median=3.3", "survey.reference_seeing_factor=0.567"],
    "naive": [*_STREAM, "data.seed=2", "subtraction=naive"],
    "atlas": [*_STREAM, "data.seed=2", "survey=atlas"],
}
DESCRIPTIONS = {
    "clean-1": "new fields (seed 1), no change",
    "clean-2": "new fields (seed 2), no change",
    "seeing": 'seed-2 fields, science seeing 3.3" (was 2.2")',
    "naive": "seed-2 fields, naive subtraction (was ZOGY)",
    "atlas": "seed-2 fields, ATLAS survey (was ZTF)",
}
#: the model of the studies: the default fused model, few epochs, no progress bars
MODEL = ["trainer.max_epochs=8", "trainer.enable_progress_bar=false", "logger.wandb.enabled=false"]


def dataset(overrides: list[str]) -> Path:
    """The dataset directory of ``overrides`` (built if missing)."""
    return build_dataset(load_config(overrides))


def study_parser(doc: str | None) -> argparse.ArgumentParser:
    """The command line every study shares: ``--out`` (reports), ``--threads`` and Hydra overrides."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("reports"), help="reports directory")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the base data and model")
    return parser


def base_data(overrides: list[str], extra: list[str] | None = None) -> tuple[DictConfig, CandidateDataModule]:
    """The config (BASE + MODEL + ``extra`` + ``overrides``) and the base dataset's splits."""
    cfg = load_config([*BASE, *MODEL, *(extra or []), *overrides])
    return cfg, make_datamodule(cfg, dataset([*BASE, *overrides]))
