"""The label vocabulary shared by the simulator, curation, the dataset and the models."""

from __future__ import annotations

#: Transient types; index 0 is "bogus" so that ``type != 0`` means real.
TRANSIENT_TYPES: tuple[str, ...] = ("bogus", "sn", "nuclear", "variable_star", "asteroid", "hostless")

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
