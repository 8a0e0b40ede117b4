"""Entry point of the tune stage: a search over train settings on validation AUC, trials as Spark tasks."""

from __future__ import annotations

import argparse

from deepfm import strict_json
from deepfm.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options of its own: the search is the `tune:` section (conf/tune.yaml)."""


def run(cfg: Config, args: argparse.Namespace) -> int:
    from deepfm.storage.location import Location
    from deepfm.tracking.runs import log_tuning
    from pipelines.spark import get_spark
    from pipelines.tune import run_tune

    result = run_tune(get_spark(cfg.spark, "tune"), cfg)
    mlflow_run = log_tuning(cfg, Location.of(result.output))
    print(strict_json.dumps({"output": result.output, "trials": result.trials, "best_valid_auc": result.best_value,
                             "best_settings": result.best_settings, "mlflow_run": mlflow_run}))
    return 0
