"""The model directory: what the train stage writes and the score, evaluate and export stages read.

    model.pt                  weights (a plain state dict: loads with weights_only=True)
    model.json                model config, feature map, vocabulary fingerprint, training config
    metrics.json              test metrics and the per-epoch history
    training_curves.png       loss and validation AUC against step
    vocab/vocabulary.parquet  the exact vocabulary the model was trained with
    model.torchscript.pt      after `deepfm-pipeline export`

Readers get a `ModelDir`, checked for completeness, and never unpickle anything from it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from deepfm import checkpoint as ckpt
from deepfm.feature_map import FeatureMap
from deepfm.model import DeepFM, DeepFMConfig

VOCABULARY = "vocab/vocabulary.parquet"
CURVES = "training_curves.png"
TORCHSCRIPT = "model.torchscript.pt"


class ModelDirError(ValueError):
    """A model directory that is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class ModelDir:
    path: Path
    config: DeepFMConfig
    feature_map: FeatureMap
    vocab_fingerprint: str
    version: str  # content hash of the weights: two models with equal versions score identically

    @property
    def weights(self) -> Path:
        return self.path / ckpt.WEIGHTS

    @property
    def vocabulary(self) -> Path:
        return self.path / VOCABULARY

    def load(self, device: str | torch.device = "cpu") -> DeepFM:
        """The model in eval mode, weights loaded with weights_only=True."""
        model = DeepFM(self.config)
        model.load_state_dict(ckpt.load_torch(self.weights, device))
        return model.to(device).eval()


def open_model_dir(path: str | Path) -> ModelDir:
    """Read and check a model directory; every problem names the file to look at."""
    path = Path(path)
    if not path.is_dir():
        raise ModelDirError(f"model directory {path} does not exist (train one with `deepfm-pipeline train`)")
    for name in (ckpt.MODEL_CONFIG, ckpt.WEIGHTS):
        if not (path / name).is_file():
            raise ModelDirError(f"{path / name} is missing: {path} is not a complete model directory")
    try:
        meta = json.loads((path / ckpt.MODEL_CONFIG).read_text())
        config = DeepFMConfig.from_dict(meta["model"])
        fmap = FeatureMap.from_dict(meta["feature_map"])
        fingerprint = meta["vocab_fingerprint"]
    except (ValueError, KeyError, TypeError) as err:
        raise ModelDirError(f"{path / ckpt.MODEL_CONFIG} is unreadable: {err!r}") from err
    return ModelDir(path, config, fmap, fingerprint, _file_hash(path / ckpt.WEIGHTS)[:16])


def write_model_dir(out: Path, model: DeepFM, fmap: FeatureMap, vocab_fingerprint: str, data: Path,
                    train_config: dict[str, Any], result: dict[str, Any]) -> None:
    """Rank 0 writes everything but the weights (saved as training improves) and the curves."""
    ckpt.save_json({
        "model": model.config.to_dict(),
        "feature_map": fmap.to_dict(),
        "vocab_fingerprint": vocab_fingerprint,
        "data": str(data.resolve()),
        "train": train_config,
    }, out / ckpt.MODEL_CONFIG)
    ckpt.save_json(result, out / ckpt.METRICS)
    vocab = data / "vocab" / "vocabulary.parquet"
    if vocab.exists():  # the scorer needs the exact vocabulary the model was trained with
        (out / VOCABULARY).parent.mkdir(exist_ok=True)
        shutil.copyfile(vocab, out / VOCABULARY)


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
