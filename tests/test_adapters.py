"""Cross-survey adapters: harmonisation physics, gradient reversal, AdaBN, and the adapter stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from hybrid.adapters import (
    GradientReversal,
    StampHarmonizer,
    adapt_batchnorm,
    harmonize_dataset,
    harmonize_features,
    homogenize_psf,
    measure_fwhm,
    merge_datasets,
    normalize_noise,
    resample_stamps,
    reverse_gradient,
)
from hybrid.adapters.learned import TEST_TIME_ADAPTERS, dann_lambda, stratified_sample
from hybrid.config import load_config
from hybrid.data.dataset import DatasetError, read_dataset, write_dataset
from hybrid.models import HybridModel
from hybrid.models.encoders import MLPEncoder, VGGEncoder
from hybrid.models.fusion import ConcatFusion
from hybrid.psf import MoffatPSF
from hybrid.sim.survey import SurveyProfile
from hybrid.training.data import SplitTensors
from tests.conftest import CONF, survey_profile
from tests.test_training import TINY

SURVEYS = ("rubin", "ztf", "goto", "atlas")
PHASES = [(0.0, 0.0), (0.3, -0.2), (0.45, 0.2)]


def star(
    survey: str, phase: tuple[float, float], *, flux: float = 1000.0, fwhm: float | None = None, n: int = 95
) -> tuple[np.ndarray, SurveyProfile]:
    """A pixel-integrated Moffat star of the survey's median seeing at a sub-pixel phase."""
    p = survey_profile(survey)
    f = (fwhm or p.seeing_median) / p.pixel_scale
    c = (n - 1) / 2
    img = MoffatPSF(fwhm=f, beta=p.psf_beta, shape=(n, n)).stamps(
        np.array([c + phase[0]]), np.array([c + phase[1]]), n
    )[0][0]
    return flux * img.astype(np.float64), p


@pytest.mark.parametrize("method", ["spline", "area"])
@pytest.mark.parametrize("survey", SURVEYS)
@pytest.mark.parametrize("phase", PHASES)
def test_resampling_to_a_common_scale_conserves_flux(survey: str, phase: tuple, method: str) -> None:
    img, p = star(survey, phase)
    size = int(np.ceil(img.shape[0] * p.pixel_scale)) | 1  # the whole input footprint at 1"/px
    out = resample_stamps(img, scale_in=p.pixel_scale, scale_out=1.0, size_out=size, method=method)
    assert out.shape == (size, size)
    assert np.nansum(out) == pytest.approx(img.sum(), rel=0.005)
    # and the source stays centred: its flux-weighted centroid moves by less than a tenth of a pixel
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    w = np.nan_to_num(out)
    assert abs((w * xx).sum() / w.sum() - phase[0] * p.pixel_scale) < 0.1
    assert abs((w * yy).sum() / w.sum() - phase[1] * p.pixel_scale) < 0.1


def test_resampling_marks_pixels_without_data_and_scales_partial_coverage() -> None:
    img = np.ones((20, 20))
    img[:, :10] = np.nan  # left half missing
    out = resample_stamps(img, scale_in=0.5, scale_out=1.0, size_out=10)
    assert np.isnan(out[:, :5]).all()
    # valid pixels hold 4 input pixels of 1 each: a flat image stays flat per unit area
    assert np.allclose(out[:, 5:], 4.0)
    wider = resample_stamps(np.ones((9, 9)), scale_in=1.0, scale_out=1.0, size_out=15)
    assert np.isnan(wider[0]).all() and np.allclose(wider[3:12, 3:12], 1.0)


def test_measured_fwhm_of_well_sampled_profiles() -> None:
    yy, xx = np.mgrid[:41, :41] - 20.3
    for fwhm in (3.0, 5.0, 8.0):  # a Gaussian sampled at pixel centres, FWHM in px
        g = np.exp(-(xx**2 + yy**2) / (2 * (fwhm / 2.3548) ** 2))
        assert measure_fwhm(g, pixel_scale=0.5) == pytest.approx(0.5 * fwhm, rel=0.02)
    img, p = star("rubin", (0.0, 0.0))  # 4 px FWHM: pixel integration adds little
    assert measure_fwhm(img, pixel_scale=p.pixel_scale) == pytest.approx(p.seeing_median, rel=0.05)


