"""Streaming the preprocess job's Parquet shards into PyTorch, one rank's share at a time.

Three readers with one interface (iterate `Batch`es, `len()` = steps per epoch, `set_epoch`):
- `NativeReader`: pyarrow row groups -> numpy -> torch, a background thread prefetching.
- `PetastormReader`: Petastorm's `make_batch_reader` reads the row groups; shuffled and batched as
  the native reader does, in a prefetch thread too.
- `InMemoryReader`: the rank's rows held as tensors (small data, and the benchmarks' ceiling).

Equal steps on every rank (collectives must never wait on a rank that ran out of data):
- Native and in-memory, training: each epoch the row groups are shuffled with the epoch's seed
  (the same permutation on every rank), laid end to end, and cut into `world` equal runs of
  floor(total / world) rows. The remainder, fewer than `world` rows, is skipped that epoch; a
  different remainder each epoch, since the permutation changes. Every rank then runs
  ceil(rows / batch_size) steps, the last batch equally short everywhere.
- Petastorm shards whole row groups (row group i goes to rank i % world). Every rank runs
  min over ranks of (its rows // batch_size) full batches; the rows beyond are skipped.
- Evaluation (`shuffle=False, drop_remainder=False`): every row exactly once; ranks may differ
  by one row, which is harmless because evaluation gathers predictions and runs no collective
  per step.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow.parquet as pq
import torch

from deepfm.features.feature_map import FeatureMap
from deepfm.storage.location import Location, Where


@dataclass
class Batch:
    ids: torch.Tensor  # [B, Fc] int32
    dense: torch.Tensor  # [B, Fd] float32
    label: torch.Tensor  # [B] float32

    def __len__(self) -> int:
        return self.label.shape[0]

    def to(self, device: torch.device) -> Batch:
        return Batch(self.ids.to(device, non_blocking=True), self.dense.to(device, non_blocking=True),
                     self.label.to(device, non_blocking=True))


@dataclass(frozen=True)
class RowGroup:
    file: Location
    index: int
    rows: int


@dataclass(frozen=True)
class Slice:
    group: RowGroup
    start: int
    stop: int


def row_groups(split_dir: Where) -> list[RowGroup]:
    files = Location.of(split_dir).files(".parquet")
    if not files:
        raise FileNotFoundError(f"no Parquet shards in {split_dir}: run `deepfm-pipeline preprocess` first")
    groups = []
    for file in files:
        with file.open() as f:
            meta = pq.ParquetFile(f).metadata
        groups += [RowGroup(file, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]
    return groups


def rank_slices(groups: list[RowGroup], rank: int, world: int, order: np.ndarray, drop_remainder: bool) -> list[Slice]:
    """The row-group pieces that make up this rank's contiguous run of the ordered rows."""
    total = sum(g.rows for g in groups)
    if drop_remainder:
        per_rank = total // world
        begin, end = rank * per_rank, (rank + 1) * per_rank
    else:
        begin, end = rank * total // world, (rank + 1) * total // world
    slices, offset = [], 0
    for i in order:
        group = groups[i]
        lo, hi = max(begin, offset), min(end, offset + group.rows)
        if lo < hi:
            slices.append(Slice(group, lo - offset, hi - offset))
        offset += group.rows
        if offset >= end:
            break
    return slices


