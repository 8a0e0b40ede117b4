"""Scoring Arrow record batches: the part of batch scoring that runs inside Spark's Python workers.

No Spark here, so the same code scores in-process (tests, benchmarks) and in executors. The model
is built once per Python process and cached by its weights' digest: Spark reuses its Python workers across
tasks (spark.python.worker.reuse, on by default), so a worker loads each model once, not once per
batch or partition.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from deepfm.features.encode import FeatureEncoder, cached_encoder
from deepfm.features.parse import ParseLines
from deepfm.model import DeepFM, DeepFMConfig
from deepfm.training.model_versions import map_model

PROBABILITY = "probability"

_MODELS: dict[str, DeepFM] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ArrowScorer:
    """A picklable callable for `DataFrame.mapInArrow`: model inputs in, `keep` + probability out.

    `weights` returns the serialized state dict (a Spark broadcast's `.value`, or the file's bytes),
    or the local paths of the version's weight files, which are memory-mapped (`map_model`: for a
    model bigger than the process's memory); it is called only by the first batch a process sees
    for this model version. With `vocabulary`
    (the Arrow IPC bytes of the model's vocabulary, likewise) and `feature_map`, batches hold raw
    feature values, and each is encoded here (deepfm/features/encode.py) before the model sees it.
    """

    weights_digest: str
    model_config: dict[str, Any]
    categorical: tuple[str, ...]
    dense: tuple[str, ...]
    keep: tuple[str, ...]
    weights: Callable[[], bytes | list[str]]
    threads: int = 1
    device: str = "auto"
    feature_map: dict[str, Any] | None = None
    vocabulary: Callable[[], bytes] | None = None

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield pa.RecordBatch.from_arrays(
                [*(batch.column(name) for name in self.keep), pa.array(self.probabilities(batch), pa.float32())],
                names=[*self.keep, PROBABILITY],
            )

    def probabilities(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        model, device = self._model()
        encoder = self._encoder()
        inputs = batch if encoder is None else encoder.encode(batch)
        return predict_batch(model, inputs, self.categorical, self.dense, device)

    def _model(self) -> tuple[DeepFM, torch.device]:
        device = torch.device("cuda" if self.device != "cpu" and torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and device.type != "cuda":
            raise RuntimeError("score.device is 'cuda' but this executor sees no GPU; set score.device=auto")
        torch.set_num_threads(self.threads)
        key = f"{self.weights_digest}/{device}"
        with _LOCK:
            if key not in _MODELS:
                weights = self.weights()
                _MODELS[key] = (map_model(DeepFMConfig.from_dict(self.model_config), weights).to(device)
                                if isinstance(weights, list) else load_state(self.model_config, weights, device))
            return _MODELS[key], device

    def _encoder(self) -> FeatureEncoder | None:
        return None if self.feature_map is None else cached_encoder(self.feature_map, self.vocabulary)


@dataclass(frozen=True)
class LineScorer:
    """A picklable callable for `DataFrame.mapInArrow` over raw text lines (`pipelines.read.raw_lines`):
    each batch parsed in Arrow (deepfm/features/parse.py), its good rows encoded and scored by `scorer`.

    Out: the `keep` columns (the label as float32), `probability`, and the reason, raw line, raw
    bytes and source of the rejected rows (null for good ones; their probability is null).
    """

    parse: ParseLines
    scorer: ArrowScorer  # with a feature map and vocabulary: it encodes raw values
    keep: tuple[str, ...]
    label: str | None

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        bookkeeping = list(self.parse.bookkeeping[:4])
        for parsed in self.parse(batches):
            good = pc.is_null(parsed.column(bookkeeping[0])).to_numpy(zero_copy_only=False)
            if good.all():  # the usual batch: no copy of its rows
                probability = self.scorer.probabilities(parsed)
            else:
                probability = np.full(parsed.num_rows, np.nan, np.float32)
                if good.any():
                    probability[good] = self.scorer.probabilities(parsed.filter(pa.array(good)))
            kept = [pc.cast(parsed.column(name), pa.float32()) if name == self.label else parsed.column(name)
                    for name in self.keep]
            yield pa.RecordBatch.from_arrays(
                [*kept, pa.array(probability, pa.float32(), mask=~good), *map(parsed.column, bookkeeping)],
                names=[*self.keep, PROBABILITY, *bookkeeping])


def load_state(model_config: dict[str, Any], weights: bytes, device: torch.device | str = "cpu") -> DeepFM:
    """A model in eval mode from a serialized state dict, read with weights_only=True."""
    model = DeepFM(DeepFMConfig.from_dict(model_config))
    state = torch.load(io.BytesIO(weights), map_location=device, weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()


def batch_tensors(batch: pa.RecordBatch | pa.Table, categorical: tuple[str, ...], dense: tuple[str, ...]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [B, Fc] int32 and dense [B, Fd] float32 from a batch's columns, without per-row Python."""
    rows = batch.num_rows
    ids = (np.stack([_values(batch, name, np.int32) for name in categorical], axis=1) if categorical
           else np.zeros((rows, 0), np.int32))
    values = (np.stack([_values(batch, name, np.float32) for name in dense], axis=1) if dense
              else np.zeros((rows, 0), np.float32))
    return torch.from_numpy(ids), torch.from_numpy(values)


def predict_batch(model: DeepFM, batch: pa.RecordBatch | pa.Table, categorical: tuple[str, ...], dense: tuple[str, ...],
                  device: torch.device | str = "cpu") -> np.ndarray:
    ids, values = batch_tensors(batch, categorical, dense)
    with torch.inference_mode():
        return torch.sigmoid(model(ids.to(device), values.to(device))).float().cpu().numpy()


def _values(batch: pa.RecordBatch | pa.Table, name: str, dtype) -> np.ndarray:
    column = batch.column(name)
    if column.null_count:
        raise ValueError(f"model input column '{name}' has {column.null_count} nulls; encoded inputs never do")
    return column.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
