"""The vetting page: vote store, consensus, the human label source, the queue, stamps and the pages."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate

from hybrid.cli import load_config
from hybrid.curation import Curation, HumanLabels, VoteStore
from hybrid.curation.human import candidate_keys, consensus
from hybrid.data.build import config_hash
from hybrid.vet import open_session
from hybrid.vet.pool import CandidatePool, priority
from hybrid.vet.render import scaled, stamp_png
from tests.conftest import TINY_RUN


def test_votes_undo_and_one_standing_vote_per_volunteer(tmp_path: Path) -> None:
    store = VoteStore(tmp_path / "votes.sqlite")
    first = store.cast("ds", "7", "ann", "real", "sn")
    assert store.cast("ds", "7", "ann", "bogus") == first  # a repeated key press changes nothing
    store.cast("ds", "8", "ann", "skip")
    assert store.undo("ds", "ann") == "8"
    assert store.undo("ds", "ann") == "7"
    assert store.votes("ds").empty
    store.cast("ds", "7", "ann", "bogus")
    all_votes = store.votes("ds", include_undone=True)
    assert list(all_votes["label"]) == ["real", "skip", "bogus"]
    assert all_votes["undone_at"].notna().tolist() == [True, True, False]
    with pytest.raises(ValueError, match="type goes with a real vote"):
        store.cast("ds", "9", "ann", "bogus", "sn")
    with pytest.raises(ValueError, match="one of"):
        store.cast("ds", "9", "ann", "maybe")


def test_a_vote_survives_a_killed_process(tmp_path: Path) -> None:
    db = tmp_path / "votes.sqlite"
    code = (
        "import os, signal; from hybrid.curation import VoteStore; "
        f"VoteStore({str(db)!r}).cast('ds', '3', 'bob', 'real'); os.kill(os.getpid(), signal.SIGKILL)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent)
    assert proc.returncode == -9
    votes = VoteStore(db).votes("ds")
    assert votes[["candidate", "volunteer", "label"]].values.tolist() == [["3", "bob", "real"]]


def test_consensus_majority_agreement_ties_and_types() -> None:
    votes = pd.DataFrame(
        [
            ("a", "v1", "real", "sn"),
            ("a", "v2", "real", "nuclear"),
            ("a", "v3", "real", "nuclear"),
            ("a", "v4", "bogus", None),
            ("b", "v1", "real", None),
            ("b", "v2", "bogus", None),
            ("c", "v1", "skip", None),
            ("d", "v1", "bogus", None),
        ],
        columns=["candidate", "volunteer", "label", "type"],
    )
    c = consensus(votes)
    assert set(c.index) == {"a", "b", "d"}  # a skip is no label
    assert c.loc["a", "label_real"] == 1.0 and c.loc["a", "agreement"] == 0.75
    assert c.loc["a", "label_type"] == "nuclear"
    assert np.isnan(c.loc["b", "label_real"]) and c.loc["b", "agreement"] == 0.5
    assert c.loc["d", "label_real"] == 0.0 and c.loc["d", "label_type"] is None


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "split": ["train"] * 4 + ["val", "val", "test"],
            "label_real": [True, False, True, False, True, False, True],
            "label_type": ["sn", "bogus", "nuclear", "bogus", "sn", "bogus", "sn"],
            "label_source": ["truth"] * 7,
            "truth_real": [True, False, True, False, True, False, True],
        }
    )


def test_human_labels_relabel_voted_rows_and_drop_unvoted_training_rows(tmp_path: Path) -> None:
    store = VoteStore(tmp_path / "votes.sqlite")
    store.cast("ds", "0", "ann", "bogus")  # a volunteer's mistake on a real candidate
    store.cast("ds", "1", "ann", "real")  # bogus in the dataset, real without a type
    store.cast("ds", "4", "ann", "real", "variable_star")
    store.cast("ds", "6", "ann", "bogus")  # test rows are never relabelled
    store.cast("other", "2", "ann", "real")
    human = HumanLabels(store.path).for_dataset(tmp_path / "ds")
    out = human(_table(), [])
    assert list(out.index) == [0, 1, 4, 5, 6]  # unvoted training rows 2, 3 dropped
    assert out.loc[0, "label_real"] == False and out.loc[0, "label_type"] == "bogus"  # noqa: E712
    assert out.loc[1, "label_real"] == True and out.loc[1, "label_type"] == "hostless"  # noqa: E712
    assert out.loc[4, "label_type"] == "variable_star" and out.loc[5, "label_type"] == "bogus"
    assert out.loc[6, "label_real"] == True and out.loc[6, "label_source"] == "truth"  # noqa: E712
    assert list(out["label_source"]) == ["human", "human", "human", "truth", "truth"]
    m = human.metrics()
    assert m["human_labelled_train"] == 2 and m["human_labelled_val"] == 1
    assert m["human_label_error_rate"] == pytest.approx(2 / 3)  # rows 0 and 1 differ from the truth
    keep = HumanLabels(store.path, unvoted="keep").for_dataset("ds")(_table(), [])
    assert len(keep) == 7
    with pytest.raises(ValueError, match=r"no votes for dataset 'nothing'.*other"):
        HumanLabels(store.path).for_dataset("nothing")(_table(), [])


def test_curation_human_shares_the_dataset_of_curation_truth() -> None:
    human, truth = load_config(["curation=human"]), load_config([])
    assert config_hash(human) == config_hash(truth)
    curation = instantiate(human.curation)
    assert isinstance(curation, Curation) and isinstance(curation.human, HumanLabels)


def _pool(scores: np.ndarray | None, **extra: np.ndarray) -> CandidatePool:
    n = 6 if scores is None else len(scores)
    table = pd.DataFrame({"mag_psf": np.linspace(17, 20, n)}, index=[str(i) for i in range(n)])
    if scores is not None:
        table["score"] = scores
    for k, v in extra.items():
        table[k] = v
    return CandidatePool("p", table, np.zeros((n, 3, 5, 5), np.float32), {"mag_psf": "mag"})


def test_queue_orders_by_the_acquisition_function() -> None:
    scores = np.array([0.02, 0.55, 0.9, 0.35, 0.99, 0.5])
    order = priority(_pool(scores), "entropy").sort_values(ascending=False).index
    assert list(order) == ["5", "1", "3", "2", "0", "4"]  # nearest to 0.5 first
    margin = priority(_pool(scores), "margin").sort_values(ascending=False).index
    assert list(margin) == list(order)  # the same for a binary classifier
    mi = np.array([0.1, 0.0, 0.3, 0.2, 0.0, 0.05])
    bald = priority(_pool(scores, mutual_info=mi, entropy=np.ones(6)), "bald").sort_values(ascending=False)
    assert list(bald.index[:3]) == ["2", "3", "0"]
    with pytest.raises(ValueError, match="needs mutual_info"):
        priority(_pool(scores), "bald")
    with pytest.raises(ValueError, match="needs scores"):
        priority(_pool(None), "entropy")
    assert sorted(priority(_pool(None), "random").index) == [str(i) for i in range(6)]


def test_stamps_are_zscale_asinh_scaled_with_no_data_kept_apart() -> None:
    from matplotlib.image import imread

    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 5.0, (31, 31))
    image[15, 15] = 1e5  # a saturated core must not flatten the sky
    image[:, :4] = np.nan
    v = scaled(image)
    assert np.isnan(v[:, :4]).all() and np.isfinite(v[:, 4:]).all()
    assert v[15, 15] == 1.0 and np.ptp(v[20:, 10:]) > 0.5  # sky noise spans the grey range
    rgb = imread(io.BytesIO(stamp_png(image)))
    assert rgb.shape[:2] == (31, 31)
    assert not np.allclose(rgb[0, 0, :3], rgb[0, 0, 0])  # no-data pixels are coloured, not grey


@pytest.fixture(scope="module")
def session(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    dataset = Path(json.loads((tiny_bundle.parent / "run" / "metrics.json").read_text())["dataset"])
    work = tmp_path_factory.mktemp("vet")
    s, _ = open_session(
        dataset, bundle=tiny_bundle, votes=work / "votes.sqlite", work_dir=work, retire_after=2
    )
    return s


def test_pages_vote_undo_retire_and_review(session) -> None:
    from hybrid.vet.app import create_app

    client = create_app(session).test_client()
    assert session.pool.has_scores and len(session.pool) == len(candidate_keys(session.pool.table))
    assert b"Start vetting" in client.get("/").data
    first = session.queue_for("volunteer")[0]
    assert client.get("/next").location.endswith(f"/candidate/{first}")
    page = client.get(f"/candidate/{first}").data.decode()
    for part in ("science", "reference", "difference", "real-bogus score", "variable_star", "SIMBAD"):
        assert part in page
    assert client.get(f"/stamp/{first}/diff.png").data[:4] == b"\x89PNG"
    assert client.get("/candidate/no-such").status_code == 404
    r = client.post("/vote", data={"key": first, "label": "real", "type": "sn"})
    assert r.status_code == 303 and first not in session.queue_for("volunteer")
    assert first in session.queue_for("ann")  # one vote: not retired yet
    client.set_cookie("volunteer", "ann")
    client.post("/vote", data={"key": first, "label": "real"})
    assert first not in session.queue_for("carl")  # retired after two votes
    assert client.post("/undo").location.endswith(f"/candidate/{first}")
    assert first in session.queue_for("carl")
    assert client.post("/vote", data={"key": first, "label": "nonsense"}).status_code == 400
    labels = pd.read_csv(io.StringIO(client.get("/labels.csv").data.decode()), dtype={"candidate": str})
    assert labels[["candidate", "n_votes", "label_type"]].values.tolist() == [[first, 1, "sn"]]
    gallery = client.get("/gallery").data.decode()
    review = session.review()
    assert review.truth == "truth" and "False positives (bogus, scored real)" in gallery
    test = session.pool.table[session.pool.table["split"] == "test"]
    called = test["score"] >= session.threshold
    assert len(review.false_positives) == int((called & ~test["truth_real"].astype(bool)).sum())
    assert client.get("/gallery/completeness.png").data[:4] == b"\x89PNG"


def _vote_like_an_oracle(store: VoteStore, dataset: str, table: pd.DataFrame, n: int) -> list[str]:
    """Votes of the truth on the first ``n`` training candidates of ``table`` (indexed by key)."""
    train = table[table["split"] == "train"].head(n)
    for key, row in train.iterrows():
        store.cast(dataset, str(key), "oracle", "real" if row["truth_real"] else "bogus")
    return [str(k) for k in train.index]


@pytest.mark.slow
def test_run_py_trains_on_the_human_label_source(tiny_run: Path, tmp_path: Path) -> None:
    from hybrid.tasks import train

    dataset = Path(json.loads((tiny_run / "metrics.json").read_text())["dataset"])
    table = pd.read_parquet(dataset / "candidates.parquet")
    table.index = candidate_keys(table)
    store = VoteStore(tmp_path / "votes.sqlite")
    voted = _vote_like_an_oracle(store, dataset.name, table, 30)
    cfg = load_config(
        [
            *TINY_RUN,
            f"paths.cache_dir={tiny_run.parent / 'cache'}",
            f"run_dir={tmp_path / 'run'}",
            "curation=human",
            f"curation.human.votes={store.path}",
        ]
    )
    metrics = train(cfg)
    assert metrics["dataset"] == str(dataset)  # the dataset of curation=truth, not a rebuilt one
    assert metrics["n_train"] == metrics["human_labelled_train"] == len(voted)
    assert metrics["human_label_error_rate"] == 0.0


@pytest.mark.slow
def test_an_active_learning_round_retrains_and_refreshes_the_queue(session, tiny_run: Path) -> None:
    from hybrid.vet.app import create_app
    from hybrid.vet.rounds import active_round

    work = session.store.path.parent
    _vote_like_an_oracle(session.store, session.pool.name, session.pool.table, 40)
    before = session.pool.table["score"].copy()
    cfg = load_config([*TINY_RUN, f"paths.cache_dir={tiny_run.parent / 'cache'}"])
    client = create_app(session, start_round=lambda s: active_round(s, cfg, work)).test_client()
    assert client.post("/round", headers={"Accept": "application/json"}).json["state"] == "running"
    for _ in range(600):
        state = client.get("/round").json
        if state["state"] != "running":
            break
        time.sleep(0.5)
    assert state["state"] == "done", state
    run_dir = Path(state["run_dir"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["human_labelled_train"] == metrics["n_train"] == 40
    scores = pd.read_parquet(run_dir / "scores.parquet")
    assert len(scores) == len(session.pool)
    new = session.pool.table["score"]
    assert np.allclose(new.loc[scores.index], scores["score"]) and not np.allclose(new, before)
    expected = priority(session.pool, session.queue).sort_values(ascending=False, kind="stable").index
    assert list(session.order) == list(expected)
    reopened, _ = open_session(session.pool.dataset, votes=session.store.path, work_dir=work)
    assert np.allclose(reopened.pool.table["score"], new)  # a restarted page keeps the round's scores


def test_scores_files_of_hybrid_predict_are_pools(session, tiny_bundle: Path, tmp_path: Path) -> None:
    from hybrid.cli import main
    from hybrid.vet.pool import load_pool
    from tests.test_readers import PARQUET

    dataset = session.pool.dataset
    out = tmp_path / "scores.parquet"
    assert main(["predict", str(tiny_bundle), str(dataset), "--out", str(out), "--workers", "1"]) == 0
    pool = load_pool(out, work_dir=tmp_path)
    assert pool.name == dataset.name and pool.dataset == dataset  # votes go to the dataset itself
    np.testing.assert_allclose(pool.table["score"], session.pool.table["score"], rtol=1e-6)
    alerts = tmp_path / "alerts.parquet"
    assert main(["predict", str(tiny_bundle), str(PARQUET), "--out", str(alerts), "--workers", "1"]) == 0
    pool = load_pool(alerts, work_dir=tmp_path)  # real ZTF alerts: stamps read again from the source
    scores = pd.read_parquet(alerts)
    assert pool.name == "alerts" and pool.dataset is None
    assert list(pool.table.index) == scores["alert_id"].astype(str).tolist()
    assert pool.stamps.shape == (len(scores), 3, 63, 63) and pool.has_scores
    assert "magpsf" not in pool.features and pool.features["mag_psf"] == "mag"


def test_hybrid_vet_names_bad_input_without_a_traceback(tmp_path: Path, capsys, monkeypatch) -> None:
    from hybrid.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["vet", "nothing.parquet"]) == 2
    assert "nothing.parquet: neither a dataset directory nor a scores Parquet file" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()  # nothing written for bad input
    pd.DataFrame({"alert_id": ["1"], "source": ["x"]}).to_parquet(tmp_path / "s.parquet")
    assert main(["vet", str(tmp_path / "s.parquet"), "--work-dir", str(tmp_path / "w")]) == 2
    assert "s.parquet: field 'score' missing" in capsys.readouterr().err
