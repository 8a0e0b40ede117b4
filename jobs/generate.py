"""Entry point of the generate stage (no Spark needed)."""

from __future__ import annotations

import argparse

from deepfm import strict_json
from deepfm.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, help="rows to write (overrides generate.rows)")
    parser.add_argument("--output", help="output directory (overrides generate.output)")


def run(cfg: Config, args: argparse.Namespace) -> int:
    from pipelines.generate import generate

    gen = cfg.require("generate")
    updates = {k: v for k, v in (("rows", args.rows), ("output", args.output)) if v is not None}
    if updates:
        gen = gen.model_validate({**gen.model_dump(), **updates})
    print(strict_json.dumps(generate(gen)))
    return 0
