"""Preprocessing that travels with the model: stamp normalisation and feature scaling.

Both are ``nn.Module``s with buffers, so the statistics are saved in every checkpoint and exported
with the model, and a raw alert (ADU stamps with NaNs, features with gaps) can be scored as it is.

Stamp normalisations from the literature:

* ``l2`` -- each channel of each stamp divided by its L2 norm (braai, Duev et al. 2019, MNRAS 489, 3582);
* ``noise`` -- each channel's median subtracted and divided by its robust noise (1.4826 MAD), so pixels
  are in units of sigma, which keeps faint and bright detections on one scale;
* ``none``.

NaN pixels (frame edges, missing data) become 0 after normalisation.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from hybrid.stats import MAD_TO_SIGMA

STAMP_NORMS = ("l2", "noise", "none")


class StampNormalizer(nn.Module):
    """Per-stamp, per-channel normalisation of (B, C, H, W) stamps; optional central crop (pixels)."""

    def __init__(self, mode: str = "noise", crop: int | None = None, clip: float = 50.0) -> None:
        super().__init__()
        if mode not in STAMP_NORMS:
            raise ValueError(f"stamp normalisation must be one of {STAMP_NORMS}, got {mode!r}")
        self.mode = mode
        self.crop = crop
        self.clip = clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop is not None and self.crop < x.shape[-1]:
            lo = (x.shape[-1] - self.crop) // 2
            x = x[..., lo : lo + self.crop, lo : lo + self.crop]
        finite = torch.isfinite(x)
        x0 = torch.where(finite, x, torch.zeros_like(x))
        if self.mode == "l2":
            norm = torch.sqrt((x0 * x0).sum(dim=(-2, -1), keepdim=True)).clamp_min(1e-6)
            return x0 / norm
        if self.mode == "noise":
            flat = torch.where(finite, x, torch.full_like(x, float("nan"))).flatten(-2)
            med = torch.nanmedian(flat, dim=-1, keepdim=True).values
            mad = torch.nanmedian((flat - med).abs(), dim=-1, keepdim=True).values
            med = torch.nan_to_num(med).unsqueeze(-1)
            sigma = torch.nan_to_num(MAD_TO_SIGMA * mad, nan=1.0).clamp_min(1e-6).unsqueeze(-1)
            z = ((x0 - med) / sigma).clamp(-self.clip, self.clip)
            return torch.where(finite, z, torch.zeros_like(z))
        return x0


class FeaturePreprocessor(nn.Module):
    """Clipping, scaling with training statistics, and imputation with missing-value indicators.

    ``fit`` learns per feature: the 0.5 and 99.5 percentiles (clip range), the median (also the
    imputed value) and a robust scale (IQR / 1.349, or the std when the IQR is 0). ``forward`` returns
    ``[scaled features, missing indicators]``: (B, 2F). Features that were never missing in training
    still get an indicator, so serving data with gaps stays in distribution.
    """

    def __init__(self, n_features: int, names: list[str] | None = None) -> None:
        super().__init__()
        self.names = list(names) if names is not None else [f"f{i}" for i in range(n_features)]
        self.register_buffer("lo", torch.full((n_features,), -torch.inf))
        self.register_buffer("hi", torch.full((n_features,), torch.inf))
        self.register_buffer("center", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def out_dim(self) -> int:
        return 2 * self.center.numel()

    def fit(self, features: np.ndarray) -> FeaturePreprocessor:
        x = np.asarray(features, np.float64)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # features missing in every row
            lo = np.nanpercentile(x, 0.5, axis=0)
            hi = np.nanpercentile(x, 99.5, axis=0)
            xc = np.clip(x, lo, hi)
            med = np.nanmedian(xc, axis=0)
            q25, q75 = np.nanpercentile(xc, [25, 75], axis=0)
            scale = (q75 - q25) / 1.349
            std = np.nanstd(xc, axis=0)
        scale = np.where(scale > 1e-12, scale, np.where(std > 1e-12, std, 1.0))
        all_missing = ~np.isfinite(med)
        lo, hi, med = (np.where(all_missing, 0.0, a) for a in (lo, hi, med))
        for buf, val in (("lo", lo), ("hi", hi), ("center", med), ("scale", np.nan_to_num(scale, nan=1.0))):
            getattr(self, buf).copy_(torch.as_tensor(val, dtype=torch.float32))
        self.fitted.fill_(True)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        missing = ~torch.isfinite(x)
        x = torch.where(missing, self.center.expand_as(x), x)
        x = torch.minimum(torch.maximum(x, self.lo), self.hi)
        return torch.cat([(x - self.center) / self.scale, missing.to(x.dtype)], dim=-1)

    def to_dict(self) -> dict:
        """The statistics as plain numbers (for preprocess.json)."""
        return {
            "features": self.names,
            **{k: getattr(self, k).tolist() for k in ("lo", "hi", "center", "scale")},
            "imputation": "median, plus one missing-value indicator per feature",
        }


#: The 8 symmetries of a square stamp: (k quarter turns, flip).
DIHEDRAL = [(k, f) for f in (False, True) for k in range(4)]


def dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def random_dihedral(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each stamp of the batch under its own random flip and 90-degree rotation."""
    choice = torch.randint(0, 8, (x.shape[0],), generator=generator)
    out = torch.empty_like(x)
    for i, (k, flip) in enumerate(DIHEDRAL):
        sel = choice == i
        if sel.any():
            out[sel] = dihedral(x[sel], k, flip)
    return out
