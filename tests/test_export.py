"""Export bundles: contents, onnxruntime-PyTorch parity, checksums and the golden pair, extra outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hybrid.cli import main
from hybrid.data.dataset import read_dataset
from hybrid.export import (
    ATOL,
    RTOL,
    BundleError,
    ServingModel,
    load_bundle,
    load_run_model,
    normalize_stamps,
)
from hybrid.export.bundle import MANIFEST, sha256
from hybrid.models import StampNormalizer
from hybrid.taxonomy import TRANSIENT_TYPES
from tests.conftest import survey_profile


@pytest.fixture(scope="module")
def real_inputs(tiny_run: Path) -> tuple[np.ndarray, np.ndarray]:
    """Raw stamps and features of 16 simulated candidates, NaN pixels included."""
    model, _, dataset = load_run_model(tiny_run)
    ds = read_dataset(dataset)
    rows = np.argsort(-ds.candidates["stamp_nan_fraction"].to_numpy(), kind="stable")[:16]
    rows.sort()
    stamps = np.asarray(ds.stamps[rows], np.float32)
    features = ds.candidates.iloc[rows][model.features.names].to_numpy(np.float32)
    assert np.isnan(stamps).any()
    features[::3, ::4] = np.nan  # gaps, as real alerts have (a ZTF alert without a PS1 source in 30")
    return stamps, features


@pytest.mark.parametrize("mode", ["noise", "l2", "none"])
@pytest.mark.parametrize("crop", [None, 31])
def test_numpy_stamp_normalisation_equals_the_models(real_inputs, mode: str, crop: int | None) -> None:
    stamps, _ = real_inputs
    want = StampNormalizer(mode, crop)(torch.from_numpy(stamps)).numpy()
    got = normalize_stamps(stamps, mode=mode, crop=crop, clip=50.0)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_bundle_holds_what_the_contract_says(tiny_bundle: Path, tiny_run: Path) -> None:
    files = {p.name for p in tiny_bundle.iterdir()}
    assert files == {
        "model.onnx",
        "weights.safetensors",
        "preprocess.json",
        "labels.json",
        "config.yaml",
        "golden.npz",
        "manifest.json",
    }
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    n_features = len(survey_profile("ztf").alert_features)  # the ZTF model sees what ZTF alerts carry
    assert manifest["inputs"] == {"image": ["batch", 3, 31, 31], "tabular": ["batch", n_features]}
    assert manifest["outputs"] == {"score": ["batch"], "p_types": ["batch", len(TRANSIENT_TYPES)]}
    assert set(manifest["versions"]) >= {"torch", "onnx", "onnxruntime", "numpy", "hybrid"}
    assert manifest["sha256"]["model.onnx"] == sha256(tiny_bundle / "model.onnx")
    assert manifest["source"]["run_dir"] == str(tiny_run.resolve())
    pre = json.loads((tiny_bundle / "preprocess.json").read_text())
    assert pre["image"]["channels"] == ["sci", "ref", "diff"] and pre["image"]["crop"] == 31
    assert pre["image"]["normalisation"]["mode"] == "noise" and pre["rotation_average"] is False
    feats = pre["tabular"]["features"]
    assert feats[0].keys() >= {"name", "unit", "clip_lo", "clip_hi", "center", "scale"}
    assert {f["name"]: f["unit"] for f in feats}["fwhm"] == "arcsec"
    labels = json.loads((tiny_bundle / "labels.json").read_text())
    assert labels["p_types"] == list(TRANSIENT_TYPES)
    from safetensors.torch import load_file

    model, _, _ = load_run_model(tiny_run)
    weights = load_file(tiny_bundle / "weights.safetensors")
    for key, value in ServingModel(model).state_dict().items():
        torch.testing.assert_close(weights[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("batch", [1, 7, 16])
def test_onnxruntime_matches_pytorch(tiny_bundle: Path, tiny_run: Path, real_inputs, batch: int) -> None:
    stamps, features = (a[:batch] for a in real_inputs)
    model, _, _ = load_run_model(tiny_run)
    with torch.no_grad():
        score, p_types = ServingModel(model)(torch.from_numpy(stamps), torch.from_numpy(features))
    got = load_bundle(tiny_bundle).run(stamps, features)
    np.testing.assert_allclose(got["score"], score.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got["p_types"], p_types.numpy(), rtol=RTOL, atol=ATOL)
    assert got["score"].shape == (batch,)


def test_loading_checks_checksums_and_the_golden_pair(tiny_bundle: Path, tmp_path: Path) -> None:
    altered = shutil.copytree(tiny_bundle, tmp_path / "altered")
    (altered / "preprocess.json").write_text(
        (altered / "preprocess.json").read_text().replace('"noise"', '"l2"')
    )
    with pytest.raises(BundleError, match=r"preprocess\.json: SHA-256 differs"):
        load_bundle(altered)
    # the same change with a re-signed manifest: the golden pair catches it
    manifest = json.loads((altered / MANIFEST).read_text())
    manifest["sha256"]["preprocess.json"] = sha256(altered / "preprocess.json")
    (altered / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="differs from the golden output"):
        load_bundle(altered)
    (altered / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx: missing"):
        load_bundle(altered)
    with pytest.raises(BundleError, match=r"is .* an export bundle"):
        load_bundle(tmp_path)


def test_extra_outputs_pass_through(ensemble_bundle: Path, tiny_run: Path) -> None:
    bundle = load_bundle(ensemble_bundle)
    assert bundle.output_names == ["score", "p_types", "score_std"]
    with np.load(ensemble_bundle / "golden.npz") as z:
        assert (bundle.run(z["stamps"], z["features"])["score_std"] > 0).all()
    # the members kept their own stamp normalisers after the export
    a, _, _ = load_run_model(tiny_run)
    assert isinstance(a.stamps, StampNormalizer)


def test_export_cli_wrote_the_bundle(tiny_bundle: Path, tiny_run: Path) -> None:
    """The ``tiny_bundle`` fixture exports with ``hybrid export RUN_DIR --format onnx --out DIR``."""
    assert json.loads((tiny_bundle / "manifest.json").read_text())["source"]["checkpoint"] == "best"
    with pytest.raises(SystemExit):
        main(["export", str(tiny_run), "--format", "tflite"])
