"""The adapter stage of the `train` task, configured by the Hydra group ``adapter/``.

``train`` calls three things from here, each a no-op without an ``adapter`` config:

* :func:`adapt_dataset` -- the training data: the built dataset, plus the datasets of
  ``adapter.extra_sources`` (leave-one-survey-out training), each harmonised when
  ``adapter.harmonize`` is set, merged into one dataset directory;
* :func:`adapter_module` -- the LightningModule class and its extra arguments:
  :class:`~hybrid.adapters.learned.DomainAdversarialModule` when ``adapter.dann`` is set, with the
  targets' unlabelled training splits;
* :func:`cross_survey_metrics` -- for every target survey, test-time adapter (``adapter.test_time``)
  and number of labelled target examples (``adapter.finetune.n``): the field's metrics on the
  target's test split, and the source test AUC the adapted model keeps. Keys are flat,
  ``target_<survey>_<adapter>_n<N>_<metric>`` (e.g. ``target_goto_adabn_n100_auc``).
"""

from __future__ import annotations

import logging
import re
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm.auto import tqdm

from hybrid.adapters.dataset import harmonize_dataset, merge_datasets, survey_dataset
from hybrid.adapters.learned import TEST_TIME_ADAPTERS, DomainAdversarialModule, finetune
from hybrid.config import group_options
from hybrid.evaluation.metrics import real_bogus_metrics
from hybrid.models import HybridModel
from hybrid.training.data import CandidateDataModule, SplitTensors
from hybrid.training.module import HybridModule
from hybrid.training.train import normalize_splits, score_split

log = logging.getLogger(__name__)

#: Metrics reported per target and variant.
TARGET_METRICS = ("auc", "fnr_at_1pct_fpr", "fpr_at_1pct_fnr", "ece")
#: The flat metrics.json key of a target metric (see the module docstring).
TARGET_KEY = re.compile(r"^target_(?P<target>[a-z0-9]+)_(?P<tta>[a-z0-9]+)_n(?P<n>\d+)_(?P<metric>.+)$")


def _adapter(cfg: DictConfig) -> DictConfig | None:
    return cfg.get("adapter")


def source_surveys(cfg: DictConfig) -> list[str]:
    a = _adapter(cfg)
    extra = list(a.get("extra_sources") or []) if a is not None else []
    return [str(cfg.survey.name), *[s for s in extra if s != cfg.survey.name]]


def target_surveys(cfg: DictConfig) -> list[str]:
    """``adapter.targets``: a list of survey names, or ``others`` for every survey not trained on."""
    a = _adapter(cfg)
    if a is None or not a.get("targets"):
        return []
    sources = source_surveys(cfg)
    if a.targets == "others":
        return [s for s in group_options("survey") if s not in sources]
    targets = [str(t) for t in a.targets]
    clash = [t for t in targets if t in sources]
    if clash:
        raise ValueError(f"adapter.targets {clash} are also training surveys {sources}")
    return targets


def _harmonized(cfg: DictConfig, path: Path) -> Path:
    a = _adapter(cfg)
    if a is None or not a.get("harmonize"):
        return path
    return harmonize_dataset(path, instantiate(a.harmonize))


def adapt_dataset(cfg: DictConfig, dataset: Path) -> Path:
    """The training dataset after the adapter stage (``dataset`` itself without an adapter)."""
    a = _adapter(cfg)
    if a is None:
        return dataset
    paths = [dataset, *[survey_dataset(cfg, s) for s in source_surveys(cfg)[1:]]]
    return merge_datasets([_harmonized(cfg, p) for p in paths])


