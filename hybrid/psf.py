"""Point-spread functions: the spatially varying Moffat model of the simulator and image PSFs.

Every PSF honours one small contract used by subtraction and detection:

* ``image_at(x, y, size)`` -- a ``size x size`` kernel (odd size, unit sum) centred on the central
  pixel, valid at detector position ``(x, y)`` (pixels, 0-based, numpy order is ``[y, x]``);
* ``fwhm_at(x, y)`` -- full width at half maximum in pixels.

The Moffat profile (Moffat 1969, A&A 3, 455) describes seeing-limited stars better than a Gaussian
because of its power-law wings; beta ~ 2.5-4.8 is typical of atmospheric turbulence (Trujillo et al.
2001, MNRAS 328, 977).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy.optimize import least_squares


class PSF(Protocol):
    def image_at(self, x: float, y: float, size: int) -> np.ndarray: ...

    def fwhm_at(self, x: float, y: float) -> float: ...


def moffat_alpha(fwhm: np.ndarray | float, beta: np.ndarray | float) -> np.ndarray | float:
    """Moffat core width alpha (pixels) for a FWHM (pixels): FWHM = 2 alpha sqrt(2^(1/beta) - 1)."""
    return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def _moffat(
    dx: np.ndarray, dy: np.ndarray, alpha_a: np.ndarray, alpha_b: np.ndarray, theta: np.ndarray, beta: float
) -> np.ndarray:
    """Unit-integral elliptical Moffat surface brightness at offsets (dx, dy) (pixels)."""
    c, s = np.cos(theta), np.sin(theta)
    u = dx * c + dy * s
    v = -dx * s + dy * c
    r2 = (u / alpha_a) ** 2 + (v / alpha_b) ** 2
    # exp(-beta log1p(r2)) is several times faster than a power in float32
    return (beta - 1.0) / (np.pi * alpha_a * alpha_b) * np.exp(-beta * np.log1p(r2))


@dataclass(frozen=True)
class MoffatPSF:
    """Elliptical Moffat PSF whose width and shape vary smoothly across the detector.

    With normalised detector coordinates ``u, v`` in [-1, 1] (centre 0):

    * ``fwhm(u, v) = fwhm * (1 + fwhm_slope[0] u + fwhm_slope[1] v + fwhm_curvature (u^2 + v^2))``
    * ``e1 = e1 + astigmatism (u^2 - v^2) / 2``, ``e2 = e2 + astigmatism u v`` -- the radial
      elongation pattern of field astigmatism seen in wide-field imagers.

    The ellipticity ``e = sqrt(e1^2 + e2^2) = 1 - b/a`` keeps the geometric-mean FWHM fixed.

    Args:
        fwhm: FWHM at the detector centre (pixels).
        beta: Moffat power index.
        shape: detector shape ``(ny, nx)`` (pixels) that defines the normalised coordinates.
    """

    fwhm: float
    beta: float = 3.0
    shape: tuple[int, int] = (1024, 1024)
    e1: float = 0.0
    e2: float = 0.0
    fwhm_slope: tuple[float, float] = (0.0, 0.0)
    fwhm_curvature: float = 0.0
    astigmatism: float = 0.0
    _cache: dict = field(default_factory=dict, init=False, compare=False, repr=False, hash=False)

    def params_at(
        self, x: np.ndarray | float, y: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """FWHM, major and minor core widths alpha_a, alpha_b (pixels) and angle (rad) at (x, y)."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        ny, nx = self.shape
        u = (x - (nx - 1) / 2) / ((nx - 1) / 2)
        v = (y - (ny - 1) / 2) / ((ny - 1) / 2)
        fwhm = self.fwhm * (
            1.0 + self.fwhm_slope[0] * u + self.fwhm_slope[1] * v + self.fwhm_curvature * (u * u + v * v)
        )
        e1 = self.e1 + self.astigmatism * (u * u - v * v) / 2.0
        e2 = self.e2 + self.astigmatism * u * v
        e = np.clip(np.hypot(e1, e2), 0.0, 0.6)
        theta = 0.5 * np.arctan2(e2, e1)
        q = 1.0 - e
        alpha = moffat_alpha(fwhm, self.beta)
        return fwhm, alpha / np.sqrt(q), alpha * np.sqrt(q), theta

    def fwhm_at(self, x: float, y: float) -> float:
        return float(self.params_at(x, y)[0])

    def stamps(
        self, x: np.ndarray, y: np.ndarray, size: int, oversample: int = 3
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixel-integrated unit-flux PSF stamps for sources at (x, y).

        Returns ``(stamps, x0, y0)``: stamps of shape (N, size, size) and the integer detector
        coordinates of each stamp's lower-left pixel. The flux outside the stamp is lost, as in an
        aperture, so large stamps must be used for bright sources.
        """
        x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
        half = size // 2
        x0 = np.rint(x).astype(int) - half
        y0 = np.rint(y).astype(int) - half
        fwhm, *shape = (p.astype(np.float32) for p in self.params_at(x, y))
        frac_x, frac_y = (x0 - x).astype(np.float32), (y0 - y).astype(np.float32)
        prof = self._sample(frac_x, frac_y, 0, size, shape, 1)
        # pixel integration matters where the profile is curved: oversample the core only
        core = min(size, 2 * int(np.ceil(1.5 * float(fwhm.max()))) + 1)
        lo = half - core // 2
        if oversample > 1:
            prof[:, lo : lo + core, lo : lo + core] = self._sample(
                frac_x, frac_y, lo, core, shape, oversample
            )
        return prof, x0, y0

    def _sample(
        self, frac_x: np.ndarray, frac_y: np.ndarray, start: int, size: int, shape: list, oversample: int
    ) -> np.ndarray:
        """Pixel averages of the unit-flux profile over pixels ``start .. start + size`` of each stamp."""
        aa, ab, th = (p[:, None, None] for p in shape)
        sub = (np.arange(oversample) + 0.5) / oversample - 0.5
        grid = (start + np.arange(size)[:, None] + sub[None, :]).ravel().astype(np.float32)
        dx = grid[None, None, :] + frac_x[:, None, None]  # (N, 1, size*os)
        dy = grid[None, :, None] + frac_y[:, None, None]  # (N, size*os, 1)
        prof = _moffat(dx, dy, aa, ab, th, np.float32(self.beta))
        if oversample > 1:
            prof = prof.reshape(len(frac_x), size, oversample, size, oversample).sum(axis=(2, 4))
            prof *= np.float32(1.0 / oversample**2)
        return prof

    def image_at(self, x: float, y: float, size: int) -> np.ndarray:
        """Unit-sum kernel of odd ``size`` centred on the central pixel, valid at (x, y)."""
        key = (round(float(x), 1), round(float(y), 1), size)
        if key not in self._cache:
            cx, cy = np.floor(x), np.floor(y)  # centre the kernel on a pixel centre
            stamp = self.stamps(np.array([cx]), np.array([cy]), size)[0][0].astype(np.float64)
            self._cache[key] = stamp / stamp.sum()
        return self._cache[key]


@dataclass(frozen=True)
class ImagePSF:
    """A PSF known as a single pixelised kernel (for instance the PSF of a ZOGY difference image)."""

    kernel: np.ndarray

    def image_at(self, x: float, y: float, size: int) -> np.ndarray:
        k = self.kernel
        n = k.shape[0]
        if size <= n:
            lo = (n - size) // 2
            out = k[lo : lo + size, lo : lo + size]
        else:
            pad = (size - n) // 2
            out = np.pad(k, pad)
        return out / out.sum()

    def fwhm_at(self, x: float, y: float) -> float:
        return fit_moffat(self.kernel)[0]


def render_points(
    image: np.ndarray,
    psf: MoffatPSF,
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    *,
    floor: float = 0.02,
    max_size: int = 401,
) -> None:
    """Add point sources of total ``flux`` (image units) at (x, y) to ``image`` in place.

    Each source gets a stamp large enough that its profile falls below ``floor`` (image units) at the
    stamp edge, so bright stars keep their Moffat wings. Sources are rendered in groups of equal stamp
    size, vectorised over the group.
    """
    x, y, flux = (np.atleast_1d(np.asarray(a, float)) for a in (x, y, flux))
    if x.size == 0:
        return
    fwhm, aa, _, _ = psf.params_at(x, y)
    peak = np.abs(flux) * (psf.beta - 1.0) / (np.pi * aa * aa)
    radius = aa * np.sqrt(np.maximum((peak / floor) ** (1.0 / psf.beta) - 1.0, 0.0))
    radius = np.clip(np.maximum(radius, 2.5 * fwhm), 4, max_size // 2)
    sizes = 2 * (2 ** np.ceil(np.log2(radius))).astype(int) + 1  # few distinct sizes -> few groups
    sizes = np.minimum(sizes, max_size)
    for size in np.unique(sizes):
        idx = np.flatnonzero(sizes == size)
        for chunk in np.array_split(idx, max(1, int(idx.size * size * size // 2_000_000) + 1)):
            stamps, x0, y0 = psf.stamps(x[chunk], y[chunk], int(size))
            stamps *= flux[chunk, None, None].astype(np.float32)
            for stamp, sx, sy in zip(stamps, x0, y0, strict=True):
                add_stamp(image, stamp, int(sx), int(sy))


def add_stamp(image: np.ndarray, stamp: np.ndarray, x0: int, y0: int) -> None:
    """Add ``stamp`` to ``image`` with its lower-left pixel at (x0, y0), clipped to the image."""
    ny, nx = image.shape
    sy, sx = stamp.shape
    ys, xs = max(0, -y0), max(0, -x0)
    ye, xe = min(sy, ny - y0), min(sx, nx - x0)
    if ye <= ys or xe <= xs:
        return
    image[y0 + ys : y0 + ye, x0 + xs : x0 + xe] += stamp[ys:ye, xs:xe]


def fit_moffat(stamp: np.ndarray, beta: float | None = None, oversample: int = 3) -> tuple[float, float]:
    """Fit a circular, pixel-integrated Moffat profile to a background-subtracted stamp of one source.

    Returns ``(fwhm, beta)`` in pixels. With ``beta`` given, only the width is fitted. The model is
    averaged over each pixel, so the FWHM is that of the PSF before pixelisation.
    """
    stamp = np.asarray(stamp, float)
    ny, nx = stamp.shape
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    yy = (np.arange(ny)[:, None] + sub[None, :]).ravel()[:, None]
    xx = (np.arange(nx)[:, None] + sub[None, :]).ravel()[None, :]
    total = stamp.sum()
    gy, gx = np.mgrid[:ny, :nx]
    cx0, cy0 = (stamp * gx).sum() / total, (stamp * gy).sum() / total

    def model(p: np.ndarray) -> np.ndarray:
        flux, cx, cy, fwhm = p[:4]
        b = beta if beta is not None else p[4]
        a = moffat_alpha(abs(fwhm), b)
        r2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / a**2
        prof = flux * (b - 1) / (np.pi * a * a) * (1 + r2) ** (-b)
        return prof.reshape(ny, oversample, nx, oversample).mean(axis=(1, 3))

    p0 = [total, cx0, cy0, 3.0] + ([] if beta is not None else [3.0])
    lower = [0, 0, 0, 0.3] + ([] if beta is not None else [1.2])
    upper = [np.inf, nx, ny, 50] + ([] if beta is not None else [20])
    res = least_squares(lambda p: (model(p) - stamp).ravel(), p0, bounds=(lower, upper))
    return float(abs(res.x[3])), float(beta if beta is not None else res.x[4])
