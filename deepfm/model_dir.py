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
import pickle
from dataclasses import dataclass
from typing import Any

import torch

from deepfm import checkpoint as ckpt
from deepfm import model_versions
from deepfm.errors import first_line
from deepfm.feature_map import FeatureMap
from deepfm.fs import Location, Where
from deepfm.model import DeepFM, DeepFMConfig
from deepfm.preprocess_output import PreprocessOutput

VOCABULARY = "vocab/vocabulary.parquet"
CURVES = "training_curves.png"
TORCHSCRIPT = "model.torchscript.pt"


class ModelDirError(ValueError):
    """A model directory that is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class ModelDir:
    path: Location
    config: DeepFMConfig
    feature_map: FeatureMap
    vocab_fingerprint: str
    version: str  # content hash of the weights: two models with equal versions score identically

    @property
    def weights(self) -> Location:
        return self.path / ckpt.WEIGHTS

    @property
    def vocabulary(self) -> Location:
        return self.path / VOCABULARY

    def load(self, device: str | torch.device = "cpu") -> DeepFM:
        """The model in eval mode, weights loaded with weights_only=True.

        Score and evaluate call this on the driver before any input work, so that a corrupt or
        foreign model.pt fails in a second with its name, not in every executor minutes later.
        """
        model = DeepFM(self.config)
        try:
            model.load_state_dict(ckpt.load_torch(self.weights, device))
        except pickle.UnpicklingError:
            # torch's message advises weights_only=False, which would run whatever code the file holds.
            raise ModelDirError(f"{self.weights} holds objects other than tensors and was refused (loading it could "
                                "run code): use a model.pt written by `deepfm-pipeline train`") from None
        except (RuntimeError, EOFError, KeyError, TypeError, ValueError) as err:
            raise ModelDirError(f"{self.weights} is not a readable state dict of the model in "
                                f"{self.path / ckpt.MODEL_CONFIG} ({first_line(err)}): retrain, or copy the model "
                                "directory again") from None
        return model.to(device).eval()


def open_model_dir(where: Where) -> ModelDir:
    """Read and check a model directory (a local path or URI), or a model root's latest version
    (deepfm/model_versions.py); every problem names the file to look at."""
    path = model_versions.resolve(where)
    missing = [name for name in (ckpt.MODEL_CONFIG, ckpt.WEIGHTS) if not (path / name).is_file()]
    if len(missing) == 2 and not path.is_dir():  # an object store has no directories, only its files
        raise ModelDirError(f"model directory {path} does not exist (train one with `deepfm-pipeline train`)")
    if missing:
        raise ModelDirError(f"{path / missing[0]} is missing: {path} is not a complete model directory")
    try:
        meta = json.loads((path / ckpt.MODEL_CONFIG).read_text())
        config = DeepFMConfig.from_dict(meta["model"])
        fmap = FeatureMap.from_dict(meta["feature_map"])
        fingerprint = meta["vocab_fingerprint"]
    except (ValueError, KeyError, TypeError) as err:
        raise ModelDirError(f"{path / ckpt.MODEL_CONFIG} is unreadable: {err!r}") from err
    fmap.check_transforms(path / ckpt.MODEL_CONFIG)
    return ModelDir(path, config, fmap, fingerprint, _file_hash(path / ckpt.WEIGHTS)[:16])


def write_model_dir(out: Location, model: DeepFM, data: PreprocessOutput, train_config: dict[str, Any],
                    result: dict[str, Any]) -> None:
    """Rank 0 writes everything but the weights (saved as training improves) and the curves."""
    ckpt.save_json({
        "model": model.config.to_dict(),
        "feature_map": data.feature_map.to_dict(),
        "vocab_fingerprint": data.vocab_fingerprint,
        "data": str(data.location),
        "train": train_config,
    }, out / ckpt.MODEL_CONFIG)
    ckpt.save_json(result, out / ckpt.METRICS)
    if data.vocabulary.is_file():  # the scorer needs the exact vocabulary the model was trained with
        data.vocabulary.copy_to(out / VOCABULARY)


def _file_hash(path: Location) -> str:
    digest = hashlib.sha256()
    with path.filesystem.open_input_stream(path.path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
