"""Context: DLR geometry, the index, catalogues and their errors, association, rules, sentence, configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.cosmology import Planck18
from astropy.table import Table
from hydra.utils import instantiate

from hybrid.config import load_config
from hybrid.context import (
    ASSOCIATORS,
    CONTEXT_FEATURE_UNITS,
    CONTEXT_TEXT_COLUMNS,
    CatalogError,
    CatalogSpec,
    ContextAssociator,
    KnowledgeBase,
    Rule,
    SkyIndex,
    classify,
    context_sentence,
    fractional_offset,
    load_catalog,
    separation_and_direction,
)
from hybrid.context.cosmology import distance_modulus, kpc_per_arcsec, luminosity_distance
from tests.conftest import CONF, SMALL

GALAXY_COLUMNS = {
    "ra": "ra",
    "dec": "dec",
    "mag": "mag",
    "size": "a",
    "axis_ratio": "q",
    "pa": "pa",
    "z": "z",
    "z_spec": "zk",
    "name": "name",
}


def galaxies(**cols) -> pd.DataFrame:
    base = {"ra": [150.0], "dec": [2.0], "mag": [15.0], "a": [10.0], "q": [1.0], "pa": [0.0], "z": [0.02]}
    base.update({"zk": ["spec"], "name": ["G1"]})
    base.update(cols)
    n = max(len(v) for v in base.values())
    return pd.DataFrame({k: v * n if len(v) == 1 else v for k, v in base.items()})


def kb_of(table: pd.DataFrame, **spec) -> KnowledgeBase:
    s = {"name": "test", "kind": "galaxy", "columns": GALAXY_COLUMNS, "band": "B", "completeness_mag": 18.0}
    s.update(spec)
    return KnowledgeBase.from_catalogs([s], frames={s["name"]: table})


# -- geometry --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dec", [0.0, 45.0, 85.0])
@pytest.mark.parametrize("direction", [0.0, 30.0, 135.0, 270.0])
def test_round_galaxy_r2_transient_at_4_arcsec_is_at_two_dlr(dec: float, direction: float) -> None:
    g = SkyCoord(150 * u.deg, dec * u.deg)
    t = g.directional_offset_by(direction * u.deg, 4 * u.arcsec)
    sep, dlr, d = fractional_offset(t, g, a=2 * u.arcsec, axis_ratio=1.0, pa=37 * u.deg)
    assert sep.to_value(u.arcsec) == pytest.approx(4.0, rel=1e-9)
    assert dlr.to_value(u.arcsec) == pytest.approx(2.0, rel=1e-9)
    assert float(d) == pytest.approx(2.0, rel=1e-9)


@pytest.mark.parametrize(
    ("pa", "direction", "expected"),
    [
        (0.0, 0.0, 1.0),  # along the major axis (north): DLR = a = 4"
        (0.0, 180.0, 1.0),
        (0.0, 90.0, 2.0),  # along the minor axis (east): DLR = b = 2"
        (90.0, 90.0, 1.0),  # major axis east-west
        (90.0, 0.0, 2.0),
        # 45 degrees off the major axis: DLR = a q / sqrt(q^2 cos^2 + sin^2) = 2 / sqrt(0.625)
        (0.0, 45.0, 4.0 / (2.0 / np.sqrt(0.625))),
        (30.0, 75.0, 4.0 / (2.0 / np.sqrt(0.625))),
    ],
)
def test_elongated_galaxy_dlr_along_and_against_the_major_axis(
    pa: float, direction: float, expected: float
) -> None:
    g = SkyCoord(200 * u.deg, -60 * u.deg)
    t = g.directional_offset_by(direction * u.deg, 4 * u.arcsec)
    _, _, d = fractional_offset(t, g, a=4 * u.arcsec, axis_ratio=0.5, pa=pa * u.deg)
    assert float(d) == pytest.approx(expected, rel=1e-6)


def test_separation_and_direction_agree_with_astropy() -> None:
    rng = np.random.default_rng(1)
    ra0, dec0 = rng.uniform(0, 360, 50), rng.uniform(-89, 89, 50)
    ra1, dec1 = ra0 + rng.normal(0, 0.01, 50), np.clip(dec0 + rng.normal(0, 0.01, 50), -90, 90)
    sep, pa = separation_and_direction(ra0, dec0, ra1, dec1)
    a, b = SkyCoord(ra0 * u.deg, dec0 * u.deg), SkyCoord(ra1 * u.deg, dec1 * u.deg)
    np.testing.assert_allclose(sep, a.separation(b).arcsec, rtol=1e-9)
    np.testing.assert_allclose(np.mod(pa, 2 * np.pi), a.position_angle(b).rad, atol=1e-9)


def test_sky_index_matches_brute_force_across_ra_wrap_and_pole() -> None:
    rng = np.random.default_rng(2)
    ra = np.concatenate([rng.uniform(359.9, 360, 40), rng.uniform(0, 0.1, 40), rng.uniform(0, 360, 40)])
    dec = np.concatenate([rng.uniform(-0.1, 0.1, 80), rng.uniform(89.95, 90, 40)])
    index = SkyIndex(ra, dec)
    targets = SkyCoord([0.0, 120.0] * u.deg, [0.0, 89.99] * u.deg)
    sep, idx = index.query(targets.ra.deg, targets.dec.deg, radius_arcsec=300.0, k=len(ra))
    cat = SkyCoord(ra * u.deg, dec * u.deg)
    for i, t in enumerate(targets):
        d = t.separation(cat).arcsec
        want = np.flatnonzero(d < 300.0)
        assert set(idx[i][idx[i] >= 0]) == set(want)
        np.testing.assert_allclose(np.sort(sep[i][np.isfinite(sep[i])]), np.sort(d[want]), rtol=1e-7)


# -- catalogues ------------------------------------------------------------------------------------


def test_csv_parquet_and_fits_give_the_same_standard_table(tmp_path: Path) -> None:
    table = galaxies(
        ra=[10.0, 20.0],
        dec=[1.0, -1.0],
        mag=[14.0, np.nan],
        a=[5.0, 3.0],
        q=[0.5, 1.0],
        pa=[10.0, 200.0],
        z=[0.01, np.nan],
        zk=["spec", "phot"],
        name=["A", "B"],
    )
    table.to_csv(tmp_path / "g.csv", index=False)
    table.to_parquet(tmp_path / "g.parquet", index=False)
    Table.from_pandas(table).write(tmp_path / "g.fits")
    out = [
        load_catalog({"name": "g", "path": str(tmp_path / f), "columns": GALAXY_COLUMNS})
        for f in ("g.csv", "g.parquet", "g.fits")
    ]
    for o in out[1:]:
        pd.testing.assert_frame_equal(o.drop(columns="catalog"), out[0].drop(columns="catalog"))
    o = out[0]
    assert list(o["pa"]) == [10.0, 20.0]  # position angles are folded into [0, 180)
    assert list(o["z_spec"]) == [True, False]
    assert np.isnan(o["mag"].iloc[1]) and np.isnan(o["z"].iloc[1])


def test_size_and_axis_ratio_conventions() -> None:
    t = pd.DataFrame(
        {"ra": [1.0], "dec": [1.0], "logd": [1.0], "logr": [np.log10(2.0)], "r": [2.0], "q": [0.25]}
    )
    glade_like = load_catalog(
        {
            "name": "x",
            "columns": {"ra": "ra", "dec": "dec", "size": "logd", "axis_ratio": "logr"},
            "size_log10": True,
            "size_scale": 6.0,
            "size_kind": "diameter",
            "axis_ratio_kind": "log10_a_over_b",
        },
        t,
    )
    assert glade_like["a"].iloc[0] == pytest.approx(30.0)  # D25 = 10 x 0.1' = 60", a = 30"
    assert glade_like["q"].iloc[0] == pytest.approx(0.5)
    half_light = load_catalog(
        {
            "name": "x",
            "columns": {"ra": "ra", "dec": "dec", "size": "r", "axis_ratio": "q"},
            "size_kind": "circularized",
        },
        t,
    )
    assert half_light["a"].iloc[0] == pytest.approx(4.0)  # r_circ = sqrt(a b) = a sqrt(q)


def test_empty_and_malformed_catalogues_give_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "galaxies.csv"
    galaxies().iloc[:0].to_csv(path, index=False)
    with pytest.raises(CatalogError, match=r"galaxies\.csv.*no rows"):
        load_catalog({"name": "g", "path": str(path), "columns": GALAXY_COLUMNS})
    galaxies().drop(columns="a").to_csv(path, index=False)
    with pytest.raises(
        CatalogError, match=r"galaxies\.csv: column\(s\) \['a'\] \(field\(s\) \['size'\]\) missing"
    ):
        load_catalog({"name": "g", "path": str(path), "columns": GALAXY_COLUMNS})
    galaxies(mag=["bright"]).to_csv(path, index=False)
    with pytest.raises(
        CatalogError, match=r"galaxies\.csv: column 'mag' \(field 'mag'\) must be numeric.*'bright'"
    ):
        load_catalog({"name": "g", "path": str(path), "columns": GALAXY_COLUMNS})
    galaxies(dec=[95.0]).to_csv(path, index=False)
    with pytest.raises(CatalogError, match=r"galaxies\.csv: 1 row\(s\) with missing or impossible positions"):
        load_catalog({"name": "g", "path": str(path), "columns": GALAXY_COLUMNS})
    with pytest.raises(CatalogError, match=r"nothere\.fits: catalogue file not found"):
        load_catalog({"name": "g", "path": str(tmp_path / "nothere.fits"), "columns": GALAXY_COLUMNS})
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(CatalogError, match=r"bad\.parquet: cannot read"):
        load_catalog({"name": "g", "path": str(tmp_path / "bad.parquet"), "columns": GALAXY_COLUMNS})
    with pytest.raises(CatalogError, match=r"unknown field\(s\) \['radius'\]"):
        CatalogSpec(name="g", columns={"ra": "ra", "dec": "dec", "radius": "r"})
    with pytest.raises(CatalogError, match="must name the 'dec' column"):
        CatalogSpec(name="g", columns={"ra": "ra"})


def test_empty_in_memory_catalogue_means_no_host() -> None:
    kb = kb_of(galaxies().iloc[:0])
    out = ContextAssociator().associate(SkyCoord([150.0] * u.deg, [2.0] * u.deg), kb=kb)
    assert bool(out["ctx_no_host"].iloc[0]) and out["ctx_n_galaxies"].iloc[0] == 0
    assert out[["ctx_offset_arcsec", "ctx_host_z", "ctx_nearest_star_dist"]].isna().all(axis=None)
    assert out["ctx_sentence"].iloc[0].startswith('no catalogued galaxy within 60"')


def test_deduplication_keeps_the_higher_priority_row() -> None:
    first = galaxies(ra=[150.0, 151.0], dec=[2.0, 2.0], mag=[15.0, 16.0], name=["A1", "A2"])
    second = galaxies(ra=[150.0 + 0.5 / 3600, 152.0], dec=[2.0, 2.0], mag=[15.3, 17.0], name=["B1", "B2"])
    specs = [
        {"name": "first", "columns": GALAXY_COLUMNS},
        {"name": "second", "columns": GALAXY_COLUMNS},
    ]
    kb = KnowledgeBase.from_catalogs(specs, frames={"first": first, "second": second}, dedup_radius=1.0)
    assert list(kb.galaxies["name"]) == ["A1", "A2", "B2"]
    assert list(kb.galaxies["catalog"]) == ["first", "first", "second"]
    swapped = KnowledgeBase.from_catalogs(specs[::-1], frames={"first": first, "second": second})
    assert sorted(swapped.galaxies["name"]) == ["A2", "B1", "B2"]


# -- association -----------------------------------------------------------------------------------


def test_features_have_documented_units_and_match_astropy() -> None:
    kb = kb_of(galaxies(a=[20.0], q=[0.5], pa=[0.0]))
    g = SkyCoord(150 * u.deg, 2 * u.deg)
    t = g.directional_offset_by(90 * u.deg, 5 * u.arcsec)  # east, along the minor axis (b = 10")
    out = ContextAssociator(mode="dlr").associate(t.reshape(1), mag=[17.5] * u.mag, kb=kb)
    assert list(out.columns) == [*CONTEXT_FEATURE_UNITS, *CONTEXT_TEXT_COLUMNS]
    r = out.iloc[0]
    assert r["ctx_offset_arcsec"] == pytest.approx(5.0, rel=1e-6)
    assert r["ctx_offset_dlr"] == pytest.approx(0.5, rel=1e-6)
    assert r["ctx_distmod"] == pytest.approx(Planck18.distmod(0.02).value, abs=1e-3)
    assert r["ctx_lumdist"] == pytest.approx(Planck18.luminosity_distance(0.02).to_value(u.Mpc), rel=1e-4)
    assert r["ctx_abs_mag"] == pytest.approx(17.5 - Planck18.distmod(0.02).value, abs=1e-3)
    kpc = (5 * u.arcsec * Planck18.kpc_proper_per_arcmin(0.02)).to_value(u.kpc)
    assert r["ctx_offset_kpc"] == pytest.approx(kpc, rel=1e-4)
    assert r["ctx_host_z_spec"] == 1.0 and not r["ctx_no_host"]
    assert np.isnan(r["ctx_host_prob"])  # no probabilities outside the probabilistic mode
    np.testing.assert_allclose(distance_modulus([0.02]), Planck18.distmod(0.02).value, atol=1e-3)
    np.testing.assert_allclose(kpc_per_arcsec(0.5), Planck18.kpc_proper_per_arcmin(0.5).value / 60, rtol=1e-4)
    assert np.isnan(luminosity_distance(np.nan)) and np.isnan(distance_modulus(-1.0))


def test_probabilistic_mode_uses_offset_and_redshift() -> None:
    kb = kb_of(
        galaxies(
            ra=[150.0, 150.0 + 40 / 3600],
            dec=[2.0, 2.0],
            mag=[15.0, 15.5],
            z=[0.02, 0.05],
            zk=["spec", "spec"],
            name=["near", "far"],
            a=[10.0, 10.0],
        )
    )
    g = SkyCoord(150 * u.deg, 2 * u.deg)
    pos = SkyCoord(
        [g.directional_offset_by(0 * u.deg, 3 * u.arcsec), g.directional_offset_by(0 * u.deg, 600 * u.arcsec)]
    )
    assoc = ContextAssociator(mode="probabilistic", search_radius=120.0)
    out = assoc.associate(pos, mag=[17.0, 17.0], kb=kb)
    assert out["ctx_host_name"].iloc[0] == "near" and out["ctx_host_prob"].iloc[0] > 0.9
    assert out["ctx_no_host"].iloc[1] and out["ctx_no_host_prob"].iloc[1] == pytest.approx(1.0)
    assert (out["ctx_host_prob"].fillna(0) + out["ctx_no_host_prob"] <= 1 + 1e-9).all()
    # the transient's redshift decides between the two galaxies, and rejects both when it fits neither
    mid = SkyCoord([g.directional_offset_by(90 * u.deg, 20 * u.arcsec)] * 3)
    out = assoc.associate(mid, z=[0.02, 0.05, 0.2], kb=kb)
    assert list(out["ctx_host_name"]) == ["near", "far", ""]
    assert list(out["ctx_no_host"]) == [False, False, True]


def test_sentence_reads_like_the_example() -> None:
    ngc = galaxies(
        ra=[189.0], dec=[14.0], mag=[11.32], a=[120.0], q=[0.45], pa=[23.0], z=[0.0041], name=["NGC 4568"]
    )
    kb = kb_of(ngc)
    t = SkyCoord(189 * u.deg, 14 * u.deg).directional_offset_by(23 * u.deg, 65.1 * u.arcsec)
    out = ContextAssociator(search_radius=120.0).associate(t.reshape(1), mag=[15.8], kb=kb).iloc[0]
    d = luminosity_distance(0.0041).item()
    m = 15.8 - Planck18.distmod(0.0041).value
    kpc = 65.1 * kpc_per_arcsec(0.0041).item()
    want = (
        f'likely associated with the B=11.32 mag galaxy NGC 4568 (65.1" away, probability '
        f"{out['ctx_host_prob']:.1%}); host at {d:.1f} Mpc (z=0.0041), implying absolute magnitude {m:.2f} "
        f"and a projected offset of {kpc:.2f} kpc."
    )
    assert out["ctx_sentence"] == want
    assert out["ctx_host_prob"] > 0.9
    no_z = context_sentence({**out.to_dict(), "ctx_host_z": np.nan})
    assert no_z.endswith("the host has no catalogued redshift.") and "nan" not in no_z


def test_rules_classify_first_match_and_reject_bad_syntax() -> None:
    table = pd.DataFrame(
        {
            "ctx_nearest_star_dist": [0.5, np.nan, 10.0],
            "ctx_no_host": [True, False, True],
            "cls": ["cv", "", ""],
        }
    )
    rules = [
        Rule.from_config({"name": "cv", "when": ["ctx_nearest_star_dist < 1.5", "cls == cv"]}),
        Rule.from_config({"name": "supernova", "when": ["ctx_no_host == false"]}),
        Rule.from_config({"name": "orphan"}),
    ]
    assert list(classify(table, rules)) == ["cv", "supernova", "orphan"]
    with pytest.raises(ValueError, match="expected '<column> <op> <value>'"):
        Rule.from_config({"name": "x", "when": ["ctx_offset_arcsec<1"]})
    with pytest.raises(KeyError, match="unknown column 'nope'"):
        classify(table, [Rule.from_config({"name": "x", "when": ["nope > 1"]})])


# -- configs, registry and the dataset build -------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "context").glob("*.yaml")))
def test_context_configs_compose_and_instantiate(name: str, tmp_path: Path) -> None:
    cfg = load_config([f"context={name}", f"paths.cache_dir={tmp_path}"])
    assoc = instantiate(cfg.context)
    assert isinstance(assoc, ContextAssociator) and assoc.mode == "probabilistic"
    assert assoc.catalogs or assoc.survey_catalog or assoc.nearby_sources


@pytest.mark.parametrize("name", ASSOCIATORS.names())
def test_every_associator_honours_the_contract(name: str) -> None:
    cls = ASSOCIATORS.get(name)
    assoc = cls()
    kb = kb_of(galaxies())
    out = assoc.features(pd.DataFrame({"ra": [150.0, 10.0], "dec": [2.0, 10.0], "mag_psf": [18.0, 19.0]}), kb)
    assert set(CONTEXT_FEATURE_UNITS) <= set(out.columns) and len(out) == 2
    assert out.filter(like="ctx_").columns.str.startswith("ctx_").all()


def test_simulated_datasets_carry_context_features() -> None:
    from hybrid.data.build import process_field

    # more SNe than a survey field has, so that a small frame holds enough of them
    cfg = load_config([*SMALL, "sim.shape=[384,384]", "sim.transients.sn_per_field=200"])
    c = pd.concat([process_field(cfg, f).candidates for f in range(2)], ignore_index=True)
    assert set(CONTEXT_FEATURE_UNITS) <= set(c.columns) and "ctx_sentence" in c.columns
    sn = c[c["truth_type"] == "sn"]
    asteroids = c[c["truth_type"] == "asteroid"]
    assert len(sn) >= 5 and len(asteroids) >= 5
    assert (~sn["ctx_no_host"]).mean() >= 0.8 and sn["ctx_offset_dlr"].median() < 1.5
    assert asteroids["ctx_no_host"].mean() >= 0.6
    host = ~c["ctx_no_host"]
    assert c.loc[host, "ctx_offset_arcsec"].notna().all() and c.loc[~host, "ctx_host_z"].isna().all()
    assert c["ctx_sentence"].str.len().gt(20).all()
    # injected candidates (placed on catalogued galaxies) get their context too
    cfg = load_config([*SMALL, "curation=goto_like", "curation.vetted_fraction=0"])
    c = process_field(cfg, 0).candidates
    injected = c[c["label_source"] == "injected"]
    assert len(injected) >= 10 and (~injected["ctx_no_host"]).mean() >= 0.8


def test_feature_units_follow_the_configuration_and_reach_meta(tmp_path: Path) -> None:
    default = instantiate(load_config([]).context)
    assert "ctx_nearest_agn_dist" not in default.feature_units()  # the simulated survey has no AGN
    assert {"ctx_host_prob", "ctx_nearest_star_dist"} <= set(default.feature_units())
    assert "ctx_host_prob" not in default.replace(mode="dlr").feature_units()
    glade = instantiate(load_config(["context=prost_glade", f"paths.cache_dir={tmp_path}"]).context)
    assert "ctx_nearest_star_dist" not in glade.feature_units()
    assert set(default.feature_units()) <= set(CONTEXT_FEATURE_UNITS)

    from hybrid.data.build import build_dataset
    from hybrid.data.dataset import read_dataset

    cfg = load_config([*SMALL, "data.n_fields=1", "sim.epochs_per_field=1", f"paths.cache_dir={tmp_path}"])
    ds = read_dataset(build_dataset(cfg))
    units = ds.meta["features"]
    assert {k: units[k] for k in default.feature_units()} == default.feature_units()
    assert units["ctx_offset_kpc"] == "kpc" and "context" in ds.meta["stage_seconds"]
    assert set(CONTEXT_FEATURE_UNITS) | {"ctx_sentence", "ctx_class"} <= set(ds.candidates.columns)
