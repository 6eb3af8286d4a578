"""The load-time label step of a training run: inject noise, then clean; every row recorded.

:class:`LabelPipeline` is what :class:`hybrid.training.data.CandidateDataModule` calls on the candidate
table (``relabel=``) before it cuts the splits. It writes ``noise_labels.parquet`` to the run
directory -- per train/val row: the label before injection, whether it was flipped, the label
trained on, whether cleaning flagged it and what it did -- and adds flat metrics to metrics.json:
the realised noise rate, and the precision and recall of the flagged labels against the injected
flips and against all wrong labels (labels that differ from the truth, which also counts the
contamination of algorithmic labels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from hybrid.io import atomic_write
from hybrid.noise.cleaning import Cleaner, apply_flags
from hybrid.noise.injection import CLEAN_REAL, CLEAN_TYPE, FLIPPED, LabelNoise

RECORD_FILE = "noise_labels.parquet"


def precision_recall(flagged: np.ndarray, wrong: np.ndarray) -> tuple[float, float]:
    """Precision and recall of ``flagged`` as a detector of ``wrong`` (NaN when undefined)."""
    flagged, wrong = np.asarray(flagged, bool), np.asarray(wrong, bool)
    hits = float((flagged & wrong).sum())
    precision = hits / flagged.sum() if flagged.any() else float("nan")
    recall = hits / wrong.sum() if wrong.any() else float("nan")
    return precision, recall


class LabelPipeline:
    """Noise injection then cleaning of the train and validation labels (either may be None).

    Args:
        noise: a :class:`~hybrid.noise.injection.LabelNoise`, or None for the labels as built.
        cleaner: a :class:`~hybrid.noise.cleaning.Cleaner`, or None.
        seed: the run's seed (keys the flips and the cleaner's folds).
        splits: the splits cleaning looks at.
    """

    def __init__(
        self,
        noise: LabelNoise | None,
        cleaner: Cleaner | None,
        *,
        seed: int,
        splits: tuple[str, ...] = ("train", "val"),
    ) -> None:
        self.noise, self.cleaner, self.seed, self.splits = noise, cleaner, int(seed), splits
        self.records: pd.DataFrame | None = None

    def __call__(self, table: pd.DataFrame, features: list[str]) -> pd.DataFrame:
        """The table with the labels to train on (flagged rows dropped or relabelled)."""
        if self.noise is not None:
            table = self.noise(table, seed=self.seed)
        else:
            table = table.assign(
                **{
                    CLEAN_REAL: table["label_real"].to_numpy(bool),
                    CLEAN_TYPE: table["label_type"],
                    FLIPPED: False,
                }
            )
        considered = table["split"].isin(self.splits).to_numpy()
        records = table.loc[
            considered,
            ["split", "object_id", "truth_real", CLEAN_REAL, CLEAN_TYPE, FLIPPED, "label_real", "label_type"],
        ].rename(columns={"label_real": "label_real_noisy", "label_type": "label_type_noisy"})
        records["flagged"], records["action"] = False, ""
        if self.cleaner is not None:
            flags = self.cleaner.flag(table, considered, seed=self.seed, features=features)
            records["flagged"] = flags.flagged[considered]
            records["action"] = flags.action[considered]
            table = apply_flags(table, flags)
        kept = table.loc[table.index.intersection(records.index)]
        records["label_real"] = kept["label_real"].reindex(records.index)
        records["label_type"] = kept["label_type"].reindex(records.index)
        records.index.name = "row"
        self.records = records
        return table

    def metrics(self) -> dict[str, float | int]:
        """Flat metrics of the step (for metrics.json); empty before the pipeline has run."""
        r = self.records
        if r is None:
            return {}
        train = r[r["split"] == "train"]
        flipped = r[FLIPPED].to_numpy(bool)
        wrong = r["label_real_noisy"].to_numpy(bool) != r["truth_real"].to_numpy(bool)
        out: dict[str, float | int] = {
            "noise_rate_realised": float(train[FLIPPED].mean()) if len(train) else float("nan"),
            "noise_flipped": int(flipped.sum()),
            "label_error_rate": float(wrong.mean()) if len(r) else float("nan"),
        }
        if self.cleaner is not None:
            flagged = r["flagged"].to_numpy(bool)
            p, rc = precision_recall(flagged, flipped)
            pw, rw = precision_recall(flagged, wrong)
            out.update(
                {
                    "flagged": int(flagged.sum()),
                    "dropped": int((r["action"] == "drop").sum()),
                    "relabelled": int((r["action"] == "relabel").sum()),
                    "flag_precision": p,
                    "flag_recall": rc,
                    "flag_precision_wrong": pw,
                    "flag_recall_wrong": rw,
                }
            )
        return out

    def write(self, run_dir: str | Path) -> Path | None:
        """Write the per-row record to ``run_dir/noise_labels.parquet`` (atomically)."""
        if self.records is None:
            return None
        path = Path(run_dir) / RECORD_FILE
        return atomic_write(path, lambda tmp: self.records.reset_index().to_parquet(tmp, index=False))


def label_pipeline(cfg: DictConfig) -> LabelPipeline | None:
    """The config's label step (``noise`` and ``cleaning`` groups), or None when both are off."""
    from hydra.utils import instantiate

    noise = instantiate(cfg.noise) if cfg.get("noise") else None
    cleaner = instantiate(cfg.cleaning) if cfg.get("cleaning") else None
    if noise is None and cleaner is None:
        return None
    return LabelPipeline(noise, cleaner, seed=int(cfg.seed))