class CrossSurvey:
    """The targets of a run and what the adapter config does with them (see the module docstring).

    Args:
        cfg: the run's config.
        dm: the source data module (its splits normalised by ``model.stamps``).
        model: the model being trained.
    """

    def __init__(self, cfg: DictConfig, dm: CandidateDataModule, model: HybridModel) -> None:
        self.cfg, self.dm, self.model = cfg, dm, model
        self.adapter = _adapter(cfg)
        self.targets = target_surveys(cfg)

    @cached_property
    def target_data(self) -> dict[str, CandidateDataModule]:
        """Each target survey's dataset (built and adapted like the source), normalised by the model."""
        out = {}
        for s in self.targets:
            path = _harmonized(self.cfg, survey_dataset(self.cfg, s))
            tdm = CandidateDataModule(
                path,
                features=self.dm.feature_names,
                channels=self.dm.channel_names,
                batch_size=self.dm.batch_size,
                seed=int(self.cfg.seed),
            )
            normalize_splits(tdm, self.model)
            out[s] = tdm
        return out

    @property
    def dann(self) -> bool:
        return bool(self.adapter is not None and self.adapter.get("dann") and self.targets)

    def dann_kwargs(self) -> dict:
        """The :class:`DomainAdversarialModule` arguments beyond the HybridModule's."""
        d = self.adapter.dann
        sources = source_surveys(self.cfg)
        table = self.dm.splits["train"].table
        domain = table["survey"].map({s: i for i, s in enumerate(sources)})
        if domain.isna().any():
            raise ValueError(
                f"training rows of surveys {sorted(set(table['survey']) - set(sources))} not in {sources}"
            )
        return {
            "targets": [self.target_data[s].splits["train"] for s in self.targets],
            "source_domain": torch.tensor(domain.to_numpy(np.int64)),
            "n_sources": len(sources),
            "dann_weight": float(d.get("weight", 1.0)),
            "hidden": int(d.get("hidden", 64)),
            "gamma": float(d.get("gamma", 10.0)),
        }

    def _score(self, model: HybridModel, split: SplitTensors) -> dict[str, float]:
        scored = score_split(model, split, rotation_average=bool(self.adapter.get("rotation_average", False)))
        m = real_bogus_metrics(scored["truth_real"].to_numpy(bool), scored["score"].to_numpy(float))
        return {k: m[k] for k in TARGET_METRICS}

    def evaluate(self, module: HybridModule) -> dict[str, float | int]:
        """Target metrics of every (target, test-time adapter, N) of the config; {} without targets."""
        if not self.targets:
            return {}
        a = self.adapter
        ft = a.get("finetune") or {}
        ns = [int(n) for n in ft.get("n", [0])]
        seed = int(self.cfg.seed)
        model = module.model.eval()
        source_test = self.dm.splits["test"]
        out: dict[str, float | int] = {}
        jobs = [(t, name, n) for t in self.targets for name in a.get("test_time", ["none"]) for n in ns]
        bar = tqdm(jobs, desc="cross-survey evaluation", unit="variant")
        for t, name, n in bar:
            tdm = self.target_data[t]
            train = tdm.splits["train"]
            adapted = TEST_TIME_ADAPTERS.get(name)()(model, train)
            if n > 0:
                adapted = finetune(
                    module,
                    train,
                    n,
                    model=adapted,
                    seed=seed,
                    epochs=int(ft.get("epochs", 10)),
                    min_steps=int(ft.get("min_steps", 20)),
                    lr=float(ft.get("lr", 3e-4)),
                    batch_size=int(ft.get("batch_size", 64)),
                )
            prefix = f"target_{t}_{name}_n{n}_"
            out.update({prefix + k: v for k, v in self._score(adapted, tdm.splits["test"]).items()})
            out[prefix + "source_auc"] = self._score(adapted, source_test)["auc"]
            out[prefix + "n_labelled"] = min(n, len(train))
        for t in self.targets:
            test = self.target_data[t].splits["test"]
            out[f"target_{t}_n_test"] = len(test)
            out[f"target_{t}_n_test_real"] = int(test.table["truth_real"].sum())
        model.eval()
        return out


def target_metrics(metrics: dict) -> dict[tuple[str, str, int], dict[str, float]]:
    """The cross-survey metrics of a run's ``metrics.json``, keyed by (target survey, test-time
    adapter, N labelled): the inverse of the flat keys :meth:`CrossSurvey.evaluate` writes."""
    found: dict[tuple[str, str, int], dict[str, float]] = {}
    for key, value in metrics.items():
        hit = TARGET_KEY.match(key)
        if hit:
            g = hit.groupdict()
            found.setdefault((g["target"], g["tta"], int(g["n"])), {})[g["metric"]] = value
    return found


def adapter_module(
    cfg: DictConfig, dm: CandidateDataModule, model: HybridModel, default: type[HybridModule]
) -> tuple[type[HybridModule], dict]:
    """The LightningModule class for the run and its extra arguments: ``default`` and none, or the
    domain-adversarial module and its targets when ``adapter.dann`` is set."""
    cs = CrossSurvey(cfg, dm, model)
    if not cs.dann:
        return default, {}
    if default is not HybridModule:
        raise ValueError(f"adapter.dann cannot be combined with {default.__name__}")
    return DomainAdversarialModule, cs.dann_kwargs()


def cross_survey_metrics(
    cfg: DictConfig, dm: CandidateDataModule, module: HybridModule
) -> dict[str, float | int]:
    """:meth:`CrossSurvey.evaluate` of the trained ``module`` ({} without ``adapter.targets``)."""
    return CrossSurvey(cfg, dm, module.model).evaluate(module)
