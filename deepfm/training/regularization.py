"""A Gaussian prior on every embedding row, paid once per epoch however often its value occurs.

Plain L2 on the rows a batch looks up charges a value in proportion to its frequency, the same
proportion as its share of the data term: a value seen 10 times is shrunk no more than one seen
100,000 times, and the rare tail is memorised. Weighting each lookup by 1 / count(value) instead
charges every row `strength * ||row||^2` per epoch in total, whatever its frequency (MAP with one
Gaussian prior per value, in units of training rows): evidence outweighs it for frequent values,
rare ones stay near zero unless their few rows insist. The row is the value's vector and its
first-order weight. Counts are the ones the preprocess job counted on the training split (bucketized
numeric fields included: their buckets are vocabulary entries; oov_buckets have their tail's count);
rows without a count (missing, the shared OOV id, hashed fields) are treated as seen on every row,
which leaves them practically unpenalised.

With a warm start (deepfm/training/warm_start.py) the prior of a row taken over from the earlier
model is centred on that row, not on zero: yesterday's estimate is today's prior, so a value with
little new evidence keeps what the earlier days taught, and one with much follows its new rows
(the Bayesian reading of continual training). New values' rows are centred on zero as before.

With `rarity_exponent` a > 0 the prior of a value seen c times in N rows is `strength * (N / c)^a`:
tighter for rare values, looser for popular ones (a prior variance growing with c^a). Popular
values are where the signal lives and where the data can pay for it; one strength for every value
either over-shrinks them or leaves the rare ones noisy.
"""

from __future__ import annotations

import numpy as np
import torch

from deepfm.features.feature_map import FeatureMap
from deepfm.features.vocabulary import row_counts
from deepfm.model import DeepFM
from deepfm.storage.location import Where


class EmbeddingPrior:
    def __init__(self, inverse_counts: torch.Tensor, strength: float, rarity_exponent: float = 0.0,
                 center: torch.Tensor | torch.nn.Module | None = None) -> None:
        self.inverse_counts = inverse_counts  # [total rows of the table], times the rarity factor
        self.strength = strength
        self.rarity_exponent = rarity_exponent
        # each row's prior mean (None: zero): [total rows, D + 1], or for a sharded table a
        # RowShardedTable of them (deepfm/training/sharding.py)
        self.center = center

    def describe(self, train_rows: int) -> dict[str, float]:
        """The prior, in training rows, that values of a few frequencies pay: what it amounts to on this data."""
        def rows(count: float) -> float:
            return round(self.strength * _rarity(train_rows, count, self.rarity_exponent), 3)
        return {"value_seen_10_times": rows(10), "value_seen_1000_times": rows(1000),
                "value_in_1_percent_of_rows": rows(max(train_rows / 100, 1))}

    @classmethod
    def from_vocabulary(cls, vocabulary: Where, fmap: FeatureMap, train_rows: int, strength: float,
                        device: torch.device, rarity_exponent: float = 0.0,
                        center: torch.Tensor | torch.nn.Module | None = None) -> EmbeddingPrior:
        counted = row_counts(vocabulary, fmap)
        counts = np.where(np.isnan(counted), float(max(train_rows, 1)), np.maximum(counted, 1))
        rarity = _rarity(train_rows, counts, rarity_exponent)
        return cls(torch.from_numpy(rarity / counts).float().to(device), strength, rarity_exponent,
                   None if center is None else center.to(device))

    def penalty(self, model: DeepFM, ids: torch.Tensor) -> torch.Tensor:
        """This batch's share of the epoch's prior: add it to the mean loss of the batch."""
        rows = ids.long() + model.embeddings.offsets
        unique, occurrences = torch.unique(rows, return_counts=True)
        weight = occurrences * self.inverse_counts[unique]
        rows_now = model.embeddings.table(unique).float()
        offset = rows_now if self.center is None else rows_now - self._center_rows(unique)
        return self.strength * (weight * offset.pow(2).sum(1)).sum() / len(ids)

    def _center_rows(self, rows: torch.Tensor) -> torch.Tensor:
        # A sharded table's centres are sharded alike, and looked up as its rows are.
        return (self.center(rows) if isinstance(self.center, torch.nn.Module) else self.center[rows]).float()


def _rarity(train_rows: int, counts: np.ndarray | float, exponent: float) -> np.ndarray | float:
    """How much tighter than `strength` the prior of a value seen `counts` times is: (N / c)^exponent."""
    return (max(train_rows, 1) / counts) ** exponent
