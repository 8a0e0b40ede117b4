"""Checkpoints and model directories, written atomically and read without unpickling code.

Everything goes through `torch.save` of plain containers of tensors and numbers, so readers use
`torch.load(..., weights_only=True)`: a checkpoint from an untrusted path cannot run code.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.pt"
MODEL_CONFIG = "model.json"
METRICS = "metrics.json"


def atomic_write_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_torch(obj: Any, path: Path) -> None:
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


def save_json(obj: Any, path: Path) -> None:
    atomic_write_bytes(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True).encode()))


def load_torch(path: Path, map_location: str | torch.device = "cpu") -> Any:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    return torch.load(path, map_location=map_location, weights_only=True)
