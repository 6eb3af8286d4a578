"""Alard-Lupton PSF matching: a spatially varying convolution kernel fitted on star stamps.

Alard & Lupton (1998, ApJ 503, 325) model the broader image ``T`` ("target") as the sharper image
``I`` convolved with a kernel plus a differential background, ``T ≈ I ⊗ K_xy + B(x, y)``, and fit
the kernel by linear least squares on stamps around bright stars. The kernel is a sum of basis
functions, Gaussians times polynomials in the kernel coordinates ``(u, v)``:

    K(u, v) = sum_j a_j B_j(u, v),   B_j = exp(-(u^2 + v^2) / (2 sigma_i^2)) u^p v^q,   p + q <= d_i

(here by default three Gaussians, sigma = 0.7, 1.5, 3 px with degrees 6, 4, 2: 49 functions). Alard
(2000, A&AS 144, 363) lets the coefficients vary over the detector, ``a_j(x, y)`` polynomials of
``spatial_order`` in the detector coordinates, which absorbs PSF variation and small registration
errors. As in Alard (2000) the first basis function carries the flux: it is normalised to unit sum
and every other function with a non-zero sum has the first one subtracted, so the kernel sum -- the
photometric scale -- is the first coefficient alone, constant unless ``scale_order > 0``.

Fitting: stars are found with sep on the reference (:mod:`hybrid.subtraction.stars`); each stamp's
convolution with every basis function is one matrix product of the stamp's pixel patches; the
normal equations are assembled with the spatial polynomials as Kronecker factors and solved with
numpy. Stamps whose chi^2 per pixel lies more than ``clip_sigma`` robust sigmas above the median
(variable stars, transients, cosmic rays, blends) are rejected and the fit repeated.

Applying the spatially varying kernel costs one FFT convolution per spatial term, not one per basis
function: ``I ⊗ K_xy = sum_t P_t(x, y) (I ⊗ K_t)`` with ``K_t = sum_j a_jt B_j`` and ``P_t`` the
spatial monomials (6 for ``spatial_order=2``).

Units and direction. ``convolve="auto"`` convolves the exposure with the smaller PSF FWHM at the frame
centre (convolving the broader one would need a deconvolution):

* reference convolved: ``D = N - (R ⊗ K + B)``; the kernel sum is the flux ratio science/reference,
  so ``D`` is in science ADU; ``V = V_N + V_R ⊗ K^2``; the PSF of ``D`` is the science PSF;
* science convolved: ``R ≈ N ⊗ K + B`` and ``D = (N ⊗ K + B - R) / s(x, y)`` with ``s`` the kernel
  sum (reference ADU per science ADU), which brings ``D`` back to science ADU; ``V = (V_N ⊗ K^2 +
  V_R) / s^2``; the PSF of ``D`` is the reference PSF.

Either way a transient of science flux ``f`` has flux ``f`` in ``D``, and the zero points are not
used (the fitted scale replaces them; ``meta["scale_zero_point"]`` gives the zero-point value for
comparison). ``V ⊗ K^2`` uses the kernel at the frame centre, rescaled per pixel by ``sum K_xy^2``
relative to the centre. The convolution correlates neighbouring pixels, which a per-pixel variance
does not describe. Pixels within the kernel half-size of the frame edge are flagged ``EDGE`` (their
convolution lacks the pixels beyond the edge) and ``NO_DATA`` is grown by the same amount.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.fft as sfft
import scipy.linalg
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage
from scipy.signal import fftconvolve
from threadpoolctl import threadpool_limits

from hybrid.exposure import Difference, Exposure, InvalidExposureError, Mask, adu_ratio, check_aligned
from hybrid.psf import PSF, fit_moffat
from hybrid.stats import MAD_TO_SIGMA
from hybrid.subtraction import SUBTRACTORS, Subtractor
from hybrid.subtraction.stars import StarSelection, require_stars, select_stars
from hybrid.subtraction.zogy import check_background, crop_kernel, embed_kernel

# source windows (n, S + 2h, S + 2h), target and weight stamps (n, S*S), stamp centres x and y
Stamps = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def monomials(order: int) -> list[tuple[int, int]]:
    """Exponents ``(a, b)`` of ``u^a v^b`` with ``a + b <= order``, by increasing total degree."""
    return [(a, d - a) for d in range(order + 1) for a in range(d, -1, -1)]


def gaussian_basis(half_size: int, sigmas: tuple[float, ...], degrees: tuple[int, ...]) -> np.ndarray:
    """Alard-Lupton basis images ``(n_basis, 2 half_size + 1, 2 half_size + 1)``, indexed ``[j, v, u]``.

    Basis 0 (the first Gaussian, ``p = q = 0``) has unit sum; the other functions with a non-zero
    sum are normalised and have basis 0 subtracted (zero sum); all but basis 0 have unit L2 norm,
    which only conditions the normal equations.
    """
    u = np.arange(-half_size, half_size + 1, dtype=np.float64)
    images = []
    for sigma, degree in zip(sigmas, degrees, strict=True):
        g = np.exp(-0.5 * (u / sigma) ** 2)
        for p, q in monomials(int(degree)):
            images.append(np.outer(g * u**q, g * u**p))  # rows v (power q), columns u (power p)
    basis = np.array(images)
    basis[0] /= basis[0].sum()
    for j in range(1, len(basis)):
        total = basis[j].sum()
        if abs(total) > 1e-12 * np.abs(basis[j]).sum():
            basis[j] = basis[j] / total - basis[0]
        basis[j] /= np.sqrt((basis[j] ** 2).sum())
    return basis


@dataclass(frozen=True)
class KernelSolution:
    """A fitted spatially varying kernel ``K(u, v; x, y) = sum_t P_t(x, y) K_t(u, v)`` and background.

    ``P_t`` are the monomials ``u^a v^b`` of the normalised detector coordinates ``u = (x - cx) / hx``,
    ``v = (y - cy) / hy`` (both in [-1, 1] over the frame).
    """

    basis: np.ndarray  # (n_basis, K, K)
    coeffs: np.ndarray  # (n_terms, n_basis)
    terms: tuple[tuple[int, int], ...]
    background_coeffs: np.ndarray  # (n_background_terms,)
    background_terms: tuple[tuple[int, int], ...]
    shape: tuple[int, int]  # detector (ny, nx)
    convolved: str  # "reference" or "science"

    @property
    def half_size(self) -> int:
        return self.basis.shape[1] // 2

    def normalised(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        ny, nx = self.shape
        hx, hy = max((nx - 1) / 2.0, 1.0), max((ny - 1) / 2.0, 1.0)
        return (np.asarray(x, float) - (nx - 1) / 2.0) / hx, (np.asarray(y, float) - (ny - 1) / 2.0) / hy

    def term_kernels(self) -> np.ndarray:
        """``K_t``: one kernel image per spatial term, ``(n_terms, K, K)``."""
        return np.einsum("tj,jyx->tyx", self.coeffs, self.basis)

    def kernel_at(self, x: float, y: float) -> np.ndarray:
        """The kernel image at detector position (x, y), indexed ``[v, u]`` (centre at ``[K//2, K//2]``)."""
        u, v = self.normalised(x, y)
        weights = np.array([float(u) ** a * float(v) ** b for a, b in self.terms])
        return np.einsum("t,tyx->yx", weights, self.term_kernels())

    def scale_at(self, x: float, y: float) -> float:
        """Photometric scale: the kernel sum at (x, y) (target ADU per convolved-image ADU)."""
        return float(self.kernel_at(x, y).sum())

    def background_at(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        u, v = self.normalised(x, y)
        return sum(
            c * u**a * v**b for c, (a, b) in zip(self.background_coeffs, self.background_terms, strict=True)
        )


def _polynomial_image(
    coeffs: dict[tuple[int, int], float], u: np.ndarray, v: np.ndarray, dtype: type = np.float32
) -> np.ndarray:
    """``sum c_ab u^a v^b`` on the grid of 1-D axes ``u`` (columns) and ``v`` (rows)."""
    out = np.zeros((v.size, u.size), dtype)
    for (a, b), c in coeffs.items():
        if c != 0.0:
            out += np.outer(c * v**b, u**a).astype(dtype)
    return out


@dataclass(frozen=True)
class ConvolvedPSF:
    """``base`` PSF convolved with a fixed ``kernel`` (odd size, unit sum): the PSF of a filtered or
    PSF-matched difference."""

    base: PSF
    kernel: np.ndarray

    def image_at(self, x: float, y: float, size: int) -> np.ndarray:
        k = self.kernel.shape[0]
        out = fftconvolve(self.base.image_at(x, y, size + k - 1), self.kernel, mode="valid")
        return out / out.sum()

    def fwhm_at(self, x: float, y: float) -> float:
        return fit_moffat(self.image_at(x, y, 2 * self.kernel.shape[0] + 1))[0]


def decorrelate(
    image: np.ndarray,
    variance: np.ndarray,
    no_data: np.ndarray,
    kernel: np.ndarray,
    *,
    source_noise: float,
    target_noise: float,
    convolved: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whiten a PSF-matched difference (Kaiser 2004; Reiss & Lupton 2016, LSST DMTN-021).

    With ``K`` the matching kernel, ``s = K_hat(0)`` its sum and ``sigma_s^2``, ``sigma_t^2`` the
    median variances of the convolved and unconvolved exposures, the noise power of the difference
    in science ADU is ``P(k) = sigma_t^2 + sigma_s^2 |K_hat|^2`` (reference convolved) or ``(sigma_s^2
    |K_hat|^2 + sigma_t^2) / s^2`` (science convolved). The filter ``phi_hat = sqrt(P(0) / P(k))``
    makes it white and keeps fluxes (``phi_hat(0) = 1``); the per-pixel variance is rescaled by
    ``P(0) / mean_k P(k)``, exact for stationary noise, and the PSF becomes ``P ⊗ phi``. Returns the
    filtered image and variance, and ``phi`` cropped to ``4 h + 1`` pixels (unit sum).
    """
    ny, nx = image.shape
    h = kernel.shape[0] // 2
    shape = (sfft.next_fast_len(ny + 4 * h, real=True), sfft.next_fast_len(nx + 4 * h, real=True))
    k_hat = sfft.rfft2(embed_kernel(kernel, shape, np.float64), workers=1)
    k2 = k_hat.real**2 + k_hat.imag**2
    s2 = float(kernel.sum()) ** 2
    if convolved == "reference":
        power, power0 = target_noise + source_noise * k2, target_noise + source_noise * s2
    else:
        power, power0 = (source_noise * k2 + target_noise) / s2, (source_noise * s2 + target_noise) / s2
    phi_hat = np.sqrt(power0 / np.maximum(power, 1e-12 * power0))
    # mean of P over the full (Hermitian) grid from the half-plane rfft: interior columns count twice
    weights = np.full(power.shape[1], 2.0)
    weights[0] = 1.0
    if shape[1] % 2 == 0:
        weights[-1] = 1.0
    mean_power = float((power * weights).sum() / (shape[0] * shape[1]))
    filled = np.where(no_data, 0.0, image).astype(np.float32)
    out = sfft.irfft2(sfft.rfft2(filled, s=shape, workers=1) * phi_hat.astype(np.float32), s=shape, workers=1)
    out = out[:ny, :nx].astype(np.float32)
    out[no_data] = np.nan
    phi = crop_kernel(sfft.irfft2(phi_hat, s=shape, workers=1), 4 * h + 1)
    return out, (variance * np.float32(power0 / mean_power)).astype(np.float32), phi / phi.sum()


@SUBTRACTORS.register("alard_lupton")
class AlardLuptonSubtractor(Subtractor):
    """Alard & Lupton (1998) / Alard (2000) PSF matching with a spatially varying kernel.

    Args:
        kernel_half_size: kernel half side (pixels); ``None``: ``max(ceil(3 max(basis_sigmas)),
            ceil(2 FWHM))`` of the broader PSF.
        basis_sigmas: widths (pixels) of the basis Gaussians.
        basis_degrees: degree of the polynomial that modulates each Gaussian.
        spatial_order: polynomial order of the kernel's variation over the detector.
        scale_order: polynomial order of the photometric scale (kernel sum); 0: constant.
        background_order: polynomial order of the differential background; ``-1``: none.
        convolve: ``"auto"`` (the exposure with the smaller PSF FWHM), ``"reference"`` or ``"science"``.
        stamp_half_size: half side (pixels) of the fitted star stamps; ``None``: ``max(kernel half
            size, round(3 FWHM))``.
        max_stars: at most this many stamps (brightest, spread over the frame).
        snr_min: minimum aperture S/N of a stamp's star in the reference.
        isolation_radius: no neighbour brighter than ``isolation_contrast`` x the star within this
            radius (pixels); ``None``: the stamp half size.
        isolation_contrast: see ``isolation_radius``.
        clip_sigma: stamps whose chi^2 per pixel exceeds the median by this many robust sigmas are
            rejected, and the kernel refitted.
        max_iterations: at most this many rejection rounds.
        min_stars: fewest stamps accepted; ``None``: twice the number of spatial terms, at least 6.
        decorrelate: whiten the difference's noise, which the convolution correlated (see
            :func:`decorrelate`); without it a matched filter on the difference underestimates its
            noise where the noisier exposure was convolved.
    """

    def __init__(
        self,
        kernel_half_size: int | None = None,
        basis_sigmas: tuple[float, ...] = (0.7, 1.5, 3.0),
        basis_degrees: tuple[int, ...] = (6, 4, 2),
        spatial_order: int = 2,
        scale_order: int = 0,
        background_order: int = 1,
        convolve: Literal["auto", "reference", "science"] = "auto",
        stamp_half_size: int | None = None,
        max_stars: int = 160,
        snr_min: float = 30.0,
        isolation_radius: float | None = None,
        isolation_contrast: float = 0.1,
        clip_sigma: float = 4.0,
        max_iterations: int = 3,
        min_stars: int | None = None,
        decorrelate: bool = True,
    ) -> None:
        sigmas = tuple(float(s) for s in basis_sigmas)
        degrees = tuple(int(d) for d in basis_degrees)
        if not sigmas or len(sigmas) != len(degrees):
            raise ValueError(
                f"basis_sigmas {sigmas} and basis_degrees {degrees} must be non-empty, equal length"
            )
        if min(sigmas) <= 0 or min(degrees) < 0:
            raise ValueError("basis_sigmas must be > 0 and basis_degrees >= 0")
        if kernel_half_size is not None and kernel_half_size < 1:
            raise ValueError(f"kernel_half_size must be >= 1, got {kernel_half_size}")
        if spatial_order < 0 or not 0 <= scale_order <= spatial_order:
            raise ValueError(
                "need spatial_order >= 0 and 0 <= scale_order <= spatial_order, "
                f"got {spatial_order} and {scale_order}"
            )
        if background_order < -1:
            raise ValueError(f"background_order must be >= -1, got {background_order}")
        if convolve not in ("auto", "reference", "science"):
            raise ValueError(f"convolve must be 'auto', 'reference' or 'science', got {convolve!r}")
        self.kernel_half_size = kernel_half_size
        self.basis_sigmas = sigmas
        self.basis_degrees = degrees
        self.spatial_order = int(spatial_order)
        self.scale_order = int(scale_order)
        self.background_order = int(background_order)
        self.convolve = convolve
        self.stamp_half_size = stamp_half_size
        self.selection = StarSelection(
            snr_min=snr_min,
            max_stars=max_stars,
            isolation_radius=isolation_radius,
            isolation_contrast=isolation_contrast,
        )
        self.decorrelate = bool(decorrelate)
        self.clip_sigma = float(clip_sigma)
        self.max_iterations = int(max_iterations)
        n_terms = len(monomials(self.spatial_order))
        self.min_stars = max(6, 2 * n_terms) if min_stars is None else int(min_stars)

    # -- fitting ---------------------------------------------------------------------------------

    @staticmethod
    def _stamps(
        stars: pd.DataFrame, source: np.ndarray, target: np.ndarray, weight: np.ndarray, s: int, h: int
    ) -> Stamps:
        """Source windows ``(n, S + 2h, S + 2h)``, target and weight stamps ``(n, S*S)``, and the
        stamps' centre pixels."""
        ix = np.rint(stars["x"].to_numpy()).astype(int)
        iy = np.rint(stars["y"].to_numpy()).astype(int)
        win = np.stack(
            [
                source[y - s - h : y + s + h + 1, x - s - h : x + s + h + 1]
                for x, y in zip(ix, iy, strict=True)
            ]
        )
        tgt = np.stack([target[y - s : y + s + 1, x - s : x + s + 1] for x, y in zip(ix, iy, strict=True)])
        wgt = np.stack([weight[y - s : y + s + 1, x - s : x + s + 1] for x, y in zip(ix, iy, strict=True)])
        n = len(ix)
        return win, tgt.reshape(n, -1).astype(np.float64), wgt.reshape(n, -1).astype(np.float64), ix, iy

    @staticmethod
    def _convolved_basis(windows: np.ndarray, basis: np.ndarray, s: int, chunk: int = 32) -> np.ndarray:
        """Every stamp convolved with every basis function: ``(n, S*S, n_basis)`` (valid part only)."""
        n_basis, k, _ = basis.shape
        flipped = basis[:, ::-1, ::-1].reshape(n_basis, k * k).T  # convolution = correlation with flip
        side = 2 * s + 1
        out = np.empty((len(windows), side * side, n_basis))
        for start in range(0, len(windows), chunk):
            block = windows[start : start + chunk].astype(np.float64)
            patches = sliding_window_view(block, (k, k), axis=(1, 2)).reshape(len(block) * side * side, k * k)
            out[start : start + chunk] = (patches @ flipped).reshape(len(block), side * side, n_basis)
        return out

    def _fit(
        self,
        stamps: Stamps,
        basis: np.ndarray,
        shape: tuple[int, int],
        s: int,
        convolved: str,
        source_name: str,
    ) -> tuple[KernelSolution, np.ndarray, np.ndarray]:
        windows, tgt, wgt, ix, iy = stamps
        n = len(ix)
        n_basis = len(basis)
        conv = self._convolved_basis(windows, basis, s)
        terms = tuple(monomials(self.spatial_order))
        n_terms = len(terms)
        n_scale = len(monomials(self.scale_order))
        bg_terms = tuple(monomials(self.background_order)) if self.background_order >= 0 else ()
        ny, nx = shape
        hx, hy = max((nx - 1) / 2.0, 1.0), max((ny - 1) / 2.0, 1.0)
        u_star, v_star = (ix - (nx - 1) / 2.0) / hx, (iy - (ny - 1) / 2.0) / hy
        spatial = np.stack([u_star**a * v_star**b for a, b in terms], axis=1)  # (n, n_terms)
        side = 2 * s + 1
        dy, dx = np.mgrid[-s : s + 1, -s : s + 1]
        u_pix = (ix[:, None] + dx.ravel()[None, :] - (nx - 1) / 2.0) / hx
        v_pix = (iy[:, None] + dy.ravel()[None, :] - (ny - 1) / 2.0) / hy
        bg = (
            np.stack([u_pix**a * v_pix**b for a, b in bg_terms], axis=2)
            if bg_terms
            else np.zeros((n, side * side, 0))
        )

        cw = conv * wgt[:, :, None]
        q = np.einsum("kpi,kpj->kij", cw, conv, optimize=True)  # (n, nb, nb)
        cg = np.einsum("kpi,kpg->kig", cw, bg, optimize=True)
        gg = np.einsum("kpg,kp,kph->kgh", bg, wgt, bg, optimize=True)
        ct = np.einsum("kpi,kp->ki", cw, tgt)
        gt = np.einsum("kpg,kp,kp->kg", bg, wgt, tgt)
        # columns (t, j), except the flux-carrying basis 0 beyond the scale terms
        keep = np.ones((n_terms, n_basis), bool)
        keep[n_scale:, 0] = False
        keep = keep.ravel()
        n_bg = len(bg_terms)

        def solve(active: np.ndarray) -> np.ndarray:
            p = spatial[active]
            a_cc = np.einsum("kt,ks,kij->tisj", p, p, q[active], optimize=True).reshape(n_terms * n_basis, -1)
            a_cg = np.einsum("kt,kig->tig", p, cg[active]).reshape(n_terms * n_basis, n_bg)
            a_gg = gg[active].sum(axis=0)
            b_c = np.einsum("kt,ki->ti", p, ct[active]).ravel()
            b_g = gt[active].sum(axis=0)
            a = np.block([[a_cc[np.ix_(keep, keep)], a_cg[keep]], [a_cg[keep].T, a_gg]])
            b = np.concatenate([b_c[keep], b_g])
            d = np.sqrt(np.maximum(np.diag(a), 1e-300))
            try:
                theta = scipy.linalg.cho_solve(scipy.linalg.cho_factor(a / np.outer(d, d)), b / d) / d
            except (np.linalg.LinAlgError, scipy.linalg.LinAlgError, ValueError) as err:
                raise InvalidExposureError(
                    f"{source_name}: the kernel fit on {int(active.sum())} star stamps is singular ({err}); "
                    "lower spatial_order or use more stars"
                ) from err
            full = np.zeros(n_terms * n_basis)
            full[keep] = theta[: keep.sum()]
            return np.concatenate([full, theta[keep.sum() :]])

        def chi2(theta: np.ndarray) -> np.ndarray:
            coeffs = theta[: n_terms * n_basis].reshape(n_terms, n_basis)
            per_star = spatial @ coeffs  # (n, nb)
            model = np.einsum("kpi,ki->kp", conv, per_star) + np.einsum(
                "kpg,g->kp", bg, theta[n_terms * n_basis :]
            )
            return np.mean(wgt * (tgt - model) ** 2, axis=1)

        active = np.ones(n, bool)
        for _ in range(self.max_iterations + 1):
            theta = solve(active)
            c2 = chi2(theta)
            med = np.median(c2[active])
            sigma = MAD_TO_SIGMA * np.median(np.abs(c2[active] - med))
            new = c2 <= med + self.clip_sigma * max(sigma, 1e-3 * med)
            if np.array_equal(new, active):
                break
            if new.sum() < self.min_stars:
                raise InvalidExposureError(
                    f"{source_name}: only {int(new.sum())} of {n} star stamps survive sigma clipping, "
                    f"but {self.min_stars} are needed for spatial_order={self.spatial_order}"
                )
            active = new
        solution = KernelSolution(
            basis=basis,
            coeffs=theta[: n_terms * n_basis].reshape(n_terms, n_basis),
            terms=terms,
            background_coeffs=theta[n_terms * n_basis :],
            background_terms=bg_terms,
            shape=shape,
            convolved=convolved,
        )
        return solution, active, c2

    # -- applying ----------------------------------------------------------------------------------

    @staticmethod
    def _apply(
        solution: KernelSolution, image: np.ndarray, variance: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``image ⊗ K_xy + B`` and ``variance ⊗ K_xy^2`` (float32), by one FFT convolution per term."""
        ny, nx = image.shape
        h = solution.half_size
        shape = (sfft.next_fast_len(ny + h, real=True), sfft.next_fast_len(nx + h, real=True))

        def fft(a: np.ndarray) -> np.ndarray:
            return sfft.rfft2(a, s=shape, workers=1)

        def ifft(a: np.ndarray) -> np.ndarray:
            return sfft.irfft2(a, s=shape, workers=1)[:ny, :nx]

        u, v = solution.normalised(np.arange(nx), np.arange(ny))
        image_hat = fft(image)
        out = np.zeros((ny, nx), np.float32)
        for (a, b), k_t in zip(solution.terms, solution.term_kernels(), strict=True):
            if not np.any(k_t):
                continue
            term = ifft(image_hat * fft(embed_kernel(k_t, shape)))
            if a == 0 and b == 0:
                out += term
            else:
                out += term * np.outer(v**b, u**a).astype(np.float32)
        if len(solution.background_terms):
            out += _polynomial_image(
                dict(zip(solution.background_terms, solution.background_coeffs, strict=True)), u, v
            )

        # V ⊗ K_xy^2 ~ (V ⊗ K_c^2) * sum(K_xy^2) / sum(K_c^2), with sum(K_xy^2) a polynomial in (u, v)
        kernels = solution.term_kernels()
        gram = np.einsum("tyx,syx->ts", kernels, kernels)
        power: dict[tuple[int, int], float] = {}
        for i, (a1, b1) in enumerate(solution.terms):
            for j, (a2, b2) in enumerate(solution.terms):
                power[(a1 + a2, b1 + b2)] = power.get((a1 + a2, b1 + b2), 0.0) + float(gram[i, j])
        sum_k2 = _polynomial_image(power, u, v)
        centre = solution.kernel_at((nx - 1) / 2.0, (ny - 1) / 2.0)
        var = ifft(fft(variance) * fft(embed_kernel(centre * centre, shape)))
        var *= sum_k2 / np.float32((centre * centre).sum())
        return out, var

    # -- the contract ------------------------------------------------------------------------------

    def subtract(self, science: Exposure, reference: Exposure) -> Difference:
        check_aligned(science, reference)
        check_background(science, reference)
        ny, nx = science.shape
        cx, cy = (nx - 1) / 2.0, (ny - 1) / 2.0
        fwhm_sci, fwhm_ref = science.psf.fwhm_at(cx, cy), reference.psf.fwhm_at(cx, cy)
        convolved = self.convolve
        if convolved == "auto":
            convolved = "reference" if fwhm_ref <= fwhm_sci else "science"
        h = self.kernel_half_size or max(
            math.ceil(3.0 * max(self.basis_sigmas)), math.ceil(2.0 * max(fwhm_sci, fwhm_ref))
        )
        s = self.stamp_half_size or max(h, round(3.0 * max(fwhm_sci, fwhm_ref)))
        if 2 * (s + h) + 1 > min(ny, nx):
            raise InvalidExposureError(
                f"science {science.source}: frame {science.shape} is too small for stamps of half size {s} "
                f"with a kernel of half size {h}"
            )

        no_data = ~(science.valid() & reference.valid())
        if no_data.all():
            raise InvalidExposureError(
                f"science {science.source} / reference {reference.source}: field 'mask' leaves no pixel "
                "with data in both exposures"
            )
        sci = np.where(no_data, 0.0, science.image).astype(np.float32)
        ref = np.where(no_data, 0.0, reference.image).astype(np.float32)
        sci_var = np.where(no_data, 0.0, science.variance).astype(np.float32)
        ref_var = np.where(no_data, 0.0, reference.variance).astype(np.float32)
        if convolved == "reference":
            source, target, source_var, target_var = ref, sci, ref_var, sci_var
        else:
            source, target, source_var, target_var = sci, ref, sci_var, ref_var
        weight = np.where(no_data, 0.0, 1.0 / np.maximum(source_var + target_var, 1e-30))

        stars = select_stars(reference, [science], half_size=s, border=h, selection=self.selection)
        require_stars(
            stars,
            self.min_stars,
            reference,
            f"Alard-Lupton kernel fitting (spatial_order={self.spatial_order})",
        )
        basis = gaussian_basis(h, self.basis_sigmas, self.basis_degrees)
        stamps = self._stamps(stars, source, target, weight, s, h)
        # the products are small: one BLAS thread is as fast, and does not stall when cores are shared
        with threadpool_limits(limits=1, user_api="blas"):
            solution, used, chi2 = self._fit(stamps, basis, science.shape, s, convolved, reference.source)

        model, model_var = self._apply(solution, source, source_var)
        if convolved == "reference":
            image = target - model
            variance = target_var + model_var
            psf = science.psf
        else:
            scale_terms = solution.terms[: len(monomials(self.scale_order))]
            u, v = solution.normalised(np.arange(nx), np.arange(ny))
            scale = _polynomial_image(
                {
                    t: float(c)
                    for t, c in zip(scale_terms, solution.coeffs[: len(scale_terms), 0], strict=True)
                },
                u,
                v,
            )
            if not np.all(scale > 0):
                raise InvalidExposureError(
                    f"science {science.source}: the fitted photometric scale is not positive everywhere"
                )
            image = (model - target) / scale
            variance = (model_var + target_var) / (scale * scale)
            psf = reference.psf
        kernel_c = solution.kernel_at(cx, cy)
        if self.decorrelate:
            valid = ~no_data
            image, variance, phi = decorrelate(
                image,
                variance,
                no_data,
                kernel_c,
                source_noise=float(np.median(source_var[valid])),
                target_noise=float(np.median(target_var[valid])),
                convolved=convolved,
            )
            if convolved == "reference":
                psf = ConvolvedPSF(science.psf, phi)
            else:
                # a transient's profile is P_n ⊗ K ⊗ phi / s; K ⊗ phi is close to all-pass, whereas
                # phi alone sharpens strongly and would magnify any error of the reference's PSF
                psf = ConvolvedPSF(science.psf, fftconvolve(kernel_c / kernel_c.sum(), phi))

        mask = (science.mask | reference.mask).astype(np.uint16)
        edge = np.ones(science.shape, bool)
        edge[h : ny - h, h : nx - h] = False
        mask[edge] |= np.uint16(Mask.EDGE)
        if no_data.any():
            grown = ndimage.maximum_filter(no_data.view(np.uint8), size=2 * h + 1, mode="constant").astype(
                bool
            )
            mask[grown] |= np.uint16(Mask.NO_DATA)
            image[grown] = np.nan
            variance[grown] = np.nan
        np.maximum(
            variance,
            np.float32(1e-12) * np.float32(np.nanmedian(variance)),
            out=variance,
            where=np.isfinite(variance),
        )

        zp_ratio = adu_ratio(science, reference)
        return Difference(
            image=image.astype(np.float32, copy=False),
            variance=variance.astype(np.float32, copy=False),
            mask=mask,
            psf=psf,
            wcs=science.wcs,
            zero_point=science.zero_point,
            method=self.name,
            score=None,
            meta={
                "convolved": convolved,
                "kernel": solution,
                "kernel_half_size": h,
                "decorrelated": self.decorrelate,
                "stamp_half_size": s,
                "n_stars": len(stars),
                "n_stamps_used": int(used.sum()),
                "chi2_median": float(np.median(chi2[used])),
                "scale_centre": solution.scale_at(cx, cy),
                "scale_zero_point": zp_ratio if convolved == "reference" else 1.0 / zp_ratio,
            },
        )
