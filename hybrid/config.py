"""OmegaConf resolvers used by conf/ (registered when :mod:`hybrid` is imported)."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


def first_set(*values: Any) -> Any:
    """The first value that is not null, e.g. ``${first_set:${preprocess.stamps.crop},${data.stamp_size}}``
    (the stamp size an image encoder sees: the crop when there is one, else the full stamp)."""
    return next((v for v in values if v is not None), None)


OmegaConf.register_new_resolver("first_set", first_set, replace=True)
