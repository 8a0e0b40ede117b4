"""Entry point of the train stage: data-parallel DeepFM training on the preprocess output."""

from __future__ import annotations

import argparse

from deepfm import strict_json
from deepfm.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume", nargs="?", const=True, default=False, choices=["auto"],
                        help="continue the interrupted run of this --run-date (without one: the newest interrupted "
                             "run) from its checkpoint (model, optimizer, epoch, step, RNG). `--resume auto`: only "
                             "when a run of the same input and config left one, else train as usual (for a "
                             "scheduler's retries)")
    parser.add_argument("--force", action="store_true",
                        help="train even when the version this run would replace has the same input and config")
    parser.add_argument("--promote", choices=["force"],
                        help="`force`: the new version becomes LATEST whatever the promotion gate (promote.gate) "
                             "says; its figures are still recorded. A rejected version exits 3")


def run(cfg: Config, args: argparse.Namespace) -> int:
    from deepfm.errors import PromotionRejected
    from deepfm.tracking.runs import log_training
    from deepfm.training.launch import run_training

    train_cfg = cfg.require("train")
    if train_cfg.launcher == "spark":
        from pipelines.spark import get_spark

        get_spark(cfg.spark, "train", args.run_date)
    try:
        trained = run_training(train_cfg, resume=args.resume, run_date=args.run_date, force=args.force,
                               promote=cfg.promote, force_promotion=args.promote == "force")
    except PromotionRejected as rejected:
        if rejected.trained is not None:  # committed as a rejected version: tracked like any other
            log_training(cfg, rejected.trained, args.run_date)
        raise
    mlflow_run = log_training(cfg, trained, args.run_date)
    result = trained.result
    print(strict_json.dumps({"model": trained.model, "version": trained.version, "up_to_date": trained.up_to_date,
                             "mlflow_run": mlflow_run, "test": result.test, "valid_auc_best": result.valid_auc_best,
                             "epochs": result.epochs, "workers": result.workers,
                             "promotion": trained.promotion.decision if trained.promotion else None}))
    return 0
