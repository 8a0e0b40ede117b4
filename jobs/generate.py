"""Entry point of the generate stage (no Spark needed)."""

from __future__ import annotations

import argparse

from deepfm import strict_json
from deepfm.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, help="rows to write (overrides generate.rows)")
    parser.add_argument("--output", help="output directory (overrides generate.output)")
    parser.add_argument("--days", type=int, help="write a dated stream of this many days, dt=YYYY-MM-DD/ each, "
                                                 "drifting as generate.drift says (overrides generate.days)")


def run(cfg: Config, args: argparse.Namespace) -> int:
    from pipelines.drift import generate_stream
    from pipelines.generate import generate

    gen = cfg.require("generate")
    updates = {k: v for k, v in (("rows", args.rows), ("output", args.output), ("days", args.days)) if v is not None}
    if updates:
        gen = gen.model_validate({**gen.model_dump(), **updates})
    print(strict_json.dumps(generate_stream(gen) if gen.days else generate(gen)))
    return 0
