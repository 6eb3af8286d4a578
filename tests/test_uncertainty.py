"""hybrid.uncertainty: predictive decomposition, MC dropout and ensembles, temperature scaling,
uncertainty metrics, the export wrapper, and ensemble training on a tiny dataset."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from hybrid.cli import main
from hybrid.data.readers import read_alerts
from hybrid.evaluation.metrics import expected_calibration_error, negative_log_likelihood
from hybrid.export import ATOL, RTOL, load_bundle, load_run_model
from hybrid.models import HybridModel
from hybrid.models.encoders import MLPEncoder, VGGEncoder
from hybrid.models.fusion import GatedFusion
from hybrid.serving import Predictor
from hybrid.taxonomy import TRANSIENT_TYPES
from hybrid.training.data import CandidateDataModule
from hybrid.training.train import make_datamodule
from hybrid.uncertainty import (
    Ensemble,
    MCDropout,
    Predictive,
    Samples,
    fit_temperature,
    sample_split,
    train_ensemble,
    uncertainty_metrics,
)
from hybrid.uncertainty.wrappers import OUTPUTS, UncertaintyModel
from tests.test_readers import PARQUET

N_FEATURES = 5


def tiny_model(dropout: float, seed: int = 0) -> HybridModel:
    torch.manual_seed(seed)
    return HybridModel(
        in_chans=3,
        n_features=N_FEATURES,
        n_types=len(TRANSIENT_TYPES),
        image_encoder=partial(VGGEncoder, widths=(4, 8), dropout=dropout, out_dim=8),
        tabular_encoder=partial(MLPEncoder, hidden=(8,), dropout=dropout),
        fusion=partial(GatedFusion, dim=8),
        head_dropout=dropout,
    ).eval()


def inputs(n: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 15, 15, generator=g) * 10 + 100, torch.randn(n, N_FEATURES, generator=g)


def test_decomposition_of_agreeing_and_disagreeing_members() -> None:
    agree = Predictive.from_binary(np.full((4, 3), 0.3))
    assert np.allclose(agree.mutual_info, 0.0)
    assert np.allclose(agree.entropy, agree.expected_entropy)
    # two confident members that disagree: all uncertainty is epistemic, ln 2 nats
    split = Predictive.from_binary(np.array([[1.0], [0.0]]))
    assert split.mutual_info[0] == pytest.approx(np.log(2), abs=1e-6)
    assert split.expected_entropy[0] == pytest.approx(0.0, abs=1e-6)
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=(7, 50))
    pred = Predictive.from_samples(p)
    assert np.allclose(pred.entropy, pred.expected_entropy + pred.mutual_info)
    assert (pred.mutual_info >= 0).all() and np.allclose(pred.mean.sum(axis=1), 1)
    assert pred.margin().shape == (50,) and ((pred.margin() >= 0) & (pred.margin() <= 1)).all()


def test_bald_is_zero_for_a_deterministic_model() -> None:
    image, features = inputs()
    det = tiny_model(dropout=0.0)
    for sampler in (MCDropout(det, n_samples=8), Ensemble([det])):
        rb, _ = sampler(image, features)
        p = torch.sigmoid(rb).numpy()
        pred = Predictive.from_binary(p)
        assert np.abs(pred.mutual_info).max() < 1e-6
        assert np.abs(pred.std).max() < 1e-6
    # the same network with dropout is stochastic across samples, and BALD is positive
    rb, _ = MCDropout(tiny_model(dropout=0.5), n_samples=8)(image, features)
    assert Predictive.from_binary(torch.sigmoid(rb).numpy()).mutual_info.mean() > 1e-4


def test_mc_dropout_is_reproducible_and_leaves_the_model_alone() -> None:
    model = tiny_model(dropout=0.3)
    image, features = inputs()
    a = MCDropout(model, n_samples=5, seed=3)
    b = MCDropout(model, n_samples=5, seed=3)
    ra, ta = a(image, features)
    assert ra.shape == (5, 16) and ta.shape == (5, 16, len(TRANSIENT_TYPES))
    assert torch.equal(ra, b(image, features)[0])
    assert torch.equal(ra, a(image, features)[0])  # frozen masks: same sub-networks every call
    assert a.n_dropout_layers == 3  # image encoder, tabular encoder, head
    assert not torch.equal(ra, MCDropout(model, n_samples=5, seed=4)(image, features)[0])
    # each sample scores a candidate the same way whatever else is in the batch
    r_one, _ = a(image[:1], features[:1])
    assert torch.allclose(r_one[:, 0], ra[:, 0], atol=1e-5)
    assert any(isinstance(m, torch.nn.Dropout) for m in model.modules())  # the original is unchanged
    # the mean over many samples approaches the deterministic (inverted-dropout) prediction
    many, _ = MCDropout(model, n_samples=400, seed=0)(image, features)
    det, _ = model(image, features)
    assert torch.corrcoef(torch.stack([many.mean(0), det]))[0, 1] > 0.9


def test_temperature_scaling_fixes_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, 5000)
    y = rng.random(5000) < 1 / (1 + np.exp(-true_logit))
    overconfident = Samples(rb_logits=(3.0 * true_logit)[None, None], type_logits=np.zeros((1, 1, 5000, 2)))
    t = fit_temperature(overconfident, y)
    assert t == pytest.approx(3.0, rel=0.15)
    before, after = overconfident.real_bogus(1.0).positive(), overconfident.real_bogus(t).positive()
    assert expected_calibration_error(y, after) < 0.5 * expected_calibration_error(y, before)
    assert negative_log_likelihood(y, after) < negative_log_likelihood(y, before)
    # a calibrated model keeps T near 1
    calibrated = Samples(rb_logits=true_logit[None, None], type_logits=np.zeros((1, 1, 5000, 2)))
    assert fit_temperature(calibrated, y) == pytest.approx(1.0, rel=0.15)


def test_uncertainty_metrics_reward_an_uncertainty_that_tracks_errors() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    y = rng.random(n) < 0.3
    hard = rng.random(n) < 0.2  # members disagree on hard candidates, which are often wrong
    centre = np.where(y, 0.8, 0.2)
    centre = np.where(hard & (rng.random(n) < 0.5), 1 - centre, centre)
    spread = np.where(hard, 0.3, 0.02)
    members = np.clip(centre + spread * rng.standard_normal((10, n)), 0.001, 0.999)
    m = uncertainty_metrics(y, Predictive.from_binary(members))
    assert m["auroc_err_mutual_info"] > 0.8 and m["auroc_err_std"] > 0.8
    assert 0 < m["error_rate"] < 0.2 and m["brier"] < 0.25 and np.isfinite(m["nll"])


def test_wrapper_outputs_agree_with_the_numpy_path() -> None:
    model = tiny_model(dropout=0.3)
    image, features = inputs()
    sampler = MCDropout(model, n_samples=6, seed=0)
    wrapped = UncertaintyModel(sampler, temperature=2.0, rotation_average=True)
    outs = dict(zip(OUTPUTS, wrapped(image, features), strict=True))
    assert outs["p_types"].shape == (16, len(TRANSIENT_TYPES))
    rb, ty = [], []
    for k in range(4):
        for flip in (False, True):
            img = torch.rot90(image, k, dims=(-2, -1))
            img = torch.flip(img, dims=(-1,)) if flip else img
            r, t = sampler(img, features)
            rb.append(r)
            ty.append(t)
    samples = Samples(torch.stack(rb, 1).numpy(), torch.stack(ty, 1).numpy())
    pred = samples.real_bogus(2.0)
    assert np.allclose(outs["score"].numpy(), pred.positive(), atol=1e-5)
    assert np.allclose(outs["mutual_info"].numpy(), pred.mutual_info, atol=1e-5)
    assert np.allclose(outs["entropy"].numpy(), pred.entropy, atol=1e-5)
    assert np.allclose(outs["score_std"].numpy(), pred.positive_std(), atol=1e-5)
    assert np.allclose(outs["p_types"].numpy(), samples.types(1.0).mean, atol=1e-5)


def tiny_datamodule(tiny_run: Path) -> tuple[DictConfig, CandidateDataModule]:
    """The config and data of the shared tiny run (tests/conftest.py)."""
    cfg = OmegaConf.load(tiny_run / "config.yaml")
    return cfg, make_datamodule(cfg, Path(json.loads((tiny_run / "metrics.json").read_text())["dataset"]))


def test_ensemble_trains_and_scores_a_split(tiny_run: Path, tmp_path: Path) -> None:
    cfg, dm = tiny_datamodule(tiny_run)
    members = train_ensemble(cfg, dm, 2, tmp_path / "ens", enable_model_summary=False)
    assert len(members) == 2
    assert (tmp_path / "ens" / "member-1" / "checkpoints" / "best.ckpt").exists()
    a, b = (next(iter(m.parameters())).detach() for m in members)
    assert not torch.equal(a, b)  # different seeds
    samples = sample_split(Ensemble(members), dm.splits["test"])
    n = len(dm.splits["test"])
    assert samples.rb_logits.shape == (2, 1, n)
    m = uncertainty_metrics(dm.splits["test"].table["truth_real"].to_numpy(bool), samples.real_bogus())
    assert np.isfinite(m["nll"]) and m["mean_mutual_info"] > 0
    # finished members are loaded, not trained again
    again = train_ensemble(cfg, dm, 2, tmp_path / "ens", normalize=False)
    for x, y in zip(members, again, strict=True):
        for (k, v), w in zip(x.state_dict().items(), y.state_dict().values(), strict=True):
            assert torch.equal(v, w), k


def export_and_predict(run: Path, bundle: Path, extra: list[str]) -> pd.DataFrame:
    """``hybrid export RUN extra`` then ``hybrid predict`` on the real ZTF alerts of the fixtures."""
    assert main(["export", str(run), "--out", str(bundle), *extra]) == 0
    assert set(OUTPUTS) <= set(load_bundle(bundle).output_names)  # and the golden pair holds
    out = bundle.with_suffix(".parquet")
    assert main(["predict", str(bundle), str(PARQUET), "--out", str(out), "--workers", "1"]) == 0
    table = pd.read_parquet(out)
    assert {"score", "p_sn", "score_std", "entropy", "mutual_info"} <= set(table.columns)
    assert (table["mutual_info"] >= 0).all() and (table["entropy"] <= np.log(2) + 1e-6).all()
    return table


def test_an_exported_mc_dropout_bundle_reports_uncertainty(tiny_run: Path, tmp_path: Path) -> None:
    table = export_and_predict(tiny_run, tmp_path / "mc", ["--mc-dropout", "6"])
    assert table["mutual_info"].max() > 1e-6  # the thinned networks disagree


@pytest.mark.slow
def test_an_exported_ensemble_of_identical_members_has_no_epistemic_uncertainty(
    tiny_run: Path, tmp_path: Path
) -> None:
    table = export_and_predict(tiny_run, tmp_path / "ensemble", ["--ensemble", str(tiny_run)])
    assert table["mutual_info"].max() < 1e-6
    single, _, _ = load_run_model(tiny_run)
    batch = read_alerts(PARQUET, stamp_size=Predictor(tmp_path / "ensemble").stamp_size)
    features = batch.candidates[single.features.names].to_numpy(np.float32)
    want, _ = single.predict(torch.tensor(batch.stamps), torch.tensor(features))
    np.testing.assert_allclose(table["score"], want.numpy(), rtol=RTOL, atol=ATOL)
