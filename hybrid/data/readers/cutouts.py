"""Alert cutouts: gzipped FITS bytes -> float32 stamps on the dataset's convention, or a clear reason.

ZTF alert packets (Masci et al. 2019, PASP 131, 018003; Patterson et al. 2019, PASP 131, 018001) carry
each of the science, template and difference cutouts as a gzip-compressed single-HDU FITS image,
63x63 pixels, BITPIX -32 (big-endian float32, as FITS requires), in DN, with NaNs where there are no
data and fewer rows or columns where the cutout meets a CCD edge (63x45, for instance). Rubin cutouts
are (uncompressed) FITS, image in the primary HDU or in the first image extension.

:func:`decode_cutout` decodes the common case without astropy: gunzip (libdeflate when the
``deflate`` package is installed, zlib otherwise), read the 2880-byte header blocks for ``BITPIX``,
``NAXIS``, ``NAXIS1``, ``NAXIS2``, ``BSCALE``, ``BZERO``, and view the data with numpy. Anything
unusual (extensions, scaled integers, more axes) goes through ``astropy.io.fits``. About 20 times
faster than astropy for a ZTF cutout, which matters at alert-stream rates (``hybrid bench predict``).

:func:`fit_stamp` puts a cutout on the square ``size`` x ``size`` grid of the dataset, centred on the
candidate: a short cutout is padded with NaN on the side where the CCD ended, and the padded fraction
is returned as ``stamp_edge_fraction`` exactly as the simulated cutter does
(:func:`hybrid.detection.stamps.edge_fraction`). Orientation is the FITS array as stored (row = y,
column = x), which is also how the simulated frames are written and cut, so no flip is applied.

Every failure raises :class:`CutoutError` with a short reason (corrupt gzip, not FITS, wrong shape,
all pixels NaN, values that only make sense byte-swapped); the readers record it with the alert's id
and skip the alert.
"""

from __future__ import annotations

import io
import warnings
import zlib

import numpy as np

try:  # libdeflate: about twice as fast as zlib on 13 kB cutouts
    import deflate as _deflate
except ImportError:  # pragma: no cover - optional speed-up
    _deflate = None

_BLOCK = 2880
_CARD = 80
_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
#: |value| above which a pixel in DN/ADU is implausible (float32 byte-swapped data land far outside).
_IMPLAUSIBLE = 1e15


class CutoutError(ValueError):
    """A cutout that cannot become a stamp; ``str(err)`` is the reason recorded with the alert's id."""


def gunzip(data: bytes) -> bytes:
    """Decompress gzip data (returns ``data`` unchanged when it is not gzip-compressed)."""
    if data[:2] != b"\x1f\x8b":
        return data
    if _deflate is not None:
        try:
            return _deflate.gzip_decompress(data)
        except Exception:  # libdeflate's errors are terse; zlib says what is wrong
            pass
    try:
        return zlib.decompress(data, 31)
    except zlib.error as err:
        raise CutoutError(f"corrupt gzip stream ({err})") from None


_END = b"END" + b" " * 77
_KEYS = frozenset((b"BITPIX", b"NAXIS", b"NAXIS1", b"NAXIS2", b"BSCALE", b"BZERO"))