class _Columns:
    """Turns Arrow tables of shard rows into the three model tensors, column-wise."""

    def __init__(self, fmap: FeatureMap) -> None:
        self.categorical = [f.name for f in fmap.categorical]
        self.dense = [f.name for f in fmap.dense]
        self.label = fmap.label
        self.names = [self.label, *self.categorical, *self.dense]

    def arrays(self, table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.stacked(lambda name: table.column(name).to_numpy(), table.num_rows)

    def stacked(self, column: Callable[[str], np.ndarray], rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ids [rows, Fc] int32, dense [rows, Fd] float32 and the label, from each column's values."""
        ids = np.empty((rows, len(self.categorical)), dtype=np.int32)
        for j, name in enumerate(self.categorical):
            ids[:, j] = column(name)
        dense = np.empty((rows, len(self.dense)), dtype=np.float32)
        for j, name in enumerate(self.dense):
            dense[:, j] = column(name)
        return ids, dense, column(self.label).astype(np.float32, copy=False)


class NativeReader:
    """pyarrow reader: row groups assigned to ranks, per-epoch seeded shuffle, prefetch thread."""

    def __init__(
        self,
        split_dir: Where,
        fmap: FeatureMap,
        batch_size: int,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        drop_remainder: bool = True,
        shuffle_buffer_rows: int = 262_144,
        prefetch: int = 4,
    ) -> None:
        self.groups = row_groups(split_dir)
        self.columns = _Columns(fmap)
        self.batch_size, self.rank, self.world, self.seed = batch_size, rank, world, seed
        self.shuffle, self.drop_remainder = shuffle, drop_remainder
        self.shuffle_buffer_rows, self.prefetch = shuffle_buffer_rows, prefetch
        self.epoch = 0
        self.total_rows = sum(g.rows for g in self.groups)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def rows(self) -> int:
        """Rows this rank yields per epoch."""
        return sum(s.stop - s.start for s in self._slices())

    def __len__(self) -> int:
        return math.ceil(self.rows / self.batch_size)

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.groups))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.groups))

    def _slices(self) -> list[Slice]:
        return rank_slices(self.groups, self.rank, self.world, self._order(), self.drop_remainder)

    def _chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Row-group slices as numpy arrays."""
        files: dict[Location, pq.ParquetFile] = {}
        try:
            for piece in self._slices():
                file = piece.group.file
                if file not in files:
                    files[file] = pq.ParquetFile(file.open())
                # One thread: torch's OpenMP threads already occupy the cores while we prefetch.
                table = files[file].read_row_group(piece.group.index, columns=self.columns.names, use_threads=False)
                yield self.columns.arrays(table.slice(piece.start, piece.stop - piece.start))
        finally:
            for opened in files.values():
                opened.close()

    def __iter__(self) -> Iterator[Batch]:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 1])
        return _batches(prefetched(self._chunks(), self.prefetch), self.batch_size,
                        self.shuffle_buffer_rows if self.shuffle else 0, rng)


def prefetched(items: Generator, depth: int) -> Iterator:
    """Run `items` in a background thread, `depth` ahead of the consumer.

    Decoding and batching then overlap the training step (torch releases the GIL while it
    computes). Errors surface in the consumer; abandoning the iterator stops the producer.
    """
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    break
                out.put(item)
            else:
                out.put(done)
        except BaseException as err:  # surfaced in the consuming thread
            out.put(err)
        finally:
            items.close()  # runs the generator's own clean-up (Petastorm's reader.stop) in this thread

    thread = threading.Thread(target=produce, daemon=True, name="reader-prefetch")
    thread.start()
    try:
        while (item := out.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                out.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def _batches(chunks, batch_size: int, buffer_rows: int, rng: np.random.Generator) -> Iterator[Batch]:
    """Regroup chunks into batches, shuffling within a buffer of ~buffer_rows rows."""
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    held = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk[2])
        if held >= max(buffer_rows, batch_size):
            ids, dense, label = _merged(pending, rng if buffer_rows else None)
            full = len(label) // batch_size * batch_size
            yield from _split(ids[:full], dense[:full], label[:full], batch_size)
            pending = [(ids[full:], dense[full:], label[full:])]
            held = len(label) - full
    if held:
        yield from _split(*_merged(pending, rng if buffer_rows else None), batch_size)


def _merged(pending, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate buffered chunks, in a random order of rows when given a generator."""
    ids, dense, label = (np.concatenate(parts) for parts in zip(*pending, strict=True))
    if rng is None:
        return ids, dense, label
    perm = rng.permutation(len(label))
    return ids[perm], dense[perm], label[perm]


def _split(ids, dense, label, batch_size: int) -> Iterator[Batch]:
    ids_t, dense_t, label_t = torch.from_numpy(ids), torch.from_numpy(dense), torch.from_numpy(label)
    for start in range(0, len(label), batch_size):
        end = start + batch_size
        yield Batch(ids_t[start:end], dense_t[start:end], label_t[start:end])


