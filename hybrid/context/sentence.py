"""A readable sentence per candidate from its context features (stored as ``ctx_sentence``).

For instance::

    likely associated with the B=11.32 mag galaxy NGC 4568 (65.1" away, probability 98.8%); host at
    18.4 Mpc (z=0.0041), implying absolute magnitude -15.26 and a projected offset of 5.81 kpc.

Parts whose numbers are undefined (NaN) are left out rather than guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


def _ok(v: Any) -> bool:
    try:
        return v is not None and bool(np.isfinite(float(v)))
    except (TypeError, ValueError):
        return False


def context_sentence(row: Mapping[str, Any]) -> str:
    """One sentence describing a candidate's context.

    Args:
        row: context features of one candidate (the ``ctx_*`` columns, including the text columns
            ``ctx_host_name``, ``ctx_host_band`` and ``ctx_class``); ``ctx_search_radius`` (arcsec),
            when present, is quoted for candidates without catalogued galaxies nearby.
    """
    get = row.get
    parts: list[str] = []
    if not bool(get("ctx_no_host", True)):
        mag, band, name = get("ctx_host_mag"), get("ctx_host_band") or "m", get("ctx_host_name") or "a galaxy"
        galaxy = f"the {band}={float(mag):.2f} mag galaxy {name}" if _ok(mag) else f"the galaxy {name}"
        where = [f'{float(get("ctx_offset_arcsec")):.1f}" away']
        if _ok(get("ctx_host_prob")):
            where.append(f"probability {float(get('ctx_host_prob')):.1%}")
        elif _ok(get("ctx_offset_dlr")):
            where.append(f"{float(get('ctx_offset_dlr')):.2f} DLR")
        text = f"likely associated with {galaxy} ({', '.join(where)})"
        z = get("ctx_host_z")
        if _ok(z):
            text += f"; host at {float(get('ctx_lumdist')):.1f} Mpc (z={float(z):.4f})"
            implied = []
            if _ok(get("ctx_abs_mag")):
                implied.append(f"absolute magnitude {float(get('ctx_abs_mag')):.2f}")
            if _ok(get("ctx_offset_kpc")):
                implied.append(f"a projected offset of {float(get('ctx_offset_kpc')):.2f} kpc")
            if implied:
                text += ", implying " + " and ".join(implied)
        else:
            text += "; the host has no catalogued redshift"
        parts.append(text + ".")
    else:
        n = get("ctx_n_galaxies")
        radius = get("ctx_search_radius")
        if _ok(n) and float(n) == 0:
            within = f' within {float(radius):.0f}"' if _ok(radius) else ""
            text = f"no catalogued galaxy{within}"
        else:
            text = "no likely host among the catalogued galaxies"
        if _ok(get("ctx_no_host_prob")):
            text += f" (probability {float(get('ctx_no_host_prob')):.1%} that the host is not catalogued)"
        parts.append(text + ".")
    if _ok(get("ctx_nearest_star_dist")):
        star = f'nearest catalogued star {float(get("ctx_nearest_star_dist")):.1f}" away'
        details = []
        if _ok(get("ctx_nearest_star_mag")):
            details.append(f"{float(get('ctx_nearest_star_mag')):.2f} mag")
        if _ok(get("ctx_nearest_star_sgscore")):
            details.append(f"sgscore {float(get('ctx_nearest_star_sgscore')):.2f}")
        parts.append(star[0].upper() + star[1:] + (f" ({', '.join(details)})" if details else "") + ".")
    if get("ctx_class"):
        parts.append(f"Context class: {get('ctx_class')}.")
    return " ".join(parts)


def context_sentences(table: pd.DataFrame) -> np.ndarray:
    """:func:`context_sentence` of every row of a table of context features."""
    records = table.to_dict("records")
    return np.array([context_sentence(r) for r in records], dtype=object)
