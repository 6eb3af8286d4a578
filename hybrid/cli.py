"""The `hybrid` command: thin verbs over the library (the same functions `python run.py` calls).

hybrid build [OVERRIDES...]            build (or reuse) the dataset; Hydra overrides as for run.py
hybrid bench WHAT [--fields N]         benchmarks: build, subtraction, context, train (-> reports/)
hybrid examples DATASET [--out PNG]    figure of example triplets per class and bogus kind
hybrid list                            registered plug-ins (subtractors, label sources)
hybrid simulate --out DIR [--fields N] [OVERRIDES...]  simulated fields as FITS + truth, DIR/field-NNNN/
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from hybrid.bench import BENCHMARKS

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def load_config(overrides: list[str]) -> DictConfig:
    """Compose conf/config.yaml with Hydra overrides, as `python run.py` does."""
    if not CONF_DIR.is_dir():
        raise FileNotFoundError(f"{CONF_DIR}: config directory not found; run from a source checkout")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(
        prog="hybrid", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="verb", required=True)
    p_build = sub.add_parser("build", help="build the candidate dataset")
    p_build.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. survey=rubin data.n_fields=10")
    p_bench = sub.add_parser("bench", help="benchmarks; results go to reports/")
    p_bench.add_argument("what", choices=list(BENCHMARKS))
    p_bench.add_argument("--fields", type=int, default=None, help="size of the benchmark (fields or frames)")
    p_bench.add_argument("--out", type=Path, default=Path("reports"))
    p_bench.add_argument("overrides", nargs="*")
    p_ex = sub.add_parser("examples", help="figure of example triplets of every class and bogus kind")
    p_ex.add_argument("dataset", type=Path)
    p_ex.add_argument("--out", type=Path, default=Path("reports/example_triplets.png"))
    p_ex.add_argument("--per-class", type=int, default=3)
    sub.add_parser("list", help="registered plug-ins")
    p_sim = sub.add_parser("simulate", help="simulate fields and write them as FITS files and truth tables")
    p_sim.add_argument("--out", type=Path, required=True, help="output directory")
    p_sim.add_argument("--fields", type=int, default=1, help="number of fields (ids 0 .. N-1)")
    p_sim.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. survey=rubin sim.shape=[512,512]")
    args = parser.parse_args(argv)

    if args.verb == "build":
        from hybrid.data.build import build_dataset

        print(build_dataset(load_config(args.overrides)))
    elif args.verb == "bench":
        from hybrid.bench import run_benchmark

        print(run_benchmark(args.what, load_config(args.overrides), out_dir=args.out, fields=args.fields))
    elif args.verb == "examples":
        from hybrid.data.figures import plot_examples

        print(plot_examples(args.dataset, args.out, per_class=args.per_class))
    elif args.verb == "list":
        from hybrid.context import ASSOCIATORS
        from hybrid.curation import LABEL_SOURCES
        from hybrid.models import FUSIONS, IMAGE_ENCODERS, TABULAR_ENCODERS
        from hybrid.subtraction import SUBTRACTORS

        for reg in (SUBTRACTORS, LABEL_SOURCES, ASSOCIATORS, IMAGE_ENCODERS, TABULAR_ENCODERS, FUSIONS):
            print(f"{reg.kind}s: {', '.join(reg.names())}")
    elif args.verb == "simulate":
        from hydra.utils import instantiate

        from hybrid.data.fits import write_field
        from hybrid.sim.field import simulate_field

        cfg = load_config(args.overrides)
        survey, sim = instantiate(cfg.survey), instantiate(cfg.sim)
        for field_id in range(args.fields):
            fld = simulate_field(survey, sim, int(cfg.seed), field_id)
            for path in write_field(fld, args.out / f"field-{field_id:04d}"):
                print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
