"""Entry point of the track command: send the MLflow tracking that failed when versions were trained."""

from __future__ import annotations

import argparse

from deepfm import strict_json
from deepfm.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options of its own: the model root is train.output, the store is the `tracking:` section."""


def run(cfg: Config, args: argparse.Namespace) -> int:
    from deepfm.storage.location import Location
    from deepfm.tracking.runs import pending_versions, send_pending

    root = Location.of(cfg.require("train").output)
    if not cfg.tracking.enabled:
        raise ValueError("tracking.enabled is false: set it to true to send pending tracking")
    sent = send_pending(cfg, root)
    left = pending_versions(root)
    print(strict_json.dumps({"model_root": str(root), "sent": sent, "pending": left}))
    if left:
        raise ConnectionError(f"{len(left)} model version(s) of {root} are still not tracked ({', '.join(left)}): the "
                              f"tracking store at {cfg.tracking.destination()[0]} did not take them")
    return 0
