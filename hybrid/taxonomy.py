"""The label vocabulary shared by the simulator, curation, the dataset and the models."""

from __future__ import annotations

#: Transient types; index 0 is "bogus" so that ``type != 0`` means real. They follow contextual
#: classification as brokers do it (Sherlock, Smith et al. 2020, PASP 132, 085002: SN, NT, AGN, VS, CV,
#: ORPHAN, plus solar-system objects and artifacts): ``sn`` supernova-like (offset from a galaxy),
#: ``nuclear`` nuclear transient (TDE, AGN flare), ``variable_star``, ``asteroid``, ``hostless``
#: (orphan), ``agn`` (a flickering active nucleus, brightening or fading against the reference) and
#: ``cv`` (a dwarf nova in outburst on a faint star). New types are appended, so indices stay stable.
TRANSIENT_TYPES: tuple[str, ...] = (
    "bogus",
    "sn",
    "nuclear",
    "variable_star",
    "asteroid",
    "hostless",
    "agn",
    "cv",
)

#: What a bogus detection came from (the simulator's truth; "noise" when nothing explains it).
BOGUS_KINDS: tuple[str, ...] = (
    "noise",
    "cosmic_ray",
    "hot_pixel",
    "bad_column",
    "saturation",
    "star_residual",
    "galaxy_residual",
    "edge",
)

#: How a row's label was obtained.
LABEL_SOURCES: tuple[str, ...] = ("truth", "algorithmic", "injected", "human")


def type_index(name: str) -> int:
    try:
        return TRANSIENT_TYPES.index(name)
    except ValueError:
        raise KeyError(f"unknown transient type {name!r}; known: {', '.join(TRANSIENT_TYPES)}") from None