@pytest.mark.parametrize("survey", ["rubin", "ztf", "goto"])
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("target", [3.5, 4.5])
def test_psf_homogenisation_reaches_the_target_fwhm(survey: str, phase: tuple, target: float) -> None:
    img, p = star(survey, phase)
    h = StampHarmonizer(pixel_scale=1.0, size=41, fwhm=target, noise=False)
    out, reached = h(
        img[None, None], np.array([[p.seeing_median]]), pixel_scale=p.pixel_scale, beta=p.psf_beta
    )
    assert reached.all()
    assert measure_fwhm(out[0, 0], pixel_scale=1.0) == pytest.approx(target, rel=0.05)
    assert np.nansum(out) == pytest.approx(img.sum(), rel=0.01)  # convolution keeps the flux


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("target", [4.5, 5.5])
def test_undersampled_atlas_psf_reaches_a_broader_target_fwhm(phase: tuple, target: float) -> None:
    """ATLAS (3.6" seeing on 1.86" pixels, under 2 px FWHM) reaches targets broader than its own
    pixel-convolved PSF within 5% at any sub-pixel phase; narrower targets are refused (no sharpening)."""
    img, p = star("atlas", phase)
    h = StampHarmonizer(pixel_scale=1.0, size=41, fwhm=target, noise=False)
    out, reached = h(
        img[None, None], np.array([[p.seeing_median]]), pixel_scale=p.pixel_scale, beta=p.psf_beta
    )
    assert reached.all()
    assert measure_fwhm(out[0, 0], pixel_scale=1.0) == pytest.approx(target, rel=0.05)


def test_psf_homogenisation_never_sharpens() -> None:
    img, p = star("atlas", (0.0, 0.0), fwhm=4.5)
    r = resample_stamps(img, scale_in=p.pixel_scale, scale_out=1.0, size_out=41)
    out, reached = homogenize_psf(
        r[None], np.array([4.5]), fwhm_target=3.0, beta=p.psf_beta, scale_in=p.pixel_scale, scale_out=1.0
    )
    assert not reached.any() and np.allclose(out[0], r, equal_nan=True)


def test_noise_normalisation_gives_unit_robust_noise() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(100.0, 7.0, (4, 3, 31, 31)).astype(np.float32)
    x[0, 0, :3] = np.nan
    z = normalize_noise(x)
    assert np.isnan(z[0, 0, :3]).all()
    assert np.nanmedian(np.abs(z)) * 1.4826 == pytest.approx(1.0, rel=0.05)
    assert np.nanstd(z) == pytest.approx(1.0, rel=0.1)


def test_features_in_microjansky_agree_across_zero_points() -> None:
    mags = np.array([18.0, 20.0, 23.9])
    units = {"flux_psf": "adu", "flux_psf_err": "adu", "mag_psf": "mag", "n_neg": "count", "size": "px"}
    tables = []
    for zp in (26.0, 31.4):  # ZTF-like and Rubin-like zero points
        flux = 10 ** (-0.4 * (mags - zp))
        t = pd.DataFrame(
            {
                "flux_psf": flux,
                "flux_psf_err": flux / 10,
                "mag_psf": mags,
                "n_neg": [0, 5, 25],
                "size": [2, 2, 2],
            }
        )
        out, new_units = harmonize_features(t, units, pixel_scale=0.5)
        tables.append(out)
    assert np.allclose(tables[0]["flux_psf"], tables[1]["flux_psf"])
    assert tables[0]["flux_psf"].iloc[2] == pytest.approx(1.0)  # 23.9 AB mag is 1 uJy
    assert new_units["flux_psf"] == "uJy" and new_units["size"] == "arcsec"
    assert list(tables[0]["n_neg"]) == [0.0, 0.2, 1.0] and list(tables[0]["size"]) == [1.0, 1.0, 1.0]
    with pytest.raises(KeyError, match="mag_psf"):
        harmonize_features(t.drop(columns="mag_psf"), units, pixel_scale=1.0, where="x/candidates.parquet")


def test_gradient_reversal_reverses_and_scales_gradients() -> None:
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(3)
    (x @ w).sum().backward()
    plain = x.grad.clone()
    x.grad = None
    y = reverse_gradient(x, 0.7)
    assert torch.equal(y, x)  # identity forward
    (y @ w).sum().backward()
    assert torch.allclose(x.grad, -0.7 * plain)
    layer = GradientReversal(2.0)
    x.grad = None
    (layer(x) @ w).sum().backward()
    assert torch.allclose(x.grad, -2.0 * plain)
    assert dann_lambda(0.0) == 0.0 and 0.99 < dann_lambda(1.0) < 1.0 and dann_lambda(0.1) < dann_lambda(0.5)


def _tiny_model(n_features: int = 4) -> HybridModel:
    return HybridModel(
        in_chans=3,
        n_features=n_features,
        n_types=6,
        image_encoder=lambda in_chans: VGGEncoder(in_chans, widths=(4, 8), out_dim=8),
        tabular_encoder=lambda n_features: MLPEncoder(n_features, hidden=(8,)),
        fusion=lambda image_dim, tabular_dim: ConcatFusion(image_dim=image_dim, tabular_dim=tabular_dim),
    )


