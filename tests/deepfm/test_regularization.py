"""The embedding prior: over one epoch every row pays strength * ||row||^2 once, whatever its frequency
(times (N / count)^rarity_exponent: tighter for rare values)."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from deepfm.features.feature_map import FeatureField, FeatureMap
from deepfm.model import DeepFM, DeepFMConfig
from deepfm.training.regularization import EmbeddingPrior

FMAP = FeatureMap(label="label", fields=(
    FeatureField("a", "categorical", "categorical", vocab_size=6),
    FeatureField("b", "categorical", "categorical", vocab_size=4),
))


@pytest.fixture
def epoch(tmp_path):
    """Ids of one epoch (values of wildly different frequency) and the vocabulary counted on them."""
    rng = np.random.default_rng(0)
    a = rng.choice([0, 2, 3, 4, 5], 600, p=[0.05, 0.7, 0.2, 0.04, 0.01])
    b = rng.choice([1, 2, 3], 600, p=[0.1, 0.85, 0.05])
    ids = np.stack([a, b], 1)
    rows = [("a", str(v), v, int((a == v).sum())) for v in (2, 3, 4, 5)] + \
           [("b", str(v), v, int((b == v).sum())) for v in (2, 3)]  # ids 0 and 1 have no vocabulary entry
    field, token, vid, count = zip(*rows, strict=True)
    pq.write_table(pa.table({"field": field, "token": token, "id": pa.array(vid, pa.int32()), "count": count}),
                   tmp_path / "vocabulary.parquet")
    return torch.from_numpy(ids).int(), tmp_path / "vocabulary.parquet"


def _model():
    torch.manual_seed(0)
    model = DeepFM(DeepFMConfig(vocab_sizes=(6, 4), embedding_dim=3, hidden=(4,)))
    with torch.no_grad():
        model.embeddings.table.weight.normal_()
    return model


@pytest.mark.parametrize("rarity_exponent", [0.0, 0.5])
def test_each_counted_row_pays_its_prior_once_per_epoch(epoch, rarity_exponent):
    ids, vocabulary = epoch
    model, strength, batch = _model(), 7.0, 50
    prior = EmbeddingPrior.from_vocabulary(vocabulary, FMAP, train_rows=len(ids), strength=strength,
                                           device=torch.device("cpu"), rarity_exponent=rarity_exponent)
    with torch.no_grad():
        paid = sum(prior.penalty(model, ids[s:s + batch]).item() * batch for s in range(0, len(ids), batch))
    table = model.embeddings.table.weight.detach()
    expected = 0.0
    for row, count in ((2, (ids[:, 0] == 2).sum()), (3, (ids[:, 0] == 3).sum()), (4, (ids[:, 0] == 4).sum()),
                       (5, (ids[:, 0] == 5).sum()), (6 + 2, (ids[:, 1] == 2).sum()), (6 + 3, (ids[:, 1] == 3).sum())):
        # a value seen in c of N rows: strength * (N / c)^exponent, once
        expected += strength * (len(ids) / int(count)) ** rarity_exponent * float(table[row].pow(2).sum())
    # rows without a count (a missing value, b's OOV) are charged as if seen on every row
    for row, occurrences in ((0, int((ids[:, 0] == 0).sum())), (6 + 1, int((ids[:, 1] == 1).sum()))):
        expected += strength * occurrences / len(ids) * float(table[row].pow(2).sum())
    assert paid == pytest.approx(expected, rel=1e-5)


def test_prior_gradient_does_not_grow_with_frequency(epoch):
    ids, vocabulary = epoch
    model = _model()
    prior = EmbeddingPrior.from_vocabulary(vocabulary, FMAP, len(ids), 1.0, torch.device("cpu"))
    prior.penalty(model, ids).backward()
    grad = model.embeddings.table.weight.grad.to_dense()
    row = model.embeddings.table.weight.detach()
    # d/d row = 2 * strength * occurrences / count / batch * row: for a counted row that is 2 / batch,
    # the same for a value seen 6 times as for one seen 420 times, while the data term scales with count
    for value in (2, 5):
        assert torch.allclose(grad[value], 2 * row[value] / len(ids), rtol=1e-5)
    assert not grad[1].any()  # a's OOV row was not in the batch: untouched
