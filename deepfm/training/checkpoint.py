"""Checkpoints and weights, written atomically and read without unpickling code.

Everything goes through `torch.save` of plain containers of tensors and numbers, so readers use
`torch.load(..., weights_only=True)`: a checkpoint from an untrusted path cannot run code. Paths
are `Location`s: a local path or any URI `deepfm.storage.location` reaches.
"""

from __future__ import annotations

import io
import json
from typing import Any

import torch

from deepfm import strict_json
from deepfm.storage.location import Location, Where

CHECKPOINT = "checkpoint.pt"


def save_torch(obj: Any, where: Where) -> None:
    Location.of(where).write_with(lambda f: torch.save(obj, f))


def save_json(obj: Any, where: Where) -> None:
    Location.of(where).write_text(strict_json.dumps(obj, indent=2, sort_keys=True))


def load_torch(where: Where, map_location: str | torch.device = "cpu") -> Any:
    location = Location.of(where)
    if not location.is_file():
        raise FileNotFoundError(f"{location} not found")
    source = location.local_path if location.is_local else io.BytesIO(location.read_bytes())
    return torch.load(source, map_location=map_location, weights_only=True)


# ------------------------------------------------------------------------- the training checkpoint
def save_checkpoint(where: Where, model: torch.nn.Module, optimizers: list, schedulers: list, state: dict[str, Any],
                    averaged: torch.nn.Module | None = None) -> None:
    """Everything a resumed run needs to continue at the same step as if never stopped: weights,
    optimizer and scheduler state, the loop's position (`state`, JSON-able), the RNG, and the
    moving average of the weights when training keeps one."""
    save_torch({
        "model": model.state_dict(),
        "optimizers": [o.state_dict() for o in optimizers],
        "schedulers": [s.state_dict() for s in schedulers],
        "state": json.dumps(state),
        "torch_rng": torch.get_rng_state(),
        **({"averaged": averaged.state_dict()} if averaged is not None else {}),
    }, where)


def restore_checkpoint(where: Where, model: torch.nn.Module, optimizers: list, schedulers: list,
                       averaged: torch.nn.Module | None = None,
                       map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a `save_checkpoint` file into the run's objects; returns the loop's state."""
    saved = load_torch(where, map_location)
    model.load_state_dict(saved["model"])
    if averaged is not None:
        if "averaged" not in saved:
            raise ValueError(f"{where} was written without train.ema_decay: resume with the same training config")
        averaged.load_state_dict(saved["averaged"])
    for opt, st in zip(optimizers, saved["optimizers"], strict=True):
        opt.load_state_dict(st)
    for sch, st in zip(schedulers, saved["schedulers"], strict=True):
        sch.load_state_dict(st)
    torch.set_rng_state(saved["torch_rng"].cpu())
    return json.loads(saved["state"])
