"""The `hybrid` command: thin verbs over the library (the same functions `python run.py` calls).

hybrid build [OVERRIDES...]            build (or reuse) the dataset; Hydra overrides as for run.py
hybrid bench WHAT [--fields N]         benchmarks: build, subtraction, context, train, predict, stream
hybrid bench real [--bundle B] [--out reports/real_ztf]
                                       a bundle on the 586 real ZTF alerts of fink-science (AUC vs drb, ...)
hybrid realism SIM_DATASET REAL_INPUTS... [--out reports/realism_ztf]
                                       simulated vs real: per-statistic table + classifier two-sample tests
hybrid compare RUNS_OR_SWEEPS... [--keys K...] [--metrics M...] [--sort M] [--x K] [--out PATH]
                                       table of runs grouped over seeds (+ plots; Markdown, CSV, PNG)
hybrid study SPEC.yaml [OVERRIDES...]  run an ablation study of experiments/ and write its report
hybrid drift REFERENCE CURRENT [--model RUN_DIR] [--tests T...] [--out DIR]
                                       drift tests of CURRENT against REFERENCE (datasets or tables)
hybrid examples DATASET [--out PNG]    figure of example triplets per class and bogus kind
hybrid list                            registered plug-ins (subtractors, label sources)
hybrid ingest INPUTS... --out DATASET [--kind K] [--context C]
                                       real alerts (ZTF/Rubin avro, Parquet, FITS) -> dataset dir; with
                                       --context (conf/context/C.yaml, e.g. ztf_real) ctx_* from catalogues
hybrid export RUN_DIR [--format onnx] [--out DIR] [--ensemble RUN_DIR... | --mc-dropout S]
                                       a training run -> export bundle (ONNX + preprocessing)
hybrid predict BUNDLE INPUTS... --out SCORES.parquet [--kind K] [--workers N] [--batch-size B] [--context C]
hybrid simulate --out DIR [--fields N] [OVERRIDES...]  simulated fields as FITS + truth, DIR/field-NNNN/
hybrid stream --engine spark BUNDLE SOURCE_DIR --out SINK_DIR [--once]   Spark Structured Streaming job
hybrid stream --engine kafka BUNDLE TOPIC[,TOPIC] --out OUT_TOPIC --bootstrap-servers HOST:PORT
hybrid pipeline SCI.fits REF.fits --out DIR [--catalog CAT] [--bundle B] [--regions] [--pairs LIST]
                [--workers N] [OVERRIDES...]   real frames -> candidates dataset (+ scores, DS9 regions, PNG)
hybrid vet DATASET_OR_SCORES [--bundle B] [--queue bald|entropy|margin|random] [--port P] [OVERRIDES...]
                                       the vetting page (needs the [vet] extra); votes -> curation=human
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from hybrid.bench import BENCHMARKS
from hybrid.config import CONF_DIR, load_config  # noqa: F401  (CONF_DIR: for scripts of older releases)
from hybrid.validation import USER_ERRORS, user_message


def load_context(name: str | None, parser: argparse.ArgumentParser) -> object | None:
    """The associator of conf/context/<name>.yaml, its catalogue files checked (None without a name)."""
    if name is None:
        return None
    from hydra.errors import HydraException
    from hydra.utils import instantiate

    try:
        assoc = instantiate(load_config([f"context={name}"]).context)
    except HydraException as err:
        parser.error(f"--context {name}: {str(err).splitlines()[0]}")
    missing = [s.path for s in assoc.catalogs if s.path and not Path(s.path).expanduser().is_file()]
    if missing:
        parser.error(
            f"--context {name}: catalogue file(s) {missing} not found; fetch them with "
            "`python -m datasets.fink_alerts` and `python -m datasets.prost_bts` (HYBRID_CACHE: the cache)"
        )
    return assoc


def main(argv: list[str] | None = None) -> int:
    """Run a verb; bad input or config ends in one line naming the file or key, and exit status 2."""
    try:
        return _main(argv)
    except USER_ERRORS as err:
        if os.environ.get("HYBRID_DEBUG"):
            raise
        print(f"hybrid: error: {user_message(err)}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
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
    p_bench.add_argument("--out", type=Path, default=None, help="reports dir (real: the reports' stem)")
    p_bench.add_argument("--bundle", type=Path, default=None, help="real: the export bundle to measure")
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
    p_real = sub.add_parser("realism", help="simulated vs real candidates: statistics, two-sample tests")
    p_real.add_argument("sim_dataset", type=Path, help="simulated dataset directory")
    p_real.add_argument("real_inputs", nargs="+", type=Path, help="real alert files (avro, Parquet, ...)")
    p_real.add_argument("--out", type=Path, default=Path("reports/realism_ztf"), help="reports' stem")
    p_real.add_argument("--kind", default=None, help="reader of the real inputs (default: recognised)")
    p_real.add_argument("--max-sim", type=int, default=5000, help="simulated candidates used (subsample)")
    p_real.add_argument("--seed", type=int, default=0)
    sub.add_parser("list", help="registered plug-ins")
    p_ing = sub.add_parser("ingest", help="convert real alerts or FITS stamps to a dataset directory")
    p_ing.add_argument("inputs", nargs="+", type=Path, help="avro / Parquet files, FITS or avro directories")
    p_ing.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    p_ing.add_argument("--kind", default=None, help="reader name (default: recognised from the input)")
    p_ing.add_argument("--stamp-size", type=int, default=63)
    context_help = (
        "context config (conf/context/NAME.yaml, e.g. ztf_real): ctx_* features from its catalogues"
    )
    p_ing.add_argument("--context", default=None, metavar="NAME", help=context_help)
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
    p_pred.add_argument("--context", default=None, metavar="NAME", help=context_help)
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
    p_pipe = sub.add_parser("pipeline", help="real science + reference FITS frames -> candidates (+ scores)")
    p_pipe.add_argument("args", nargs="*", help="SCI.fits REF.fits, then Hydra overrides (key=value)")
    p_pipe.add_argument("--out", type=Path, required=True, help="output directory (a dataset directory)")
    p_pipe.add_argument("--pairs", type=Path, help="text file, one 'SCIENCE REFERENCE [CATALOG]' per line")
    p_pipe.add_argument("--catalog", type=Path, help="source catalogue of the field (FITS, Parquet, CSV)")
    p_pipe.add_argument("--bundle", type=Path, help="export bundle: also write DIR/scores.parquet")
    p_pipe.add_argument("--regions", action="store_true", help="DS9 regions + PNG per pair in DIR/regions/")
    p_pipe.add_argument("--workers", type=int, default=1, help="frame pairs processed in parallel")
    p_vet = sub.add_parser(
        "vet", help="the vetting page: label candidates in a browser (votes -> curation=human)"
    )
    p_vet.add_argument("source", type=Path, help="dataset directory, or a scores file of `hybrid predict`")
    p_vet.add_argument("--bundle", type=Path, help="export bundle to score a dataset with")
    p_vet.add_argument("--queue", default="entropy", choices=["bald", "entropy", "margin", "random"])
    p_vet.add_argument("--port", type=int, default=5000)
    p_vet.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: the network)")
    p_vet.add_argument("--votes", type=Path, default=Path("outputs/vet/votes.sqlite"), help="vote database")
    p_vet.add_argument("--work-dir", type=Path, help="scores and rounds (default outputs/vet/<input name>)")
    p_vet.add_argument("--volunteer", default="volunteer", help="name of volunteers who have not given one")
    p_vet.add_argument("--retire-after", type=int, default=3, help="votes after which a candidate is retired")
    p_vet.add_argument("--threshold", type=float, default=0.5, help="score threshold of the model review")
    p_vet.add_argument(
        "overrides", nargs="*", help="Hydra overrides of the retraining (active-learning rounds)"
    )
    args, extra = parser.parse_known_args(argv)
    if args.verb == "pipeline":  # positional: frame paths, then Hydra overrides
        args.overrides = [a for a in args.args if "=" in a]
        args.frames = [Path(a) for a in args.args if "=" not in a]
    if extra:  # Hydra overrides after an option (`hybrid study SPEC --out DIR data.n_fields=4`)
        if not hasattr(args, "overrides") or any(a.startswith("-") for a in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra

    if args.verb == "build":
        from hybrid.data.build import build_dataset

        print(build_dataset(load_config(args.overrides)))
    elif args.verb == "bench":
        from hybrid.bench import run_benchmark

        if args.bundle is not None and args.what != "real":
            parser.error("bench: --bundle is an option of `hybrid bench real` only")
        cfg = load_config(args.overrides)
        print(run_benchmark(args.what, cfg, out_dir=args.out, fields=args.fields, bundle=args.bundle))
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
    elif args.verb == "realism":
        from hybrid.evaluation.realism import write_realism_report

        print(
            write_realism_report(
                args.sim_dataset,
                args.real_inputs,
                args.out,
                kind=args.kind,
                max_sim=args.max_sim,
                seed=args.seed,
            )
        )
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

        context = load_context(args.context, parser)
        print(
            alerts_to_dataset(
                args.inputs, args.out, kind=args.kind, stamp_size=args.stamp_size, context=context
            )
        )
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

        context = load_context(args.context, parser)
        with Predictor(
            args.bundle,
            workers=args.workers,
            batch_size=args.batch_size,
            backend=args.backend,
            context=context,
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
    elif args.verb == "pipeline":
        from hybrid.exposure import InvalidExposureError
        from hybrid.pipeline import FramePair, read_pairs, run_pipeline

        if bool(args.frames) == bool(args.pairs) or len(args.frames) not in (0, 2):
            parser.error("pipeline: give SCI.fits REF.fits, or --pairs LIST")
        pairs = (
            read_pairs(args.pairs, args.catalog) if args.pairs else [FramePair.of(*args.frames, args.catalog)]
        )
        try:
            out = run_pipeline(
                load_config(args.overrides),
                pairs,
                args.out,
                bundle=args.bundle,
                regions=args.regions,
                workers=args.workers,
            )
        except (InvalidExposureError, FileNotFoundError) as err:
            print(f"hybrid pipeline: {err}", file=sys.stderr)
            return 2
        print(out)
    elif args.verb == "vet":
        return _vet(args)
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


def _vet(args: argparse.Namespace) -> int:
    """``hybrid vet``: open the session, then serve the page until interrupted."""
    from hybrid.data.dataset import DatasetError

    try:
        from hybrid.vet import open_session
        from hybrid.vet.app import create_app
        from hybrid.vet.rounds import active_round

        session, work = open_session(
            args.source,
            bundle=args.bundle,
            queue=args.queue,
            votes=args.votes,
            work_dir=args.work_dir,
            retire_after=args.retire_after,
            threshold=args.threshold,
        )
    except ModuleNotFoundError as err:
        print(f'hybrid vet: {err}; install the page with `pip install -e ".[vet]"`', file=sys.stderr)
        return 2
    except (DatasetError, FileNotFoundError, KeyError, ValueError) as err:
        print(f"hybrid vet: {err}", file=sys.stderr)
        return 2
    cfg = load_config(args.overrides)
    app = create_app(session, volunteer=args.volunteer, start_round=lambda s: active_round(s, cfg, work))
    print(f"vetting {session.pool.name}: {len(session.pool)} candidates, queue {args.queue}")
    print(f"votes go to {args.votes}")
    print(f"open http://{args.host}:{args.port}/", flush=True)
    app.run(host=args.host, port=args.port, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
