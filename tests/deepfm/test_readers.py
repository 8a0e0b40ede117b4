import threading
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepfm.features.feature_map import FeatureField, FeatureMap
from deepfm.training.readers import InMemoryReader, NativeReader, PetastormReader

FILES = ((300, 100), (250, 50), (157, 60))  # (rows, row-group size): 3 + 5 + 3 row groups
TOTAL = sum(rows for rows, _ in FILES)
FMAP = FeatureMap(label="label", fields=(
    FeatureField("row", "categorical", "categorical", vocab_size=TOTAL),
    FeatureField("c", "categorical", "categorical", vocab_size=7),
    FeatureField("x", "dense", "numeric"),
))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Shards whose `row` column numbers every row, so coverage can be counted exactly."""
    out = tmp_path_factory.mktemp("shards")
    start = 0
    for i, (rows, group) in enumerate(FILES):
        ids = np.arange(start, start + rows, dtype=np.int32)
        table = pa.table({"label": (ids % 2).astype(np.float32), "row": ids, "c": ids % 7,
                          "x": ids.astype(np.float32) / 10})
        pq.write_table(table, out / f"part-{i:05d}.parquet", row_group_size=group)
        start += rows
    return out


def _rows(reader) -> list[int]:
    return [int(v) for batch in reader for v in batch.ids[:, 0]]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_native_every_row_once_per_epoch_and_equal_steps(shards, world):
    readers = [NativeReader(shards, FMAP, 64, rank=r, world=world, seed=3, shuffle_buffer_rows=100)
               for r in range(world)]
    steps = {len(r) for r in readers}
    assert len(steps) == 1  # every rank runs the same number of steps
    seen = []
    for reader in readers:
        batches = list(reader)
        assert len(batches) == len(reader)
        seen += [int(v) for b in batches for v in b.ids[:, 0]]
    counts = Counter(seen)
    assert max(counts.values()) == 1  # no row twice
    assert len(seen) == TOTAL // world * world  # only the remainder (< world rows) is skipped
    assert TOTAL - len(seen) < world


def test_native_tensors_match_the_files(shards):
    batch = next(iter(NativeReader(shards, FMAP, 1000, shuffle=False, drop_remainder=False)))
    assert batch.ids.dtype.is_floating_point is False and batch.ids.shape == (TOTAL, 2)
    rows = batch.ids[:, 0].numpy()
    assert (batch.ids[:, 1].numpy() == rows % 7).all()
    assert np.allclose(batch.dense[:, 0].numpy(), rows / 10) and (batch.label.numpy() == rows % 2).all()


def test_native_order_reproducible_from_seed_and_changes_by_epoch(shards):
    a = NativeReader(shards, FMAP, 32, seed=5, shuffle_buffer_rows=200)
    b = NativeReader(shards, FMAP, 32, seed=5, shuffle_buffer_rows=200)
    assert _rows(a) == _rows(b)
    first = _rows(a)
    a.set_epoch(1)
    assert _rows(a) != first and sorted(_rows(a)) == sorted(first)
    c = NativeReader(shards, FMAP, 32, seed=6, shuffle_buffer_rows=200)
    assert _rows(c) != first


def test_evaluation_mode_sees_every_row(shards):
    seen = []
    for rank in range(3):
        seen += _rows(NativeReader(shards, FMAP, 50, rank=rank, world=3, shuffle=False, drop_remainder=False))
    assert sorted(seen) == list(range(TOTAL))


def test_in_memory_reader_same_rule(shards):
    seen = []
    for rank in range(2):
        reader = InMemoryReader(shards, FMAP, 64, rank=rank, world=2, seed=1)
        assert len(list(reader)) == len(reader)
        seen += _rows(reader)
    assert len(seen) == len(set(seen)) == TOTAL // 2 * 2


@pytest.mark.petastorm
def test_petastorm_and_native_deliver_the_same_rows(shards):
    native = sorted(_rows(NativeReader(shards, FMAP, 1, seed=2)))
    petastorm = sorted(_rows(PetastormReader(shards, FMAP, 1, seed=2)))
    assert native == petastorm == list(range(TOTAL))


@pytest.mark.petastorm
@pytest.mark.parametrize("world", [2, 3])
def test_petastorm_equal_full_batches_on_every_rank(shards, world):
    readers = [PetastormReader(shards, FMAP, 40, rank=r, world=world, seed=4) for r in range(world)]
    seen = []
    for reader in readers:
        batches = list(reader)
        assert len(batches) == len(readers[0]) > 0  # same step count everywhere
        assert all(len(b) == 40 for b in batches)
        seen += [int(v) for b in batches for v in b.ids[:, 0]]
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("make", [
    lambda shards: NativeReader(shards, FMAP, 16, seed=1, shuffle_buffer_rows=0, prefetch=1),
    pytest.param(lambda shards: PetastormReader(shards, FMAP, 16, seed=1, shuffle_buffer_rows=0, prefetch=1),
                 marks=pytest.mark.petastorm),
], ids=["native", "petastorm"])
def test_abandoned_epoch_stops_the_prefetch_thread(shards, make):
    batches = iter(make(shards))
    next(batches)
    batches.close()  # what a `break` out of the training loop does
    assert not [t for t in threading.enumerate() if t.name == "reader-prefetch"]


def test_read_error_in_the_prefetch_thread_reaches_the_training_loop(tmp_path):
    pq.write_table(pa.table({"label": np.zeros(40, np.float32), "row": np.arange(40, dtype=np.int32)}),
                   tmp_path / "part-00000.parquet")  # no `c` and `x` columns
    reader = NativeReader(tmp_path, FMAP, 16)
    with pytest.raises(KeyError, match='"c" does not exist'):
        list(reader)
    assert not [t for t in threading.enumerate() if t.name == "reader-prefetch"]
