"""The `hybrid` command: thin verbs over the library (the same functions `python run.py` calls).

hybrid build [OVERRIDES...]            build (or reuse) the dataset; Hydra overrides as for run.py
hybrid bench WHAT [--fields N]         benchmarks: build, subtraction, context, train, predict, stream
hybrid compare RUNS_OR_SWEEPS... [--keys K...] [--metrics M...] [--sort M] [--x K] [--out PATH]
                                       table of runs grouped over seeds (+ plots; Markdown, CSV, PNG)
hybrid study SPEC.yaml [OVERRIDES...]  run an ablation study of experiments/ and write its report
hybrid drift REFERENCE CURRENT [--model RUN_DIR] [--tests T...] [--out DIR]
                                       drift tests of CURRENT against REFERENCE (datasets or tables)
hybrid examples DATASET [--out PNG]    figure of example triplets per class and bogus kind
hybrid list                            registered plug-ins (subtractors, label sources)
hybrid ingest INPUTS... --out DATASET [--kind K]   real alerts (ZTF/Rubin avro, Parquet, FITS) -> dataset dir
hybrid export RUN_DIR [--format onnx] [--out DIR] [--ensemble RUN_DIR... | --mc-dropout S]
                                       a training run -> export bundle (ONNX + preprocessing)
hybrid predict BUNDLE INPUTS... --out SCORES.parquet [--kind K] [--workers N] [--batch-size B]
hybrid simulate --out DIR [--fields N] [OVERRIDES...]  simulated fields as FITS + truth, DIR/field-NNNN/
hybrid stream --engine spark BUNDLE SOURCE_DIR --out SINK_DIR [--once]   Spark Structured Streaming job
hybrid stream --engine kafka BUNDLE TOPIC[,TOPIC] --out OUT_TOPIC --bootstrap-servers HOST:PORT
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
    p_cmp = sub.add_parser("compare", help="compare finished runs (run or sweep directories, or W&B)")
    p_cmp.add_argument("paths", nargs="*", type=Path, help="run directories or sweep directories")
    p_cmp.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also compare the project's W&B runs")
    p_cmp.add_argument("--group", help="with --wandb: only runs of this W&B group")
    p_cmp.add_argument(
        "--keys", nargs="+", help="config keys or group choices to group by (default: those that vary)"
    )
    p_cmp.add_argument(
        "--metrics", nargs="+", help="metrics of metrics.json (default: AUC, FNR/FPR, ECE, F1)"
    )
    p_cmp.add_argument("--sort", help="metric to sort by, best first (default: the first metric)")
    p_cmp.add_argument("--x", help="plot each metric against this key")
    p_cmp.add_argument("--out", type=Path, help="write OUT.md, OUT.csv and plots (e.g. reports/my_sweep)")
    p_cmp.add_argument("--title", help="the report's title")
    p_cmp.add_argument("--description", default="", help="a paragraph under the title")
    p_cmp.add_argument("--plots-of", type=Path, help="with --out: also show this run's own plots")
    p_study = sub.add_parser("study", help="run an ablation study (experiments/*.yaml) and write its report")
    p_study.add_argument("spec", type=Path)
    p_study.add_argument("--report-only", action="store_true", help="regenerate the report from the runs")
    p_study.add_argument("--seeds", type=int, nargs="+", help="run these seeds instead of the spec's")
    p_study.add_argument("--out", type=Path, default=Path("reports"), help="reports directory")
    p_study.add_argument("overrides", nargs="*", help="extra Hydra overrides (a separate study directory)")
    p_drift = sub.add_parser("drift", help="drift tests of CURRENT candidates against REFERENCE ones")
    p_drift.add_argument("reference", type=Path, help="dataset directory or candidate table (.parquet)")
    p_drift.add_argument("current", type=Path, help="dataset directory or candidate table (.parquet)")
    p_drift.add_argument("--model", type=Path, help="run directory: score and embed dataset directories")
    p_drift.add_argument("--tests", nargs="+", help="drift tests (default: all; see hybrid list)")
    p_drift.add_argument("--alpha", type=float, default=0.05, help="significance level of each test")
    p_drift.add_argument("--reference-split", help="use only this split of REFERENCE (e.g. test)")
    p_drift.add_argument("--out", type=Path, default=Path("outputs/drift"), help="drift.json, drift.md")
    sub.add_parser("list", help="registered plug-ins")
    p_ing = sub.add_parser("ingest", help="convert real alerts or FITS stamps to a dataset directory")
    p_ing.add_argument("inputs", nargs="+", type=Path, help="avro / Parquet files, FITS or avro directories")
    p_ing.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    p_ing.add_argument("--kind", default=None, help="reader name (default: recognised from the input)")
    p_ing.add_argument("--stamp-size", type=int, default=63)
    p_exp = sub.add_parser("export", help="export a training run as a bundle (ONNX, weights, preprocessing)")
    p_exp.add_argument("run_dir", type=Path)
    p_exp.add_argument("--format", default="onnx", choices=["onnx"])
    p_exp.add_argument("--out", type=Path, default=None, help="bundle directory (default RUN_DIR/export)")
    p_exp.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p_exp.add_argument("--rotation-average", action="store_true", help="average 8 flips/rotations (8x work)")
    p_exp.add_argument("--ensemble", nargs="+", type=Path, default=[], help="more run dirs: a deep ensemble")
    p_exp.add_argument("--mc-dropout", type=int, default=0, metavar="S", help="MC dropout with S samples")
    p_exp.add_argument("--temperature", type=float, default=1.0, help="temperature of the real-bogus logits")
    p_pred = sub.add_parser("predict", help="score alerts with an export bundle")
    p_pred.add_argument("bundle", type=Path)
    p_pred.add_argument("inputs", nargs="+", type=Path)
    p_pred.add_argument("--out", type=Path, required=True, help="scores (Parquet; appended to if it exists)")
    p_pred.add_argument("--kind", default=None, help="reader name (default: recognised from the input)")
    p_pred.add_argument("--workers", type=int, default=2, help="worker processes (or threads), one core each")
    p_pred.add_argument("--backend", default="process", choices=["process", "thread"])
    p_pred.add_argument("--batch-size", type=int, default=256)
    p_sim = sub.add_parser("simulate", help="simulate fields and write them as FITS files and truth tables")
    p_sim.add_argument("--out", type=Path, required=True, help="output directory")
    p_sim.add_argument("--fields", type=int, default=1, help="number of fields (ids 0 .. N-1)")
    p_sim.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. survey=rubin sim.shape=[512,512]")
    p_st = sub.add_parser("stream", help="score an alert stream with a bundle (Spark job or Kafka consumer)")
    p_st.add_argument("bundle", type=Path)
    p_st.add_argument("source", help="spark: directory of alert Parquet files; kafka: topics (a,b)")
    p_st.add_argument("--engine", choices=["spark", "kafka"], default="spark")
    p_st.add_argument("--out", required=True, help="spark: Parquet sink directory; kafka: output topic")
    p_st.add_argument("--checkpoint", type=Path, help="spark: checkpoint (default OUT/_checkpoint)")
    p_st.add_argument("--once", action="store_true", help="spark: score the files there now, then stop")
    p_st.add_argument("--files-per-trigger", type=int, default=16, help="spark: files per micro-batch")
    p_st.add_argument("--master", default="local[2]", help="spark: master URL")
    p_st.add_argument("--bootstrap-servers", default="localhost:9092", help="kafka: brokers")
    p_st.add_argument("--group", default="hybrid", help="kafka: consumer group")
    p_st.add_argument("--batch-size", type=int, default=256, help="kafka: messages per batch")
    p_st.add_argument("--at-least-once", action="store_true", help="kafka: no transactions")
    args, extra = parser.parse_known_args(argv)
    if extra:  # Hydra overrides after an option (`hybrid study SPEC --out DIR data.n_fields=4`)
        if not hasattr(args, "overrides") or any(a.startswith("-") for a in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra

    if args.verb == "build":
        from hybrid.data.build import build_dataset

        print(build_dataset(load_config(args.overrides)))
    elif args.verb == "bench":
        from hybrid.bench import run_benchmark

        print(run_benchmark(args.what, load_config(args.overrides), out_dir=args.out, fields=args.fields))
    elif args.verb == "examples":
        from hybrid.data.figures import plot_examples

        print(plot_examples(args.dataset, args.out, per_class=args.per_class))
    elif args.verb == "compare":
        from hybrid.tracking import compare, find_runs, wandb_runs, write_report

        if not args.paths and not args.wandb:
            parser.error("compare: give run or sweep directories, or --wandb ENTITY/PROJECT")
        runs, unfinished = find_runs(args.paths)
        if args.wandb:
            runs += wandb_runs(args.wandb, {"group": args.group} if args.group else None)
        if unfinished:
            print(f"skipped {len(unfinished)} run(s) without metrics.json", file=sys.stderr)
        result = compare(runs, keys=args.keys, metrics=args.metrics, sort=args.sort)
        print(result.markdown())
        if args.out:
            print(
                write_report(
                    result,
                    args.out,
                    x=args.x,
                    title=args.title,
                    description=args.description,
                    plots_of=args.plots_of,
                )
            )
    elif args.verb == "study":
        from hybrid.tracking import load_study, run_study

        study = load_study(args.spec)
        study.seeds = args.seeds or study.seeds
        print(run_study(study, overrides=args.overrides, reports_dir=args.out, run=not args.report_only))
    elif args.verb == "drift":
        from hybrid.monitoring import drift_report, format_report, write_report
        from hybrid.monitoring.describe import load_sample

        ref = load_sample(args.reference, run_dir=args.model, split=args.reference_split)
        cur = load_sample(args.current, run_dir=args.model)
        report = drift_report(ref, cur, tests=args.tests, alpha=args.alpha)
        print(format_report(report))
        print(write_report(report, args.out))
    elif args.verb == "list":
        from hybrid.active import ACQUISITIONS, LABELLERS
        from hybrid.adapters import TEST_TIME_ADAPTERS
        from hybrid.context import ASSOCIATORS
        from hybrid.curation import LABEL_SOURCES
        from hybrid.data.readers import READERS
        from hybrid.models import FUSIONS, IMAGE_ENCODERS, TABULAR_ENCODERS
        from hybrid.monitoring import DRIFT_TESTS
        from hybrid.subtraction import SUBTRACTORS

        registries = (SUBTRACTORS, LABEL_SOURCES, ASSOCIATORS, IMAGE_ENCODERS, TABULAR_ENCODERS, FUSIONS)
        for reg in (*registries, READERS, TEST_TIME_ADAPTERS, DRIFT_TESTS, ACQUISITIONS, LABELLERS):
            print(f"{reg.kind}s: {', '.join(reg.names())}")
    elif args.verb == "ingest":
        from hybrid.data.readers import alerts_to_dataset

        print(alerts_to_dataset(args.inputs, args.out, kind=args.kind, stamp_size=args.stamp_size))
    elif args.verb == "export":
        from hybrid.export import export_run

        print(
            export_run(
                args.run_dir,
                args.out,
                format=args.format,
                checkpoint=args.checkpoint,
                rotation_average=args.rotation_average,
                ensemble=args.ensemble,
                mc_samples=args.mc_dropout,
                temperature=args.temperature,
            )
        )
    elif args.verb == "predict":
        from hybrid.serving import Predictor

        with Predictor(
            args.bundle, workers=args.workers, batch_size=args.batch_size, backend=args.backend
        ) as predictor:
            summary = predictor.predict_to_parquet(args.inputs, args.out, kind=args.kind, progress=True)
        for r in summary.rejected:
            print(f"rejected: {r}", file=sys.stderr)
        print(summary)
    elif args.verb == "stream" and args.engine == "spark":
        from hybrid.serving.spark import local_session, run_stream, stream_alerts

        query = stream_alerts(
            args.bundle,
            args.source,
            args.out,
            checkpoint=args.checkpoint,
            spark=local_session(args.master),
            files_per_trigger=args.files_per_trigger,
            once=args.once,
        )
        print(f"{run_stream(query)} alerts scored into {args.out}")
    elif args.verb == "stream":
        from hybrid.serving.kafka import consume_and_score

        written = consume_and_score(
            args.bundle,
            args.source.split(","),
            args.out,
            bootstrap_servers=args.bootstrap_servers,
            group=args.group,
            batch_size=args.batch_size,
            exactly_once=not args.at_least_once,
        )
        print(f"{written} alerts scored into topic {args.out}")
    elif args.verb == "simulate":
        from hydra.utils import instantiate

        from hybrid.data.fits import write_field
        from hybrid.sim.field import simulate_field

        cfg = load_config(args.overrides)
        survey, sim = instantiate(cfg.survey), instantiate(cfg.sim)
        for field_id in range(args.fields):
            fld = simulate_field(survey, sim, int(cfg.data.seed), field_id)
            for path in write_field(fld, args.out / f"field-{field_id:04d}"):
                print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
