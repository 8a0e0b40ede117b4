"""Entry point of the next-day stage: the model serving, judged on a new date's logs before training on them."""

from __future__ import annotations

import argparse

from deepfm import strict_json
from deepfm.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(run_date=None)


def run(cfg: Config, args: argparse.Namespace) -> int:
    from deepfm.tracking.runs import log_report
    from pipelines.next_day import run_next_day
    from pipelines.spark import get_spark

    cfg.require("next_day")
    if args.run_date is None:
        raise ValueError("next-day needs --run-date YYYY-MM-DD: the date whose logs the serving model is judged on")
    result = run_next_day(get_spark(cfg.spark, "next-day", args.run_date), cfg, args.run_date)
    if result is None:
        print(strict_json.dumps({"run_date": args.run_date, "skipped": "no version serving yet"}))
        return 0
    # Beside the serving version's own test figures (eval_*), in its MLflow run: next_day_* by date.
    mlflow_run = log_report(cfg, result.report, result.metrics, result.model, prefix="next_day_",
                            artifacts=f"next_day/run_date={args.run_date}")
    print(strict_json.dumps({"run_date": args.run_date, "version": result.version, "overall": result.metrics["overall"],
                             "report": str(result.report), "history": str(result.history), "mlflow_run": mlflow_run}))
    return 0
