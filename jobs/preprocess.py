"""Entry point of the preprocess stage."""

from __future__ import annotations

import argparse

from deepfm import strict_json
from deepfm.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="rebuild even when the output matches the input and config")


def run(cfg: Config, args: argparse.Namespace) -> int:
    from pipelines.preprocess import run_preprocess
    from pipelines.spark import get_spark

    cfg.require("dataset"), cfg.require("preprocess")
    spark = get_spark(cfg.spark, "preprocess", args.run_date)
    result = run_preprocess(spark, cfg, force=args.force)
    rows = result.manifest.rows
    print(strict_json.dumps({
        "output": result.output,
        "skipped": result.skipped,
        "rows": {"input": rows.input, "accepted": rows.accepted, "rejected": rows.rejected},
        "splits": {name: split.rows for name, split in rows.splits.items()},
        "vocab_sizes": result.manifest.vocab_sizes,
    }))
    return 0
