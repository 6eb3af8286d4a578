"""Bad frames get clear errors that name the source and the field."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from hybrid.exposure import Exposure, InvalidExposureError, Mask, check_aligned
from hybrid.psf import MoffatPSF


def _exposure(shape=(32, 32), **kw) -> Exposure:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cdelt = [-1 / 3600, 1 / 3600]
    args = dict(
        image=np.zeros(shape, np.float32),
        variance=np.ones(shape, np.float32),
        mask=np.zeros(shape, np.uint16),
        psf=MoffatPSF(3.0, 3.0, shape),
        wcs=w,
        zero_point=25.0,
        source="frame.fits",
    )
    args.update(kw)
    return Exposure(**args)


def test_nan_pixels_need_the_no_data_bit() -> None:
    image = np.zeros((32, 32), np.float32)
    image[:, :4] = np.nan
    with pytest.raises(InvalidExposureError, match=r"frame.fits: field 'image' has 128 NaN"):
        _exposure(image=image)
    mask = np.zeros((32, 32), np.uint16)
    mask[:, :4] = Mask.NO_DATA
    assert not _exposure(image=image, mask=mask).valid()[:, :4].any()


def test_all_nan_frame_is_rejected() -> None:
    image = np.full((32, 32), np.nan, np.float32)
    with pytest.raises(InvalidExposureError, match="no valid pixels"):
        _exposure(image=image, mask=np.full((32, 32), Mask.NO_DATA, np.uint16))


def test_shapes_wcs_and_variance_are_checked() -> None:
    with pytest.raises(InvalidExposureError, match="field 'variance' has shape"):
        _exposure(variance=np.ones((16, 32), np.float32))
    with pytest.raises(InvalidExposureError, match="field 'wcs' is missing"):
        _exposure(wcs=None)
    with pytest.raises(InvalidExposureError, match="field 'wcs'"):
        _exposure(wcs=WCS(naxis=2))  # linear axes, no sky
    with pytest.raises(InvalidExposureError, match="non-positive"):
        _exposure(variance=np.zeros((32, 32), np.float32))
    with pytest.raises(InvalidExposureError, match="resample the reference"):
        check_aligned(_exposure(), _exposure(shape=(16, 16)))
