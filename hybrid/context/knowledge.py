"""The context knowledge base: galaxies, stars and AGN from several catalogues, de-duplicated, indexed.

As in Sherlock (Smith et al. 2020, PASP 132, 085002), several catalogues of each kind are stacked in a
priority order: a row of a lower-priority catalogue that lies within ``dedup_radius`` of a row already
taken (from a higher-priority catalogue of the same kind) is the same source seen twice and is
dropped, so the better catalogue's measurements win. Each kind gets its own :class:`SkyIndex`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from hybrid.context.catalog import (
    KINDS,
    STANDARD_COLUMNS,
    CatalogSpec,
    completeness_limit,
    load_catalog,
)
from hybrid.context.index import SkyIndex


def _empty() -> pd.DataFrame:
    t = pd.DataFrame({c: pd.Series(dtype=float) for c in STANDARD_COLUMNS})
    for c in ("name", "cls", "catalog", "band"):
        t[c] = pd.Series(dtype=object)
    t["z_spec"] = pd.Series(dtype=bool)
    return t


def deduplicate(tables: Sequence[pd.DataFrame], radius_arcsec: float) -> pd.DataFrame:
    """Stack standard tables in priority order, dropping rows within ``radius_arcsec`` of a kept row."""
    tables = [t for t in tables if len(t)]
    kept: list[pd.DataFrame] = tables[:1]
    for t in tables[1:]:
        if radius_arcsec > 0:
            stacked = pd.concat(kept, ignore_index=True)
            index = SkyIndex(stacked["ra"].to_numpy(), stacked["dec"].to_numpy())
            t = t[~index.pairs_within(SkyIndex(t["ra"].to_numpy(), t["dec"].to_numpy()), radius_arcsec)]
        kept.append(t)
    return pd.concat(kept, ignore_index=True) if kept else _empty()


@dataclass(eq=False)
class KnowledgeBase:
    """Catalogued galaxies, stars and AGN (standard tables, see :mod:`hybrid.context.catalog`) with indexes.

    Attributes:
        galaxies, stars, agn: de-duplicated standard tables (plus a ``band`` column).
        completeness: catalogue name -> (band, limiting magnitude) of every galaxy catalogue.
        seconds: time spent loading the catalogues and building the indexes (s).
    """

    galaxies: pd.DataFrame
    stars: pd.DataFrame
    agn: pd.DataFrame
    completeness: dict[str, tuple[str, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t0 = time.perf_counter()
        self.galaxy_index = SkyIndex(self.galaxies["ra"].to_numpy(), self.galaxies["dec"].to_numpy())
        self.star_index = SkyIndex(self.stars["ra"].to_numpy(), self.stars["dec"].to_numpy())
        self.agn_index = SkyIndex(self.agn["ra"].to_numpy(), self.agn["dec"].to_numpy())
        self.seconds["index"] = time.perf_counter() - t0

    @classmethod
    def from_catalogs(
        cls,
        specs: Sequence[CatalogSpec | Mapping[str, Any]],
        *,
        frames: Mapping[str, pd.DataFrame] | None = None,
        dedup_radius: float = 1.0,
    ) -> KnowledgeBase:
        """Load catalogues (files, or in-memory ``frames`` keyed by catalogue name) in priority order.

        Args:
            specs: catalogue specs; within each kind, earlier means higher priority.
            frames: tables to use instead of files, by ``CatalogSpec.name``.
            dedup_radius: cross-match radius (arcsec) for de-duplication within a kind.
        """
        t0 = time.perf_counter()
        frames = frames or {}
        by_kind: dict[str, list[pd.DataFrame]] = {k: [] for k in KINDS}
        completeness: dict[str, tuple[str, float]] = {}
        for raw in specs:
            spec = CatalogSpec.from_config(raw)
            table = load_catalog(spec, frames.get(spec.name)).assign(band=spec.band)
            by_kind[spec.kind].append(table)
            if spec.kind == "galaxy":
                completeness[spec.name] = (spec.band, completeness_limit(table["mag"].to_numpy(), spec))
        load_s = time.perf_counter() - t0
        tables = {k: deduplicate(v, dedup_radius) for k, v in by_kind.items()}
        kb = cls(tables["galaxy"], tables["star"], tables["agn"], completeness)
        kb.seconds["load"] = load_s
        return kb

    def __repr__(self) -> str:
        return (
            f"KnowledgeBase({len(self.galaxies)} galaxies, {len(self.stars)} stars, {len(self.agn)} AGN; "
            f"catalogues {sorted(self.completeness)})"
        )
