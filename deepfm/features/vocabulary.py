"""The vocabulary's training counts, per embedding row: what the prior and the count features read.

The preprocess job writes one row per kept value, and per tail bucket when the field has
oov_buckets (pipelines/vocab.py), with how often it occurred in the training split. Rows it did not
count (missing, the shared out-of-vocabulary id, hashed fields) are NaN here: each reader decides
what an uncounted row stands for.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from deepfm.features.feature_map import FeatureMap
from deepfm.storage.location import Location, Where


def row_counts(vocabulary: Where, fmap: FeatureMap) -> np.ndarray:
    """float64 [sum of vocab sizes]: each categorical field's ids at its offset in the one table."""
    sizes = [int(f.vocab_size) for f in fmap.categorical]
    offsets = dict(zip((f.name for f in fmap.categorical), np.cumsum([0, *sizes[:-1]]), strict=True))
    counts = np.full(sum(sizes), np.nan)
    with Location.of(vocabulary).open() as f:
        table = pq.read_table(f, columns=["field", "id", "count"])
    fields = table.column("field").to_numpy(zero_copy_only=False)
    ids, seen = table.column("id").to_numpy(), table.column("count").to_numpy()
    for name, offset in offsets.items():
        rows = fields == name
        counts[offset + ids[rows]] = seen[rows]
    return counts
