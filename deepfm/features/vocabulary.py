"""The vocabulary file, read per embedding row: each value's training count, and each token's row.

The preprocess job writes one row per kept value, and per tail bucket when the field has
oov_buckets (pipelines/vocab.py), with how often it occurred in the training split. Rows it did not
count (missing, the shared out-of-vocabulary id, hashed fields) are NaN here: each reader decides
what an uncounted row stands for.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from deepfm.features.feature_map import FeatureMap
from deepfm.storage.location import Location, Where


def table_offsets(fmap: FeatureMap) -> dict[str, int]:
    """Where each categorical field's ids start in the model's one embedding table."""
    sizes = [int(f.vocab_size) for f in fmap.categorical]
    return dict(zip((f.name for f in fmap.categorical), (int(o) for o in np.cumsum([0, *sizes[:-1]])), strict=True))


def row_counts(vocabulary: Where, fmap: FeatureMap) -> np.ndarray:
    """float64 [sum of vocab sizes]: each categorical field's ids at its offset in the one table."""
    counts = np.full(sum(int(f.vocab_size) for f in fmap.categorical), np.nan)
    table = _read(vocabulary, ["field", "id", "count"])
    fields = table.column("field").to_numpy(zero_copy_only=False)
    ids, seen = table.column("id").to_numpy(), table.column("count").to_numpy()
    for name, offset in table_offsets(fmap).items():
        rows = fields == name
        counts[offset + ids[rows]] = seen[rows]
    return counts


def token_rows(vocabulary: Where, fmap: FeatureMap) -> pa.Table:
    """(field, token, row): each looked-up value's row in the one table; tail buckets, which no
    token is looked up by, are left out."""
    table = _read(vocabulary, ["field", "token", "id"])
    table = table.filter(pc.is_valid(table.column("token")))
    offsets = table_offsets(fmap)
    fields = table.column("field").dictionary_encode().combine_chunks()
    start = np.array([offsets[name] for name in fields.dictionary.to_pylist()], dtype=np.int64)
    rows = start[fields.indices.to_numpy()] + table.column("id").to_numpy().astype(np.int64)
    return pa.table({"field": table.column("field"), "token": table.column("token"), "row": rows})


def _read(vocabulary: Where, columns: list[str]) -> pa.Table:
    with Location.of(vocabulary).open() as f:
        return pq.read_table(f, columns=columns)