def _header(data: bytes | bytearray) -> tuple[dict[bytes, bytes], int]:
    """The primary header's structural keywords -> raw value, and the offset of the data (bytes)."""
    if not data.startswith(b"SIMPLE  ="):
        raise CutoutError("not a FITS file (no SIMPLE card)")
    end = data.find(_END)
    while end > 0 and end % _CARD:  # the END card starts at a card boundary
        end = data.find(_END, end + 1)
    if end < 0:
        raise CutoutError("FITS header has no END card (truncated file)")
    cards = {}
    for pos in range(0, end, _CARD):
        key = bytes(data[pos : pos + 8]).rstrip()  # libdeflate returns a bytearray
        if key in _KEYS:
            cards[key] = bytes(data[pos + 10 : pos + _CARD]).split(b"/", 1)[0].strip()
    return cards, -(-(end + _CARD) // _BLOCK) * _BLOCK


def _fast_image(data: bytes) -> np.ndarray | None:
    """The primary image as a numpy view, or None when astropy should handle the file."""
    cards, offset = _header(data)
    try:
        bitpix, naxis = int(cards[b"BITPIX"]), int(cards[b"NAXIS"])
    except (KeyError, ValueError):
        raise CutoutError("FITS header lacks a valid BITPIX or NAXIS") from None
    if naxis != 2 or bitpix not in _DTYPES:
        return None  # image in an extension, a cube, or an odd BITPIX: astropy
    try:
        scaled = float(cards.get(b"BSCALE", 1)) != 1.0 or float(cards.get(b"BZERO", 0)) != 0.0
    except ValueError:
        raise CutoutError("FITS header has an invalid BSCALE or BZERO") from None
    if scaled:
        return None
    try:
        nx, ny = int(cards[b"NAXIS1"]), int(cards[b"NAXIS2"])
    except (KeyError, ValueError):
        raise CutoutError("FITS header lacks a valid NAXIS1 or NAXIS2") from None
    if nx <= 0 or ny <= 0:
        raise CutoutError(f"FITS image is empty (NAXIS1={nx}, NAXIS2={ny})")
    dtype = np.dtype(_DTYPES[bitpix])
    size = nx * ny * dtype.itemsize
    if len(data) < offset:
        raise CutoutError(f"FITS file truncated inside its header ({len(data)} of {offset} bytes)")
    if len(data) < offset + size:
        raise CutoutError(f"FITS data truncated: {len(data) - offset} bytes for a {ny}x{nx} {dtype} image")
    # more than a block after the data unit that is not an extension: the header's BITPIX / NAXISn do
    # not describe the bytes (a corrupted header), and reading them would give garbage pixels
    end = offset + -(-size // _BLOCK) * _BLOCK
    if len(data) - end >= _BLOCK and not data[end : end + 8] == b"XTENSION":
        raise CutoutError(
            f"FITS header inconsistent with the file: BITPIX={bitpix} NAXIS1={nx} NAXIS2={ny} describe "
            f"{size} bytes of data, the file holds {len(data) - offset}"
        )
    return np.frombuffer(data, dtype, nx * ny, offset).reshape(ny, nx)


def _astropy_image(data: bytes) -> np.ndarray:
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            with fits.open(io.BytesIO(data), memmap=False) as hdul:
                for hdu in hdul:
                    if hdu.is_image and hdu.data is not None and hdu.data.ndim == 2:
                        return np.array(hdu.data)
    except Exception as err:  # astropy fails on corrupt headers in many ways (KeyError, IndexError, ...)
        raise CutoutError(f"unreadable FITS ({type(err).__name__}: {err})") from None
    raise CutoutError("FITS file holds no 2-d image")


def read_cutout(data: bytes | None) -> np.ndarray:
    """A cutout's 2-d image as stored (a read-only view, big-endian for FITS), unchecked.

    Raises:
        CutoutError: empty, corrupt, truncated, not FITS or not an image.
    """
    if not data:
        raise CutoutError("cutout missing (no bytes)")
    raw = gunzip(data)
    image = _fast_image(raw)
    return _astropy_image(raw) if image is None else image


def decode_cutout(data: bytes | None) -> np.ndarray:
    """A cutout's image as native-endian float32 (rows = y), from (gzipped) FITS bytes, checked.

    Raises:
        CutoutError: as :func:`read_cutout`, and for every pixel NaN or implausible values (see
            :func:`value_problem`), such as data written little-endian against the FITS standard.
    """
    image = read_cutout(data).astype(np.float32)  # native byte order, a copy
    reason = nan_problem(image) or value_problem(image)
    if reason:
        raise CutoutError(reason)
    return image


def nan_problem(image: np.ndarray) -> str | None:
    """Why an image without a finite pixel is unusable ("all N pixels are NaN", or infinite), else None."""
    if np.isfinite(image).any():
        return None
    n_inf = int(np.isinf(image).sum())
    if n_inf == 0:
        return f"all {image.size} pixels are NaN"
    if n_inf == image.size:
        return f"all {image.size} pixels are infinite"
    return f"no finite pixel ({image.size - n_inf} NaN, {n_inf} infinite)"


def implausible_fraction(stamps: np.ndarray) -> np.ndarray:
    """Fraction of the finite pixels of each (..., H, W) stamp that are implausible for counts
    (|x| > 1e15 or nonzero below 1e-30), NaN-only stamps counting 0; vectorised over leading axes."""
    with np.errstate(invalid="ignore"):
        a = np.abs(stamps)
        odd = np.isfinite(a) & ((a > _IMPLAUSIBLE) | ((a > 0) & (a < 1e-30)))  # inf: no data, as NaN
    n = np.isfinite(a).sum(axis=(-2, -1))
    return odd.sum(axis=(-2, -1)) / np.maximum(n, 1)


def value_problem(image: np.ndarray) -> str | None:
    """Why the pixel values of a decoded cutout are unusable, or None.

    Float data written little-endian read as denormals, huge values or NaNs, while byte-swapping
    them gives ordinary numbers: that case is named as such.
    """
    bad = float(implausible_fraction(image))
    if bad < 0.05:
        finite = image[np.isfinite(image)]
        if finite.size > 1 and finite.min() == finite.max():  # a blank (zeroed) cutout is no data
            return f"constant image (every finite pixel is {finite[0]:g})"
        return None
    swapped = image.byteswap()
    if implausible_fraction(swapped) < 0.05 and np.isfinite(swapped).mean() >= np.isfinite(image).mean():
        return "wrong byte order: pixel values are plausible only byte-swapped (FITS is big-endian)"
    return f"{bad:.0%} of pixels have implausible values (|x| > 1e15 or below 1e-30)"


def fit_stamp(
    image: np.ndarray,
    size: int,
    *,
    x: float | None = None,
    y: float | None = None,
    frame: tuple[int, int] | None = None,
) -> tuple[np.ndarray, float]:
    """Crop or NaN-pad a cutout to ``size`` x ``size`` around the candidate; returns (stamp, edge fraction).

    A cutout shorter than ``size`` along an axis was either cut at a CCD edge (ZTF's 63x45), with the
    candidate off its centre, or is simply small (Rubin's cutouts follow the source's footprint). When
    the candidate's position (``x``, ``y``, pixels, 1-based as ZTF's ``xpos``/``ypos``) lies within
    ``size // 2`` of the low edge, or of the high edge of a ``frame`` of shape (ny, nx), the missing
    pixels are added on that side; otherwise the cutout is centred. A longer cutout is cropped about
    its centre. The edge fraction is the fraction of padded pixels (0 for a full cutout), as the
    simulated cutter records it.
    """
    ny, nx = image.shape
    out = np.full((size, size), np.nan, np.float32)
    spans = []
    for n, pos, extent in ((ny, y, frame[0] if frame else None), (nx, x, frame[1] if frame else None)):
        if n >= size:
            lo = (n - size) // 2
            spans.append((slice(lo, lo + size), slice(0, size)))
            continue
        missing = size - n
        half = size // 2
        if pos is not None and pos - 1 < half:
            start = missing  # cut at the low edge: the data sit at the high end of the stamp
        elif pos is not None and extent is not None and extent - pos < half:
            start = 0
        else:
            start = missing // 2  # a small cutout away from any edge (Rubin): centred
        spans.append((slice(0, n), slice(start, start + n)))
    (src_y, dst_y), (src_x, dst_x) = spans
    out[dst_y, dst_x] = image[src_y, src_x]
    inside = min(ny, size) * min(nx, size)
    return out, 1.0 - inside / size**2
