"""Fetching real ZTF alerts: the 51 alerts shipped in the fink-science 7.4.0 source package.

fink-science (Apache-2.0, the Fink broker's science modules; Möller et al. 2021, MNRAS 501, 3272)
ships ``fink_science/data/alerts/alerts.parquet``: 51 ZTF alerts from 2019 in Fink's Parquet layout,
with their science / template / difference cutouts. :func:`fetch_fink_alerts` downloads the source
package once with ``pip download fink-science==7.4.0 --no-deps --no-binary=:all:`` into the cache,
checks it and the file against pinned SHA-256 sums, and extracts the file with the licence into
``<cache>/fink-science-7.4.0/``. Nothing is committed; tests use a handful of these alerts in
``tests/fixtures/ztf_alerts/``.
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
#: name -> (member of the source package, SHA-256 or "" when not pinned)
FINK_FILES: dict[str, tuple[str, str]] = {
    "alerts": (
        f"fink-science-{FINK_VERSION}/fink_science/data/alerts/alerts.parquet",
        "1a809b427803cd4479b0d7686604e6b63e63dbf68e3a72a23b985455f656e973",
    ),
    "license": (f"fink-science-{FINK_VERSION}/LICENSE", ""),
}


def fink_dir(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"fink-science-{FINK_VERSION}"


def fetch_fink_alerts(
    cache_dir: str | Path | None = None, *, sdist: str | Path | None = None
) -> dict[str, Path]:
    """The fink-science alerts, fetched into ``<cache>/fink-science-7.4.0/`` on first use.

    Args:
        cache_dir: cache root (default ``$HYBRID_CACHE`` or ``.cache``).
        sdist: an already downloaded ``fink-science-7.4.0.tar.gz`` to extract instead of calling pip.

    Returns:
        name -> path of "alerts" (alerts.parquet) and "license" (Apache-2.0).
    """
    target = fink_dir(cache_dir)
    paths = {name: target / Path(member).name for name, (member, _) in FINK_FILES.items()}
    if all(p.is_file() for p in paths.values()):
        return paths
    target.mkdir(parents=True, exist_ok=True)
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
