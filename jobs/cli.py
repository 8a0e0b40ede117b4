"""`deepfm-pipeline STAGE`: one command line for every stage of the pipeline."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from deepfm import errors, logs
from deepfm.config import load_config, packaged_conf_dir, parse_run_date


def _conf(*names: str) -> list[str]:
    """Packaged configuration files (deepfm/conf, or $DEEPFM_CONF_DIR): never a same-named file in
    the current directory."""
    return [str(packaged_conf_dir() / n) for n in names]


STAGES = {
    "generate": ("jobs.generate", "write synthetic Criteo-shaped click logs with known true CTR",
                 _conf("base.yaml", "datasets/synthetic.yaml", "env/local.yaml")),
    "preprocess": ("jobs.preprocess", "raw click logs -> vocabularies, Parquet shards, manifest",
                   _conf("base.yaml", "datasets/criteo.yaml", "env/local.yaml")),
    "train": ("jobs.train", "train DeepFM on the shards (1..N workers, Horovod or torch.distributed)",
              _conf("base.yaml", "datasets/criteo.yaml", "env/local.yaml")),
    "tune": ("jobs.tune", "search train settings on validation AUC (Optuna), one Spark task per trial",
             _conf("base.yaml", "datasets/criteo.yaml", "env/local.yaml", "tune.yaml")),
    "score": ("jobs.score", "score click logs with a trained model into Parquet partitioned by run date",
              _conf("base.yaml", "datasets/criteo.yaml", "env/local.yaml")),
    "evaluate": ("jobs.evaluate", "AUC, logloss, calibration and slices of predictions, as JSON, PNGs and HTML",
                 _conf("base.yaml", "datasets/criteo.yaml", "env/local.yaml")),
    "track": ("jobs.track", "send the MLflow tracking of model versions trained while the tracking store was "
              "unreachable", _conf("base.yaml", "datasets/criteo.yaml", "env/local.yaml")),
    "next-day": ("jobs.next_day", "judge the model serving on a new date's logs before training on them (progressive "
                 "validation): a report per date and the history", _conf("base.yaml", "datasets/criteo.yaml",
                                                                           "env/local.yaml", "schedule/daily.yaml")),
    "export": ("jobs.export", "export a trained model to TorchScript (checked against the eager model)",
               _conf("base.yaml", "datasets/criteo.yaml", "env/local.yaml")),
}

DATED_STAGES = ("preprocess", "train", "score", "evaluate", "next-day")


def _run_date(text: str) -> str:
    try:
        return parse_run_date(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--run-date ")) from None


EPILOG = """\
Configuration is layered: each --conf file overrides the ones before it, then each --set.
Without --conf a stage uses conf/base.yaml, its default data set and conf/env/local.yaml.
A --conf that is not a file is looked up in the packaged configuration (conf/..., or
$DEEPFM_CONF_DIR). Relative paths in any key are relative to the current directory.
Example:
  deepfm-pipeline preprocess --conf conf/base.yaml --conf conf/datasets/obd.yaml \\
      --conf conf/env/local.yaml --set preprocess.output=out/obd
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepfm-pipeline",
        description="DeepFM click-through-rate pipeline on Spark.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage, (module, help_text, defaults) in STAGES.items():
        p = sub.add_parser(stage, help=help_text, description=help_text, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--conf", action="append", metavar="FILE",
                       help=f"YAML config file, repeatable (default: {' '.join(defaults)})")
        p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="overrides",
                       help="override one config value (YAML syntax), repeatable")
        p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
        if stage in DATED_STAGES:
            p.add_argument("--run-date", type=_run_date, metavar="YYYY-MM-DD",
                           help="the run's logical date (Airflow's {{ ds }}): replaces {run_date} in any "
                                "config value, names the app, and names train's model version (docs/airflow.md); "
                                "score defaults to today")
        __import__(module, fromlist=["add_arguments"]).add_arguments(p)
        p.set_defaults(module=module, default_conf=defaults)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level)
    code = errors.RETRY
    try:
        cfg = load_config(args.conf or args.default_conf, args.overrides, getattr(args, "run_date", None))
        code = int(__import__(args.module, fromlist=["run"]).run(cfg, args) or 0)
    except Exception as err:  # noqa: BLE001 - the exit-code contract: every failure ends in one line and a code
        code = errors.exit_code(err)
        if args.log_level == "DEBUG" or not errors.is_expected(err):  # a bug: its traceback is the report
            logging.getLogger("deepfm").exception("%s failed", args.stage)
        spark_log = logs.written_spark_log()
        details = f" (Spark's log: {spark_log})" if spark_log else ""
        if code in (errors.DO_NOT_RETRY, errors.GATE_REJECTED):  # our own message, which may list every problem
            print(f"deepfm-pipeline {args.stage}: error: {err}{details}", file=sys.stderr)
        else:
            print(f"deepfm-pipeline {args.stage}: error: {errors.first_line(err)} (a transient or internal "
                  f"failure: retrying may succeed){details}", file=sys.stderr)
    finally:
        _stop_spark(code)
    return code


def _stop_spark(code: int) -> None:
    """Stop the session a stage started: under spark-submit a live SparkContext (after
    TorchDistributor, say) keeps the launcher's JVM running after the job is done."""
    if "pyspark" not in sys.modules:
        return
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()
    if os.environ.get("PYSPARK_GATEWAY_PORT") and SparkContext._jvm is not None:  # launched by spark-submit
        _exit_jvm_held_by_barrier_timer(SparkContext._jvm, code)


def _exit_jvm_held_by_barrier_timer(jvm, code: int) -> None:
    """Spark 3.5's barrier tasks (TorchDistributor) leave a non-daemon timer thread in a local-mode
    driver JVM (SPARK-49479, SPARK-51450), so spark-submit never returns after the job ends.
    When that thread is there, end the JVM ourselves: its shutdown hooks still run."""
    threads = jvm.java.lang.Thread.getAllStackTraces().keySet().toArray()
    holding = [t.getName() for t in threads if not t.isDaemon() and "barrier" in t.getName().lower()]
    if not holding:
        return
    logging.getLogger(__name__).info("ending the JVM held by Spark's barrier timer thread %s", holding)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        jvm.java.lang.System.exit(code)
    finally:
        os._exit(code)  # the JVM is gone, and with it the gateway this process talks through


if __name__ == "__main__":  # spark-submit runs this file directly
    sys.exit(main())
