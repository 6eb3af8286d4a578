"""Contract tests of every registered encoder and fusion, the model, preprocessing and metrics."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from hybrid.evaluation.metrics import expected_calibration_error, rate_at, real_bogus_metrics, type_metrics
from hybrid.models import (
    FUSIONS,
    IMAGE_ENCODERS,
    TABULAR_ENCODERS,
    FeaturePreprocessor,
    HybridModel,
    StampNormalizer,
)
from hybrid.models.preprocessing import DIHEDRAL, dihedral, random_dihedral

B, C, S, F, T = 4, 3, 31, 7, 6
# timm zero-initialises the last norm of residual blocks (gradients reach them after one step)
IMAGE_KWARGS = {"braai": {"stamp_size": S}, "timm": {"model_name": "resnet18", "zero_init_last": False}}


def _assert_all_parameters_get_gradients(module: torch.nn.Module) -> None:
    missing = [
        n
        for n, p in module.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("name", IMAGE_ENCODERS.names())
def test_image_encoder_contract(name: str) -> None:
    torch.manual_seed(0)
    enc = IMAGE_ENCODERS.get(name)(in_chans=C, **IMAGE_KWARGS.get(name, {}))
    out = enc(torch.randn(B, C, S, S))
    assert out.shape == (B, enc.out_dim)
    out.pow(2).sum().backward()
    _assert_all_parameters_get_gradients(enc)


@pytest.mark.parametrize("name", TABULAR_ENCODERS.names())
def test_tabular_encoder_contract(name: str) -> None:
    torch.manual_seed(0)
    enc = TABULAR_ENCODERS.get(name)(n_features=F)
    out = enc(torch.randn(B, F))
    assert out.shape == (B, enc.out_dim)
    out.pow(2).sum().backward()
    _assert_all_parameters_get_gradients(enc)


@pytest.mark.parametrize("name", FUSIONS.names())
def test_fusion_contract_with_and_without_a_modality(name: str) -> None:
    torch.manual_seed(0)
    cls = FUSIONS.get(name)
    both = cls(image_dim=16, tabular_dim=12, dim=32)
    out = both(torch.randn(B, 16), torch.randn(B, 12))
    assert out.shape == (B, both.out_dim)
    out.pow(2).sum().backward()
    _assert_all_parameters_get_gradients(both)
    assert cls(image_dim=16, tabular_dim=None, dim=32)(torch.randn(B, 16), None).shape == (B, 32)
    assert cls(image_dim=None, tabular_dim=12, dim=32)(None, torch.randn(B, 12)).shape == (B, 32)
    with pytest.raises(ValueError, match="at least one modality"):
        cls(image_dim=None, tabular_dim=None)


def _model(image: bool = True, tabular: bool = True, fusion: str = "gated") -> HybridModel:
    model = HybridModel(
        in_chans=C,
        n_features=F,
        n_types=T,
        image_encoder=partial(IMAGE_ENCODERS.get("vgg"), widths=(8, 16)) if image else None,
        tabular_encoder=partial(TABULAR_ENCODERS.get("mlp"), hidden=(16,)) if tabular else None,
        fusion=partial(FUSIONS.get(fusion), dim=16),
        stamps=StampNormalizer("noise", crop=21),
    )
    if model.features is not None:
        model.features.fit(np.random.default_rng(0).normal(size=(50, F)))
    return model


@pytest.mark.parametrize("modalities", [(True, True), (True, False), (False, True)])
def test_hybrid_model_takes_raw_inputs_with_nans(modalities: tuple[bool, bool]) -> None:
    torch.manual_seed(0)
    model = _model(*modalities)
    image = torch.randn(B, C, S, S) * 10 + 100
    image[0, :, :5, :] = float("nan")  # a frame edge
    features = torch.randn(B, F)
    features[1, 2] = float("nan")  # a missing feature
    rb, ty = model(image, features)
    assert rb.shape == (B,) and ty.shape == (B, T)
    assert torch.isfinite(rb).all() and torch.isfinite(ty).all()
    (rb.sum() + ty.sum()).backward()
    _assert_all_parameters_get_gradients(model)
    p_rb, p_ty = model.predict(image, features, rotation_average=True)
    assert ((p_rb >= 0) & (p_rb <= 1)).all() and torch.allclose(p_ty.sum(-1), torch.ones(B))


def test_stamp_normalisations() -> None:
    x = torch.randn(2, 3, 11, 11) * 7 + 40
    l2 = StampNormalizer("l2")(x)
    assert torch.allclose(l2.flatten(-2).norm(dim=-1), torch.ones(2, 3), atol=1e-5)
    z = StampNormalizer("noise", clip=1e6)(x)
    assert z.flatten(-2).median(dim=-1).values.abs().max() < 0.2
    assert 0.8 < float(z.std()) < 1.25
    assert StampNormalizer("none", crop=5)(x).shape == (2, 3, 5, 5)
    with pytest.raises(ValueError):
        StampNormalizer("zscale")


def test_feature_preprocessor_scales_clips_and_imputes() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(5.0, 2.0, size=(1000, 2))
    train[:10, 1] = np.nan
    pre = FeaturePreprocessor(2, ["a", "b"]).fit(train)
    x = torch.tensor([[5.0, float("nan")], [1e9, 5.0]])
    out = pre(x)
    assert out.shape == (2, 4)
    assert abs(float(out[0, 0])) < 0.1  # the median maps to 0
    assert float(out[0, 1]) == pytest.approx(0.0, abs=0.1) and out[0, 3] == 1.0  # imputed + flagged
    assert float(out[1, 0]) < 4.0  # clipped at the 99.5th percentile
    d = pre.to_dict()
    assert d["features"] == ["a", "b"] and len(d["center"]) == 2
    state = pre.state_dict()
    again = FeaturePreprocessor(2)
    again.load_state_dict(state)
    assert torch.equal(again(x), out)


def test_dihedral_augmentations() -> None:
    x = torch.arange(2 * 9.0).reshape(2, 1, 3, 3)
    views = {tuple(dihedral(x, k, f)[0].flatten().tolist()) for k, f in DIHEDRAL}
    assert len(views) == 8
    y = random_dihedral(x, torch.Generator().manual_seed(1))
    assert sorted(y[0].flatten().tolist()) == sorted(x[0].flatten().tolist())


def test_metrics_against_hand_computed_values() -> None:
    y = np.array([0] * 100 + [1] * 10)
    score = np.concatenate([np.linspace(0, 0.5, 100), np.linspace(0.45, 1.0, 10)])
    m = real_bogus_metrics(y, score)
    # 1 real scores below the highest bogus (0.5): at 1% FPR one bogus may pass, so FNR = 1/10
    assert m["fnr_at_1pct_fpr"] == pytest.approx(0.1)
    # the lowest real scores 0.45: the bogus at 0.4545, 0.4596, ..., 0.5 (10 of 100) pass with it
    assert rate_at(y, score, fnr=0.0) == pytest.approx(10 / 100)
    assert m["missed_detection_rate"] == pytest.approx(0.1) and m["false_positive_rate"] == pytest.approx(
        0.01
    )
    assert expected_calibration_error(np.array([1, 0, 1, 1]), np.array([1.0, 0.0, 1.0, 1.0])) == 0.0
    assert expected_calibration_error(np.array([0, 0]), np.array([0.9, 0.9]), bins=10) == pytest.approx(0.9)
    prob = np.eye(3)[[0, 1, 2, 2]]
    tm, cm = type_metrics(np.array([0, 1, 2, 1]), prob, ["a", "b", "c"])
    assert tm["type_accuracy"] == 0.75 and cm[1, 2] == 1
    assert tm["type_macro_f1"] == pytest.approx(np.mean([1.0, 2 / 3, 2 / 3]))
