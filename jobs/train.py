"""Entry point of the train stage: data-parallel DeepFM training on the preprocess output."""

from __future__ import annotations

import argparse
import json

from deepfm.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint in train.output (model, optimizer, epoch, step, RNG)")


def run(cfg: Config, args: argparse.Namespace) -> int:
    from deepfm.launch import run_training

    train_cfg = cfg.require("train")
    if train_cfg.launcher == "spark":
        from pipelines.spark import get_spark

        get_spark(cfg.spark, "train")
    result = run_training(train_cfg, resume=args.resume)
    print(json.dumps({"output": train_cfg.output, "test": result["test"], "valid_auc_best": result["valid_auc_best"],
                      "epochs": result["epochs"], "workers": result["workers"]}))
    return 0