def _split(n: int, shift: float, seed: int) -> SplitTensors:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        {f"f{i}": rng.normal(shift, 1 + shift, n) for i in range(4)}
        | {"label_real": rng.random(n) < 0.3, "label_type": "bogus"}
    )
    stamps = (rng.normal(0, 1, (n, 3, 15, 15)) * (1 + shift) + shift).astype(np.float32)
    return SplitTensors(stamps, table, [f"f{i}" for i in range(4)], [0, 1, 2])


def test_adabn_reestimates_normalisation_statistics_on_the_target_only() -> None:
    torch.manual_seed(0)
    model = _tiny_model().eval()
    source = _split(64, 0.0, 0)
    model.features.fit(source.features.numpy())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    target = _split(200, 2.0, 1)
    adapted = adapt_batchnorm(model, target, batch_size=40)  # equal batches: the mean of means is exact
    for k, v in model.state_dict().items():  # the source model is untouched
        assert torch.equal(v, before[k])
    bn = adapted.image_encoder.features[1]
    conv = adapted.image_encoder.features[0]
    with torch.no_grad():
        h = conv(target.image)
    assert torch.allclose(bn.running_mean, h.mean(dim=(0, 2, 3)), atol=1e-4)
    assert torch.allclose(bn.running_var, h.var(dim=(0, 2, 3)), rtol=0.05)
    assert torch.allclose(
        adapted.features.center, torch.as_tensor(np.median(target.features.numpy(), 0)), atol=1e-5
    )
    # weights are shared knowledge: only statistics change
    for name, p in model.named_parameters():
        assert torch.equal(p, dict(adapted.named_parameters())[name])
    assert set(TEST_TIME_ADAPTERS.names()) >= {"none", "adabn"}


@pytest.mark.parametrize("name", TEST_TIME_ADAPTERS.names())
def test_every_test_time_adapter_honours_the_contract(name: str) -> None:
    """``adapter(model, target) -> model``: same architecture and weights, the input model unchanged."""
    torch.manual_seed(0)
    model = _tiny_model().eval()
    model.features.fit(_split(32, 0.0, 0).features.numpy())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapted = TEST_TIME_ADAPTERS.get(name)()(model, _split(50, 1.0, 1))
    assert isinstance(adapted, HybridModel) and not adapted.training
    assert adapted.state_dict().keys() == before.keys()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    for k, p in model.named_parameters():
        assert torch.equal(p, dict(adapted.named_parameters())[k])
    rb, ty = adapted.predict(_split(4, 1.0, 2).image, _split(4, 1.0, 2).features, stamps_normalized=True)
    assert rb.shape == (4,) and ty.shape == (4, 6) and torch.isfinite(rb).all()


def test_stratified_sample_keeps_each_class() -> None:
    labels = np.array([1] * 5 + [0] * 95)
    for n in (2, 10, 50):
        rows = stratified_sample(labels, n, seed=0)
        assert (
            len(rows) == n and len(set(rows)) == n and labels[rows].sum() >= 1 and (labels[rows] == 0).any()
        )
    assert len(stratified_sample(labels, 1000, seed=0)) == 100


def _write_tiny_dataset(path: Path, survey: str, n: int = 12, channels=("sci", "ref", "diff")) -> Path:
    p = survey_profile(survey)
    rng = np.random.default_rng(0)
    size = 63
    stamps = np.stack(
        [
            np.stack([star(survey, (0.0, 0.0), n=size)[0] + rng.normal(0, 1, (size, size)) for _ in channels])
            for _ in range(n)
        ]
    ).astype(np.float32)
    mags = rng.uniform(17, 20, n)
    flux = 10 ** (-0.4 * (mags - p.zero_point))
    table = pd.DataFrame(
        {
            "survey": survey,
            "object_id": [f"0-t{i}" for i in range(n)],
            "flux_psf": flux,
            "mag_psf": mags,
            "fwhm_sci": p.seeing_median,
            "ref_fwhm_arcsec": p.seeing_median * 0.9,
            "split": "train",
            "label_real": True,
            "label_type": "sn",
        }
    )
    meta = {
        "name": path.name,
        "survey": survey,
        "pixel_scale": p.pixel_scale,
        "channels": list(channels),
        "features": {"flux_psf": "adu", "mag_psf": "mag"},
        "provenance": {"config": {"survey": {"psf_beta": p.psf_beta}}},
    }
    return write_dataset(path, table, stamps, meta)