class InMemoryReader:
    """The rank's rows loaded once as tensors; a fresh seeded permutation each epoch."""

    def __init__(self, split_dir, fmap: FeatureMap, batch_size: int, rank: int = 0, world: int = 1,
                 seed: int = 0, shuffle: bool = True, drop_remainder: bool = True) -> None:
        # Load every row group in file order once; epochs then permute rows globally, so the
        # remainder rule matches NativeReader's: floor(total / world) rows per rank.
        native = NativeReader(split_dir, fmap, batch_size, 0, 1, seed, shuffle=False, drop_remainder=False)
        ids, dense, label = (np.concatenate(parts) for parts in zip(*native._chunks(), strict=True))
        self.ids, self.dense, self.label = torch.from_numpy(ids), torch.from_numpy(dense), torch.from_numpy(label)
        self.batch_size, self.rank, self.world, self.seed = batch_size, rank, world, seed
        self.shuffle, self.drop_remainder = shuffle, drop_remainder
        self.total_rows = len(label)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = self.total_rows
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.arange(n)
        if self.drop_remainder:
            per_rank = n // self.world
            return order[self.rank * per_rank:(self.rank + 1) * per_rank]
        return order[self.rank * n // self.world:(self.rank + 1) * n // self.world]

    @property
    def rows(self) -> int:
        return len(self._indices())

    def __len__(self) -> int:
        return math.ceil(self.rows / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        index = self._indices()
        for start in range(0, len(index), self.batch_size):
            rows = index[start:start + self.batch_size]
            yield Batch(self.ids[rows], self.dense[rows], self.label[rows])


class PetastormReader:
    """Petastorm's batch reader over the same shards, row groups sharded by rank."""

    def __init__(self, split_dir, fmap: FeatureMap, batch_size: int, rank: int = 0, world: int = 1,
                 seed: int = 0, shuffle: bool = True, shuffle_buffer_rows: int = 262_144,
                 workers: int = 2, prefetch: int = 4) -> None:
        self.location = Location.of(split_dir)
        self.groups = row_groups(split_dir)
        self.columns = _Columns(fmap)
        self.batch_size, self.rank, self.world, self.seed = batch_size, rank, world, seed
        self.shuffle, self.shuffle_buffer_rows, self.workers = shuffle, shuffle_buffer_rows, workers
        self.prefetch = prefetch
        self.epoch = 0
        per_rank = [sum(g.rows for g in self.groups[r::world]) for r in range(world)]
        if min(per_rank) == 0:
            raise ValueError(
                f"{split_dir} has {len(self.groups)} row groups, fewer than {world} workers: lower "
                "preprocess.shards.rows_per_row_group or use the native reader"
            )
        self.steps = min(per_rank) // batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Batch]:
        return prefetched(self._batches(), self.prefetch)

    def _batches(self) -> Iterator[Batch]:
        import warnings

        from petastorm import make_batch_reader

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # pyarrow deprecations inside Petastorm
            reader = make_batch_reader(
                self.location.as_uri, schema_fields=self.columns.names, num_epochs=1, seed=self.seed + self.epoch,
                shuffle_row_groups=self.shuffle, cur_shard=self.rank, shard_count=self.world,
                shard_seed=None, workers_count=self.workers, reader_pool_type="thread",
            )
            # Petastorm reads and decodes the row groups (make_batch_reader, its own thread pool); the
            # rows are shuffled and batched as the native reader does it. Petastorm's own torch
            # shuffling buffer (BatchedDataLoader) took the training rate to 0.82 of in-memory on two
            # cores; this way it is 0.95 (bench/bench_train.py --readers-only).
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, 1])
            chunks = (self.columns.stacked(lambda name, group=group: getattr(group, name), len(group[0]))
                      for group in reader)
            try:
                yield from itertools.islice(
                    _batches(chunks, self.batch_size, self.shuffle_buffer_rows if self.shuffle else 0, rng),
                    self.steps)
            finally:
                reader.stop()
                reader.join()


READERS = {"native": NativeReader, "petastorm": PetastormReader, "memory": InMemoryReader}


class Reader(Protocol):
    """What training and evaluation read batches through: a rank's share of a split, in a seeded
    order that is a function of (seed, epoch) alone, so a resumed epoch replays the same batches."""

    def set_epoch(self, epoch: int) -> None: ...

    def __len__(self) -> int: ...  # batches per epoch on this rank (equal on every rank)

    def __iter__(self) -> Iterator[Batch]: ...


def make_reader(kind: str, split_dir: Where, fmap: FeatureMap, batch_size: int, *, rank: int = 0, world: int = 1,
                seed: int = 0, shuffle: bool = True, shuffle_buffer_rows: int = 262_144) -> Reader:
    """The training reader of `train.reader` (every full batch, in a shuffled order)."""
    if kind not in READERS:
        raise ValueError(f"train.reader must be one of {sorted(READERS)}, got {kind!r}")
    buffer = {} if kind == "memory" else {"shuffle_buffer_rows": shuffle_buffer_rows}
    return READERS[kind](split_dir, fmap, batch_size, rank=rank, world=world, seed=seed, shuffle=shuffle, **buffer)


def evaluation_reader(split_dir: Where, fmap: FeatureMap, batch_size: int, rank: int = 0, world: int = 1) -> Reader:
    """Every row of the split once, in file order, this rank's share of it."""
    return NativeReader(split_dir, fmap, batch_size, rank=rank, world=world, shuffle=False, drop_remainder=False)
