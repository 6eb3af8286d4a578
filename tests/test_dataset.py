"""Dataset directories, the PyTorch Dataset, splits, and the resumable build."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from hybrid.config import load_config
from hybrid.data.build import BuildPlan, build_dataset, process_field
from hybrid.data.dataset import DatasetError, read_dataset, write_dataset
from hybrid.data.splits import assign_splits
from hybrid.data.torch_dataset import CandidateDataset
from hybrid.detection import FEATURE_UNITS
from hybrid.taxonomy import TRANSIENT_TYPES
from tests.conftest import SMALL


def test_dataset_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"a": np.arange(5), "label_type": ["bogus", "sn", "bogus", "nuclear", "asteroid"]})
    stamps = rng.normal(size=(5, 3, 7, 7)).astype(np.float32)
    stamps[0, 0, 0, 0] = np.nan
    path = write_dataset(tmp_path / "ds", table, stamps, {"channels": ["sci", "ref", "diff"]})
    ds = read_dataset(path)
    pd.testing.assert_frame_equal(ds.candidates, table)
    np.testing.assert_array_equal(ds.stamps, stamps)
    assert isinstance(ds.stamps, np.memmap)
    assert ds.meta["n_candidates"] == 5 and ds.meta["channels"] == ["sci", "ref", "diff"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary left behind
    # rewriting replaces atomically
    write_dataset(path, table.iloc[:2], stamps[:2], {})
    assert len(read_dataset(path)) == 2


def test_broken_datasets_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"meta\.json"):
        read_dataset(tmp_path)
    path = write_dataset(tmp_path / "ds", pd.DataFrame({"a": [1, 2]}), np.zeros((2, 1, 3, 3), np.float32), {})
    np.save(path / "stamps.npy", np.zeros((3, 1, 3, 3), np.float32))
    with pytest.raises(DatasetError, match=r"2 rows .* 3 stamps"):
        read_dataset(path)
    with pytest.raises(DatasetError, match=r"1 candidate rows but 2 stamps"):
        write_dataset(tmp_path / "x", pd.DataFrame({"a": [1]}), np.zeros((2, 1, 3, 3), np.float32), {})


def test_splits_are_by_object_and_stable() -> None:
    ids = np.array([f"o{i % 50}" for i in range(1000)])
    split = assign_splits(ids, (0.6, 0.2, 0.2), seed=1)
    per_object = pd.Series(split).groupby(ids).nunique()
    assert (per_object == 1).all()
    frac = pd.Series(split[:50]).value_counts(normalize=True)
    assert set(frac.index) == {"train", "val", "test"}
    np.testing.assert_array_equal(assign_splits(ids[:10], (0.6, 0.2, 0.2), seed=1), split[:10])
    with pytest.raises(ValueError):
        assign_splits(ids, (0.5, 0.2, 0.2))


def test_build_makes_a_labelled_dataset_and_reuses_it(small_cfg) -> None:
    path = build_dataset(small_cfg)
    ds = read_dataset(path)
    c = ds.candidates
    assert len(c) > 20
    assert ds.stamps.shape == (len(c), 3, 31, 31)
    assert set(c["label_type"]) <= set(TRANSIENT_TYPES) and c["label_real"].any() and (~c["label_real"]).any()
    assert (c["label_source"] == "truth").all()
    assert (c["label_real"] == c["truth_real"]).all()
    for col in ("ra", "dec", "mjd", "survey", "band", "object_id", "split", "bogus_kind", *FEATURE_UNITS):
        assert col in c.columns, col
    assert c.groupby("object_id")["split"].nunique().max() == 1
    context_units = instantiate(small_cfg.context).feature_units()
    assert ds.meta["features"] == {**FEATURE_UNITS, **context_units} and ds.meta[
        "pixel_scale"
    ] == pytest.approx(1.01)
    assert ds.meta["provenance"]["config"]["sim"]["shape"] == [256, 256]
    assert c["ra"].between(0, 360).all() and c["dec"].between(-90, 90).all()
    # a second build of the same config reuses the directory
    mtime = (path / "meta.json").stat().st_mtime
    assert build_dataset(small_cfg) == path and (path / "meta.json").stat().st_mtime == mtime

    item = CandidateDataset(path, split=None)[0]
    assert item["image"].shape == (3, 31, 31) and item["image"].dtype == torch.float32
    assert item["features"].shape == (len(ds.meta["features"]),)
    only_diff = CandidateDataset(path, channels=["diff"])
    assert only_diff[0]["image"].shape == (1, 31, 31)
    train = CandidateDataset(path, split="train")
    assert len(train) == (c["split"] == "train").sum()


def test_goto_like_curation_mixes_label_sources(small_cfg) -> None:
    from omegaconf import OmegaConf

    from hybrid.config import load_config

    cfg = load_config([*SMALL, "curation=goto_like", "curation.vetted_fraction=0.0", "sim.shape=[512,512]"])
    cfg.paths.cache_dir = small_cfg.paths.cache_dir
    c = pd.concat([process_field(OmegaConf.to_container(cfg, resolve=True), f).candidates for f in range(2)])
    assert set(c["label_source"]) == {"algorithmic", "injected"}
    alg = c[c["label_source"] == "algorithmic"]
    assert (alg.loc[alg["label_real"], "label_type"] == "asteroid").all()
    assert (alg.loc[alg["label_real"], "truth_type"] == "asteroid").all()
    inj = c[c["label_source"] == "injected"]
    assert (inj["label_type"] == "sn").all() and inj["snr_psf"].median() > 5
    assert inj["truth_host_offset"].notna().all() and inj["injected_host"].notna().all()


def _build_command(cache: Path) -> list[str]:
    overrides = [*SMALL, "data.n_fields=4", f"paths.cache_dir={cache}"]
    return [
        sys.executable,
        "-c",
        "import sys; from hybrid.cli import main; main(['build', *sys.argv[1:]])",
        *overrides,
    ]


def test_resumed_build_equals_uninterrupted_build(tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    subprocess.run(_build_command(whole), check=True, capture_output=True, timeout=300)

    resumed = tmp_path / "resumed"
    proc = subprocess.Popen(_build_command(resumed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        shards = list(resumed.glob("datasets/*.shards/fields-*"))
        if [s for s in shards if (s / "meta.json").exists()]:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # killed mid-build
    proc.wait()
    done_before = {s.name for s in resumed.glob("datasets/*.shards/fields-*") if (s / "meta.json").exists()}
    assert 1 <= len(done_before) < 4
    assert not list(resumed.glob("datasets/*/meta.json"))  # nothing merged yet

    subprocess.run(_build_command(resumed), check=True, capture_output=True, timeout=300)
    (a,) = list(whole.glob("datasets/*/meta.json"))
    (b,) = list(resumed.glob("datasets/*/meta.json"))
    da, db = read_dataset(a.parent), read_dataset(b.parent)
    pd.testing.assert_frame_equal(da.candidates, db.candidates)
    np.testing.assert_array_equal(np.asarray(da.stamps), np.asarray(db.stamps))
    assert json.loads(a.read_text())["config_hash"] == json.loads(b.read_text())["config_hash"]


def test_missing_shard_is_reported(small_cfg) -> None:
    plan = BuildPlan.from_config(small_cfg)
    with pytest.raises(DatasetError, match="shard not built"):
        plan.merge()


def _build_in_subprocess(overrides: list[str]) -> str:
    return str(build_dataset(load_config(overrides)))


def test_concurrent_builds_of_one_dataset_build_it_once(tmp_path: Path) -> None:
    """Parallel sweep jobs that need the same dataset: one builds it, the others wait and reuse it."""
    from concurrent.futures import ProcessPoolExecutor

    overrides = [*SMALL, "data.n_fields=1", "sim.epochs_per_field=1", f"paths.cache_dir={tmp_path}"]
    with ProcessPoolExecutor(2) as pool:
        paths = list(pool.map(_build_in_subprocess, [overrides, overrides]))
    assert paths[0] == paths[1] and (Path(paths[0]) / "meta.json").exists()
