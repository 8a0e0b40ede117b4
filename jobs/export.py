"""Entry point of the export stage: a trained model directory to TorchScript."""

from __future__ import annotations

import argparse

from deepfm import strict_json
from deepfm.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="DIR", help="the model directory (default: train.output)")
    parser.add_argument("--output", metavar="FILE", help="where to write (default: DIR/model.torchscript.pt)")


def run(cfg: Config, args: argparse.Namespace) -> int:
    from deepfm.serving.export import export_torchscript
    from deepfm.training.model_versions import open_model_version

    model = args.model or cfg.require("train").output
    path, difference = export_torchscript(open_model_version(model), args.output)
    print(strict_json.dumps({"torchscript": str(path), "max_abs_difference": difference}))
    return 0
