"""The knowledge-base context on the real fixture alerts (conf/context/ztf_real.yaml).

The expected matches were checked by hand against Fink's SIMBAD cross-match (``cdsxmatch``, kept in
the fixture) and the catalogue rows in tests/fixtures/context/fink/ (see make_fink_fixtures.py).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from hydra.utils import instantiate

from hybrid.cli import load_config, main
from hybrid.context import CONTEXT_FEATURE_UNITS, ContextAssociator
from hybrid.context.catalog import CatalogSpec, load_catalog
from hybrid.data.dataset import read_dataset
from hybrid.data.readers import alerts_to_dataset, read_alerts
from hybrid.serving import Predictor

FIXTURES = Path(__file__).parent / "fixtures"
CATALOGS = FIXTURES / "context" / "fink"
ALERTS = FIXTURES / "ztf_alerts" / "alerts.parquet"
ON_CATALOGUED = FIXTURES / "ztf_alerts" / "context_alerts.parquet"

#: object -> (ctx_class, catalogue of the nearest star, its class, AGN name, host name)
EXPECTED = {
    "ZTF17aaagbjq": ("variable_star", "VSX", "EB", "", ""),
    "ZTF17aabuuvu": ("cv", "VSX", "UGSU+E", "", ""),
    "ZTF18aavyrwh": ("cv", "GCVS", "ZAND", "", ""),
    "ZTF17aadptpa": ("agn", "PS1", "", "1ES 0647+250", ""),
    "ZTF18abvydni": ("agn", "PS1", "", "3HSPJ002611.6-073115", ""),
    "ZTF21abouxex": ("nuclear", "", "", "", "169940"),
    "ZTF18abtqapc": ("supernova", "PS1", "", "", "PGC070739"),
    "ZTF18abslpjy": ("orphan", "", "", "", ""),
}


def fixture_context(**changes: object) -> ContextAssociator:
    """conf/context/ztf_real.yaml with its catalogue files replaced by the excerpts of the fixtures."""
    cfg = load_config(["context=ztf_real"]).context
    for spec in cfg.catalogs:
        spec.path = str(CATALOGS / Path(spec.path).name)
    return instantiate(cfg, **changes)


@pytest.fixture(scope="module")
def context() -> ContextAssociator:
    return fixture_context()


@pytest.fixture(scope="module")
def ingested(context: ContextAssociator, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    out = alerts_to_dataset([ON_CATALOGUED, ALERTS], tmp_path_factory.mktemp("ctx") / "real", context=context)
    return read_dataset(out).candidates.set_index("object_id")


def test_every_catalogue_of_the_config_loads_with_its_column_map(context: ContextAssociator) -> None:
    kb = context.knowledge_base()
    assert set(kb.stars["catalog"]) == {"VSX", "GCVS"}
    assert set(kb.agn["catalog"]) == {"4LAC", "3HSP"}
    assert set(kb.galaxies["catalog"]) == {"GLADE+", "Mangrove"}
    # 3HSP positions are sexagesimal text; Mangrove gives distances, converted to redshifts
    hsp = load_catalog(next(s for s in context.catalogs if s.name == "3HSP"))
    first = pd.read_csv(CATALOGS / "3hsp.csv", skipinitialspace=True).rename(columns=str.strip).iloc[0]
    c = SkyCoord(first["R.A."], first["Dec"], unit=(u.hourangle, u.deg))
    assert hsp["ra"].iloc[0] == pytest.approx(c.ra.deg) and hsp["dec"].iloc[0] == pytest.approx(c.dec.deg)
    mangrove = kb.galaxies[kb.galaxies["catalog"] == "Mangrove"]
    from astropy.cosmology import Planck18

    raw = pd.read_parquet(CATALOGS / "mangrove_filtered.parquet").set_index("HyperLEDA_name")
    for _, row in mangrove.iterrows():
        assert Planck18.luminosity_distance(row["z"]).to_value("Mpc") == pytest.approx(
            raw.loc[row["name"], "lum_dist"], rel=1e-3
        )


def test_knowledge_base_context_on_the_real_fixture_alerts(ingested: pd.DataFrame) -> None:
    """Alerts on catalogued sources get the catalogue's crossmatch and Sherlock's class for it."""
    got = ingested.loc[list(EXPECTED)]
    cols = ["ctx_class", "ctx_nearest_star_catalog", "ctx_nearest_star_class"]
    cols += ["ctx_nearest_agn_name", "ctx_host_name"]
    for obj, expected in EXPECTED.items():
        assert tuple(got.loc[obj, cols]) == expected, obj
    # on a variable star, a blazar: matched within an arcsecond
    assert got.loc["ZTF17aaagbjq", "ctx_nearest_star_dist"] < 0.5
    assert got.loc["ZTF17aadptpa", "ctx_nearest_agn_dist"] < 0.1
    assert got.loc["ZTF21abouxex", "ctx_offset_arcsec"] < 0.5
    assert got.loc["ZTF18abslpjy", ["ctx_nearest_star_dist", "ctx_nearest_agn_dist"]].isna().all()


def test_star_distances_are_the_separations_from_the_catalogue_rows(ingested: pd.DataFrame) -> None:
    vsx = pd.read_parquet(CATALOGS / "vsx.parquet")
    stars = SkyCoord(vsx["RAJ2000"].to_numpy(), vsx["DEJ2000"].to_numpy(), unit="deg")
    on_vsx = ingested[ingested["ctx_nearest_star_catalog"] == "VSX"]
    assert len(on_vsx) == 2
    alerts = SkyCoord(on_vsx["ra"].to_numpy(), on_vsx["dec"].to_numpy(), unit="deg")
    _, sep, _ = alerts.match_to_catalog_sky(stars)
    np.testing.assert_allclose(on_vsx["ctx_nearest_star_dist"], sep.arcsec, atol=1e-6)


def test_alerts_without_catalogued_stars_take_their_ps1_star(ingested: pd.DataFrame) -> None:
    """The six alerts of alerts.parquet lie on PS1 point sources and on no VSX / GCVS star."""
    raw = pd.json_normalize(pd.read_parquet(ALERTS, columns=["candidate"])["candidate"])
    got = ingested.loc[pd.read_parquet(ALERTS, columns=["objectId"])["objectId"]]
    assert (got["ctx_nearest_star_catalog"] == "PS1").all()
    np.testing.assert_allclose(got["ctx_nearest_star_dist"], raw["distpsnr1"])
    np.testing.assert_allclose(got["ctx_nearest_star_sgscore"], raw["sgscore1"])
    assert (got["ctx_class"] == "variable_star").all()
    # without the alert's own sources only the catalogues count: nothing within 1.5"
    alone = fixture_context(nearby_sources=None)
    assert (alone.features(read_alerts(ALERTS).candidates)["ctx_nearest_star_dist"].fillna(99) > 1.5).all()


def test_without_a_context_nothing_changes(tmp_path: Path) -> None:
    out = read_dataset(alerts_to_dataset(ALERTS, tmp_path / "plain")).candidates
    assert out[list(CONTEXT_FEATURE_UNITS)].isna().all(axis=None)
    assert "ctx_class" not in out.columns
    assert json.loads((tmp_path / "plain" / "meta.json").read_text())["context"] is None


def test_cli_context_names_missing_catalogues_and_unknown_configs(
    ingested: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = ingested.loc["ZTF18abtqapc"]
    assert (
        host[["ctx_offset_arcsec", "ctx_offset_dlr", "ctx_host_z", "ctx_lumdist", "ctx_abs_mag"]]
        .notna()
        .all()
    )
    assert ingested["ctx_no_host"].isin([0.0, 1.0]).all()
    monkeypatch.setenv("HYBRID_CACHE", str(tmp_path))  # an empty cache: no catalogue fetched
    with pytest.raises(SystemExit):
        main(["ingest", str(ALERTS), "--out", str(tmp_path / "x"), "--context", "ztf_real"])
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ingest", str(ALERTS), "--out", str(tmp_path / "x"), "--context", "no_such_context"])


def test_predict_with_a_context_scores_and_classifies_like_ingest(
    tiny_bundle: Path, context: ContextAssociator, ingested: pd.DataFrame
) -> None:
    # worker processes get the associator pickled as its options, and load the catalogues themselves
    copy = pickle.loads(pickle.dumps(context))
    assert copy._kb is None and copy.catalogs == context.catalogs
    with Predictor(tiny_bundle, workers=1, batch_size=4, context=copy) as predictor:
        scores = pd.concat([t for t, _ in predictor.iter_scores([ON_CATALOGUED, ALERTS])])
    scores = scores.set_index("object_id")
    assert scores["ctx_class"].to_dict() == ingested.loc[scores.index, "ctx_class"].to_dict()
    with Predictor(tiny_bundle, workers=1) as plain:
        assert "ctx_class" not in plain.score(read_alerts(ALERTS, stamp_size=plain.stamp_size)).columns


def test_sexagesimal_catalogue_with_bad_text_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text('name, ra, dec\n"a", "00 01 16.37", "+29 35 34.0"\n"b", "twelve", "+29 35 34.0"\n')
    spec = CatalogSpec(
        name="bad", kind="agn", path=str(path), columns={"ra": "ra", "dec": "dec"}, sexagesimal=True
    )
    with pytest.raises(ValueError, match="'ra'"):
        load_catalog(spec)


def test_ps1_only_context_needs_no_catalogue_file() -> None:
    """conf/context/ztf_ps1.yaml: the nearest-star features from the alert's own PS1 sources alone."""
    assoc = instantiate(load_config(["context=ztf_ps1"]).context)
    raw = pd.json_normalize(pd.read_parquet(ALERTS, columns=["candidate"])["candidate"])
    out = assoc.features(read_alerts(ALERTS).candidates)
    np.testing.assert_allclose(out["ctx_nearest_star_dist"], raw["distpsnr1"])
    assert (out["ctx_class"] == "variable_star").all() and out["ctx_nearest_agn_dist"].isna().all()
