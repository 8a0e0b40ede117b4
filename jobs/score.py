"""Entry point of the score stage: batch scoring of click logs with a trained model."""

from __future__ import annotations

import argparse
import datetime as dt

from deepfm import strict_json
from deepfm.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The output partition is score.output/run_date=D/; a rerun of a date replaces it.
    parser.set_defaults(run_date=dt.date.today().isoformat())


def run(cfg: Config, args: argparse.Namespace) -> int:
    from pipelines.score import run_score
    from pipelines.spark import get_spark

    cfg.require("score")
    result = run_score(get_spark(cfg.spark, "score", args.run_date), cfg, args.run_date)
    print(strict_json.dumps({"output": result.partition, "rows": result.rows, "rejected": result.rejected,
                      "model_version": result.model_version, "model_digest": result.model_digest,
                             "seconds": round(result.seconds, 1)}))
    return 0
