"""Entry point of the evaluate stage: metrics, plots and an HTML report."""

from __future__ import annotations

import argparse

from deepfm import strict_json
from deepfm.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(cfg: Config, args: argparse.Namespace) -> int:
    from deepfm.tracking.runs import log_report
    from pipelines.evaluate import run_evaluate
    from pipelines.spark import get_spark

    cfg.require("evaluate")
    result = run_evaluate(get_spark(cfg.spark, "evaluate", args.run_date), cfg)
    mlflow_run = log_report(cfg, result.report, result.metrics, result.model)
    print(strict_json.dumps({"report": str(result.report), "overall": result.metrics["overall"],
                             "mlflow_run": mlflow_run}))
    return 0
