"""The model as an MLflow pyfunc: a pandas frame of raw feature values in, click probabilities out.

`mlflow.pyfunc.load_model(uri).predict(frame)` applies the model version's own feature map and
vocabulary (deepfm/features/encode.py, the Spark transforms without Spark) and then the network, so a
service or a notebook scores raw rows exactly as the batch score job does. Rows are the values the
raw logs hold: text for categorical fields, numbers for numeric ones; None, NaN or "" is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from deepfm.features.encode import FeatureEncoder
from deepfm.features.feature_map import FIRST_VALUE_ID, FeatureMap
from deepfm.serving.inference import PROBABILITY, predict_batch
from deepfm.training.model_versions import VOCABULARY, open_model_version

MODEL_ARTIFACT = "model"  # the name of the model directory among the pyfunc's artifacts


class DeepFMModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        model_dir = open_model_version(context.artifacts[MODEL_ARTIFACT])
        # Memory-mapped from the artifacts (local files): the worker processes of a machine (a Spark UDF's,
        # a server's) share one copy of the table in the page cache, and a table bigger than memory serves.
        self._model = model_dir.load(mapped_from=[f.local_path for f in model_dir.weight_files])
        self._feature_map = model_dir.feature_map
        vocabulary = pq.read_table(model_dir.vocabulary.local_path) if model_dir.vocabulary.is_file() else None
        self._encoder = FeatureEncoder(model_dir.feature_map, vocabulary)

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        fmap = self._feature_map
        # Only the feature columns are converted; the encoder names any that are missing.
        features = [c for c in model_input.columns if c in {f.name for f in fmap.fields}]
        encoded = self._encoder.encode(pa.Table.from_pandas(model_input[features], preserve_index=False))
        if encoded.num_rows == 0:
            return pd.DataFrame({PROBABILITY: pd.Series([], dtype="float32")})
        batch = encoded.combine_chunks().to_batches()[0]
        probability = predict_batch(self._model, batch, tuple(f.name for f in fmap.categorical),
                                    tuple(f.name for f in fmap.dense))
        return pd.DataFrame({PROBABILITY: probability})


def signature(fmap: FeatureMap) -> mlflow.models.ModelSignature:
    """Text for categorical fields, doubles for numeric ones (a double holds a missing count as NaN)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = [ColSpec("string" if f.source_role == "categorical" else "double", f.name) for f in fmap.fields]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("float", PROBABILITY)]))


def input_example(fmap: FeatureMap, model_dir: Path) -> pd.DataFrame:
    """Two rows of raw values: each field's most frequent training value, and every value missing."""
    vocabulary = model_dir / VOCABULARY
    frequent: dict[str, str] = {}
    if vocabulary.is_file():
        table = pq.read_table(vocabulary, filters=[("id", "=", FIRST_VALUE_ID)])
        frequent = dict(zip(table.column("field").to_pylist(), table.column("token").to_pylist(), strict=True))
    rows = {}
    for f in fmap.fields:
        if f.source_role == "categorical":
            rows[f.name] = [frequent.get(f.name, ""), None]
        else:  # a bucketized field's token is a bucket, not a raw value: any count will do
            rows[f.name] = [1.0, float("nan")]
    return pd.DataFrame(rows)
