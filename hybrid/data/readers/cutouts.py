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


def _header(data: bytes) -> tuple[dict[str, str], int]:
    """The primary header's keyword -> raw value text, and the offset of the data (bytes)."""
    if not data.startswith(b"SIMPLE  ="):
        raise CutoutError("not a FITS file (no SIMPLE card)")
    cards: dict[str, str] = {}
    pos = 0
    while True:
        card = data[pos : pos + _CARD]
        if len(card) < _CARD:
            raise CutoutError("FITS header has no END card (truncated file)")
        pos += _CARD
        key = card[:8].rstrip()
        if key == b"END":
            break
        if card[8:10] == b"= ":
            value = card[10:].split(b"/", 1)[0].strip()
            cards[key.decode("ascii", "replace")] = value.decode("ascii", "replace")
    return cards, -(-pos // _BLOCK) * _BLOCK


def _fast_image(data: bytes) -> np.ndarray | None:
    """The primary image as a numpy view, or None when astropy should handle the file."""
    cards, offset = _header(data)
    try:
        bitpix, naxis = int(cards["BITPIX"]), int(cards["NAXIS"])
    except (KeyError, ValueError):
        raise CutoutError("FITS header lacks a valid BITPIX or NAXIS") from None
    if naxis != 2 or bitpix not in _DTYPES:
        return None  # image in an extension, a cube, or an odd BITPIX: astropy
    if float(cards.get("BSCALE", 1)) != 1.0 or float(cards.get("BZERO", 0)) != 0.0:
        return None
    nx, ny = int(cards["NAXIS1"]), int(cards["NAXIS2"])
    dtype = np.dtype(_DTYPES[bitpix])
    if len(data) < offset + nx * ny * dtype.itemsize:
        raise CutoutError(f"FITS data truncated: {len(data) - offset} bytes for a {ny}x{nx} {dtype} image")
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
    except (OSError, ValueError, TypeError) as err:
        raise CutoutError(f"unreadable FITS ({err})") from None
    raise CutoutError("FITS file holds no 2-d image")


def decode_cutout(data: bytes | None) -> np.ndarray:
    """A cutout's image as native-endian float32 (rows = y), from (gzipped) FITS bytes.

    Raises:
        CutoutError: empty, corrupt, truncated or not an image, every pixel NaN, or values that are
            only plausible byte-swapped (data written little-endian, against the FITS standard).
    """
    if not data:
        raise CutoutError("cutout missing (no bytes)")
    raw = gunzip(bytes(data))
    image = _fast_image(raw)
    if image is None:
        image = _astropy_image(raw)
    image = image.astype(np.float32)  # native byte order, a copy (the bytes can be freed)
    finite = np.isfinite(image)
    if not finite.any():
        raise CutoutError(f"all {image.size} pixels are NaN")
    _check_byte_order(image, finite)
    return image


def _check_byte_order(image: np.ndarray, finite: np.ndarray) -> None:
    """Reject float data that were written little-endian: as big-endian they read as denormals, huge
    values or NaNs, while byte-swapping them gives ordinary numbers."""
    values = np.abs(image[finite])
    odd = (values > _IMPLAUSIBLE) | ((values > 0) & (values < 1e-30))
    bad = odd.mean() if values.size else 1.0
    if bad < 0.05 and finite.mean() > 0.5:
        return
    swapped = image.byteswap()
    ok = np.isfinite(swapped)
    sv = np.abs(swapped[ok])
    plausible = ok.mean() > 0.95 and (sv < _IMPLAUSIBLE).all() and ((sv == 0) | (sv > 1e-30)).mean() > 0.95
    if plausible:
        raise CutoutError(
            "wrong byte order: pixel values are plausible only byte-swapped (FITS is big-endian)"
        )
    if bad >= 0.05:
        raise CutoutError(f"{bad:.0%} of pixels have implausible values (|x| > 1e15 or denormal)")


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
