"""Checkpoints and model files, written atomically and read without unpickling code.

Everything goes through `torch.save` of plain containers of tensors and numbers, so readers use
`torch.load(..., weights_only=True)`: a checkpoint from an untrusted path cannot run code. Paths
are `Location`s: a local path or any URI `deepfm.fs` reaches.
"""

from __future__ import annotations

import io
import json
from typing import Any

import torch

from deepfm.fs import Location, Where

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.pt"
MODEL_CONFIG = "model.json"
METRICS = "metrics.json"


def save_torch(obj: Any, where: Where) -> None:
    Location.of(where).write_with(lambda f: torch.save(obj, f))


def save_json(obj: Any, where: Where) -> None:
    Location.of(where).write_text(json.dumps(obj, indent=2, sort_keys=True))


def load_torch(where: Where, map_location: str | torch.device = "cpu") -> Any:
    location = Location.of(where)
    if not location.is_file():
        raise FileNotFoundError(f"{location} not found")
    source = location.local_path if location.is_local else io.BytesIO(location.read_bytes())
    return torch.load(source, map_location=map_location, weights_only=True)
