"""Context of transient candidates: host galaxies, distances, offsets and nearby stars.

What the stamps cannot show, catalogues can: whether a candidate sits on a galaxy (and how far out,
in units of the galaxy's light radius), at what distance, how bright that makes it, and whether a star
or an AGN is underneath. This package provides

* a knowledge base of catalogued galaxies, stars and AGN from CSV, Parquet or FITS files (or a survey's
  own catalogue in memory) with column maps, de-duplication across catalogues in a priority order,
  and a spatial index (:class:`KnowledgeBase`, :class:`CatalogSpec`, :class:`SkyIndex`);
* host association by directional light radius or by posterior probability including a
  "host not in the catalogue" hypothesis (:class:`ContextAssociator`, :mod:`hybrid.context.priors`);
* features with units for the tabular encoder (:data:`CONTEXT_FEATURE_UNITS`), Sherlock-style context
  classes from rules (:mod:`hybrid.context.rules`) and a readable sentence (:func:`context_sentence`).

It does not fetch catalogues over the network at association time; dataset recipes in ``datasets/``
fetch files once into the cache.
"""

from hybrid.context.associate import (
    ASSOCIATORS,
    CONTEXT_FEATURE_UNITS,
    CONTEXT_TEXT_COLUMNS,
    MODES,
    ContextAssociator,
)
from hybrid.context.catalog import CatalogError, CatalogSpec, load_catalog
from hybrid.context.geometry import directional_light_radius, fractional_offset, separation_and_direction
from hybrid.context.index import SkyIndex
from hybrid.context.knowledge import KnowledgeBase, deduplicate
from hybrid.context.priors import HostPriors, LuminosityFunction, OffsetPrior, RedshiftModel
from hybrid.context.rules import Rule, classify
from hybrid.context.sentence import context_sentence, context_sentences

__all__ = [
    "ASSOCIATORS",
    "CONTEXT_FEATURE_UNITS",
    "CONTEXT_TEXT_COLUMNS",
    "MODES",
    "CatalogError",
    "CatalogSpec",
    "ContextAssociator",
    "HostPriors",
    "KnowledgeBase",
    "LuminosityFunction",
    "OffsetPrior",
    "RedshiftModel",
    "Rule",
    "SkyIndex",
    "classify",
    "context_sentence",
    "context_sentences",
    "deduplicate",
    "directional_light_radius",
    "fractional_offset",
    "load_catalog",
    "separation_and_direction",
]
