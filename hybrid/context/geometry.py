"""Sky geometry of host association: separations, position angles and the directional light radius.

The directional light radius (DLR) of a galaxy towards a transient is the radius of the galaxy's
ellipse (semi-major axis ``a``, axis ratio ``q = b / a``, position angle ``pa`` east of north) in the
direction of the transient (Sullivan et al. 2006, ApJ 648, 868; Gupta et al. 2016, AJ 152, 154;
Gagliano et al. 2021, ApJ 908, 170). With ``theta`` the angle between the major axis and the
direction to the transient,

    DLR = a q / sqrt((q cos theta)^2 + sin(theta)^2),

so DLR = a along the major axis and b = q a along the minor axis. The fractional offset
``d_DLR = separation / DLR`` is 1 on the ellipse itself, whatever the galaxy's size or shape.

The array functions take plain floats in the units their names say (degrees, arcsec, radians) so that
the associator stays fast; :func:`fractional_offset` is the public, unit-aware entry point.
"""

from __future__ import annotations

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord

from hybrid.context.cosmology import ARCSEC_PER_RAD


def separation_and_direction(
    ra0: np.ndarray, dec0: np.ndarray, ra1: np.ndarray, dec1: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Separation (arcsec) and position angle (rad, east of north) of point 1 seen from point 0.

    All inputs in degrees, broadcast together. The formulas are exact on the sphere (Vincenty's
    separation, the standard position angle), as ``SkyCoord.separation`` and ``position_angle``.
    """
    a0, d0, a1, d1 = (np.radians(v) for v in (ra0, dec0, ra1, dec1))
    dra = a1 - a0
    sin_d0, cos_d0, sin_d1, cos_d1 = np.sin(d0), np.cos(d0), np.sin(d1), np.cos(d1)
    cos_dra = np.cos(dra)
    east = cos_d1 * np.sin(dra)
    north = cos_d0 * sin_d1 - sin_d0 * cos_d1 * cos_dra
    sep = np.arctan2(np.hypot(east, north), sin_d0 * sin_d1 + cos_d0 * cos_d1 * cos_dra)
    return sep * ARCSEC_PER_RAD, np.arctan2(east, north)


def directional_light_radius(
    a: np.ndarray, q: np.ndarray, pa_rad: np.ndarray, direction_rad: np.ndarray
) -> np.ndarray:
    """Radius (units of ``a``) of the ellipse (a, q = b/a, pa east of north) towards ``direction``."""
    theta = direction_rad - pa_rad
    return a * q / np.sqrt((q * np.cos(theta)) ** 2 + np.sin(theta) ** 2)


def _quantity(value: u.Quantity | float | np.ndarray, unit: u.Unit) -> np.ndarray:
    return value.to_value(unit) if isinstance(value, u.Quantity) else np.asarray(value, dtype=float)


def fractional_offset(
    transient: SkyCoord,
    galaxy: SkyCoord,
    *,
    a: u.Quantity,
    axis_ratio: float | np.ndarray = 1.0,
    pa: u.Quantity = 0.0 * u.deg,
) -> tuple[u.Quantity, u.Quantity, np.ndarray]:
    """Separation, directional light radius and d_DLR of transients from galaxies.

    Parameters
    ----------
    transient, galaxy : SkyCoord
        Positions (broadcast together).
    a : Quantity
        Semi-major axis of the galaxy's ellipse (angle; plain numbers are arcsec).
    axis_ratio : float or array
        b / a, in (0, 1].
    pa : Quantity
        Position angle of the major axis, east of north (plain numbers are degrees).

    Returns
    -------
    separation : Quantity (arcsec)
    dlr : Quantity (arcsec)
    d_dlr : ndarray
        ``separation / dlr`` (dimensionless).

    Examples
    --------
    A round galaxy of radius 2" and a transient 4" away is at two light radii:

    >>> from astropy.coordinates import SkyCoord
    >>> import astropy.units as u
    >>> g = SkyCoord(150 * u.deg, 2 * u.deg)
    >>> t = g.directional_offset_by(30 * u.deg, 4 * u.arcsec)
    >>> sep, dlr, d = fractional_offset(t, g, a=2 * u.arcsec)
    >>> round(float(d), 6)
    2.0
    """
    t = transient.icrs
    g = galaxy.icrs
    sep, direction = separation_and_direction(g.ra.deg, g.dec.deg, t.ra.deg, t.dec.deg)
    dlr = directional_light_radius(
        _quantity(a, u.arcsec), _quantity(axis_ratio, u.one), np.radians(_quantity(pa, u.deg)), direction
    )
    return sep * u.arcsec, dlr * u.arcsec, sep / dlr