def test_harmonised_datasets_share_one_frame_and_merge(tmp_path: Path) -> None:
    h = StampHarmonizer(pixel_scale=1.0, size=21, fwhm=5.0)
    out = {}
    for survey in ("rubin", "atlas"):
        src = _write_tiny_dataset(tmp_path / survey, survey)
        out[survey] = harmonize_dataset(src, h)
        assert harmonize_dataset(src, h) == out[survey]  # cached
    ds = read_dataset(out["atlas"])
    assert ds.stamps.shape == (12, 3, 21, 21)
    assert ds.meta["pixel_scale"] == 1.0 and ds.meta["features"]["flux_psf"] == "uJy"
    assert ds.meta["adapter"]["source_pixel_scale"] == survey_profile("atlas").pixel_scale
    assert ds.candidates["psf_homogenized"].all()
    # the same magnitudes give the same microjansky in both surveys
    rubin = read_dataset(out["rubin"]).candidates
    assert np.allclose(rubin["flux_psf"], ds.candidates["flux_psf"])
    merged = read_dataset(merge_datasets([out["rubin"], out["atlas"]]))
    assert len(merged) == 24 and merged.meta["surveys"] == ["rubin", "atlas"]
    assert merged.candidates["object_id"].str.startswith(("rubin:", "atlas:")).all()
    assert merged.candidates["object_id"].nunique() == 24


def test_bad_input_names_the_file_and_field(tmp_path: Path) -> None:
    src = _write_tiny_dataset(tmp_path / "ztf", "ztf")
    t = pd.read_parquet(src / "candidates.parquet").drop(columns="ref_fwhm_arcsec")
    t.to_parquet(src / "candidates.parquet", index=False)
    with pytest.raises(DatasetError, match=r"candidates\.parquet.*ref_fwhm_arcsec"):
        harmonize_dataset(src, StampHarmonizer())
    other = _write_tiny_dataset(tmp_path / "two", "ztf", channels=("sci", "diff"))
    with pytest.raises(DatasetError, match="channels"):
        merge_datasets([src, other])
    meta = json.loads((src / "meta.json").read_text())
    meta["pixel_scale"] = None
    (src / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="pixel_scale"):
        harmonize_dataset(src, StampHarmonizer(fwhm=None))


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "adapter").glob("*.yaml")))
def test_adapter_configs_compose(name: str) -> None:
    cfg = load_config([f"adapter={name}"])
    a = cfg.adapter
    assert a.name == name
    assert bool(a.harmonize) == ("harmonize" in name) and bool(a.dann) == ("dann" in name)
    if a.harmonize:
        assert isinstance(instantiate(a.harmonize), StampHarmonizer)
    for t in a.test_time:
        TEST_TIME_ADAPTERS.get(t)
    assert all(int(n) >= 0 for n in a.finetune.n)


@pytest.mark.slow
def test_leave_one_out_dann_run_reports_every_target_variant(tmp_path: Path) -> None:
    """End to end: two source surveys merged and harmonised, DANN against a third, AdaBN and
    fine-tuning on it; the flat target metrics land in metrics.json."""
    from hybrid.tasks import train

    mine = ("trainer.max_epochs=2", "data.n_fields=4", "logger.wandb.enabled=false")
    tiny = [o for o in TINY if not o.startswith(tuple(m.split("=")[0] + "=" for m in mine))] + list(mine)
    tiny += [f"paths.cache_dir={tmp_path / 'cache'}", f"run_dir={tmp_path / 'run'}"]
    cfg = load_config(
        [
            *tiny,
            "survey=ztf",
            "adapter=harmonize_dann",
            "adapter.harmonize.size=21",
            "adapter.extra_sources=[atlas]",
            "adapter.targets=[goto]",
            "adapter.test_time=[none,adabn]",
            "adapter.finetune.n=[0,10]",
        ]
    )
    metrics = train(cfg)
    merged = read_dataset(metrics["dataset"])
    assert merged.meta["surveys"] == ["ztf", "atlas"] and merged.stamps.shape[-1] == 21
    for tta in ("none", "adabn"):
        for n in (0, 10):
            prefix = f"target_goto_{tta}_n{n}_"
            assert 0.0 <= metrics[prefix + "auc"] <= 1.0
            assert 0.0 <= metrics[prefix + "fnr_at_1pct_fpr"] <= 1.0
            assert 0.0 <= metrics[prefix + "source_auc"] <= 1.0
            assert metrics[prefix + "n_labelled"] == n
    assert metrics["target_goto_n_test"] > 0
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["target_goto_adabn_n10_auc"] == metrics["target_goto_adabn_n10_auc"]
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert any(k.startswith("survey_head.") for k in state)  # trained with the domain-adversarial head
    log = pd.read_csv(tmp_path / "run" / "csv" / "metrics.csv")
    assert "train/domain_loss" in log.columns
