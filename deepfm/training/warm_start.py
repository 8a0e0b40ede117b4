"""Warm start: a new model version initialised from an earlier one, row by row of the same token.

The semantics of TensorFlow's `warm_start` with `VocabInfo`: the earlier model's vocabulary
(shipped in its version) and the new one are matched by token, so that each embedding row of a
value in both is taken over, whatever its id in either; a value new to this vocabulary keeps the
fresh initialisation (the backup initialiser), and a value no longer in it is dropped. Ids that
stand for no token are carried over by id: the missing and out-of-vocabulary ids, the tail buckets
of `oov_buckets` and every id of a hashed field. Dense weights (the FM's bias, dense fields'
vectors, the MLP, batch-norm statistics) are copied; they have the same shapes, as the
architecture and feature set must be the same (`check_compatible`, on the driver, before any worker
starts). What the vocabulary decides anew (count features, mixed dimensions) is not taken over.
With row-wise Adagrad, a share of each taken-over row's accumulated squared gradient comes too
(train.warm_start_accumulator; the version keeps the sums, model_versions.ACCUMULATOR), as
TensorFlow's warm start can take over an optimizer's slot variables: a fresh sum would make every
known row's first step as large as a new row's.

`train.warm_start: latest` means the newest complete version before the one being built that the
promotion gate did not turn down, which in daily operation is the serving one: a rerun or backfill
of a date never starts from itself or from a later date.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from deepfm.errors import UserError
from deepfm.features.feature_map import FIRST_VALUE_ID, FeatureField, FeatureMap
from deepfm.features.vocabulary import table_offsets, token_rows
from deepfm.model import DeepFM, DeepFMConfig
from deepfm.storage.location import Where
from deepfm.training.model_versions import ModelRoot, ModelVersion, open_model_version
from deepfm.training.optim import RowWiseAdagrad
from deepfm.training.sharding import TABLE_KEY, RowShardedTable, place

log = logging.getLogger(__name__)

# Decided anew from this run's vocabulary (DeepFM.set_value_counts), never taken over.
FROM_VOCABULARY = ("embeddings.row_dims", "log_frequencies")
# Model settings that may differ between the two: they change how a model trains or computes, not
# what its weights mean.
NOT_ARCHITECTURE = ("vocab_sizes", "sparse_embeddings", "precision", "extra")


class WarmStartError(UserError, ValueError):
    """The model to warm-start from does not fit this run (another architecture or feature set)."""


def source_version(setting: str, root: ModelRoot, version: str | None) -> ModelVersion | None:
    """The version `train.warm_start` names; None for `none`, and for `latest` when the root has no
    version before `version` yet (the first run of a model trains from scratch)."""
    if setting == "none":
        return None
    if setting != "latest":
        return open_model_version(setting)
    earlier = [name for name in root.promoted() if version is None or name < version]
    if not earlier:
        log.info("train.warm_start=latest: %s has no version before %s yet: training from scratch", root.path,
                 version or "this one")
        return None
    return open_model_version(root.path / earlier[-1])


def check_compatible(source: ModelVersion, config: DeepFMConfig, fmap: FeatureMap) -> None:
    """Refuse a source whose weights cannot mean the same in this model, naming what differs."""
    before, now = source.config.to_dict(), config.to_dict()
    for key in before:
        if key not in NOT_ARCHITECTURE and before[key] != now.get(key):
            raise WarmStartError(f"train.model.{key} is {now.get(key)!r} here but {before[key]!r} in the model to "
                                 f"warm-start from ({source.path}): set it back, or set train.warm_start=none to train "
                                 "from scratch")
    names_before = [(f.name, f.kind) for f in source.feature_map.fields]
    names_now = [(f.name, f.kind) for f in fmap.fields]
    if names_before != names_now:
        added = [f"{n} ({k})" for n, k in names_now if (n, k) not in names_before]
        gone = [f"{n} ({k})" for n, k in names_before if (n, k) not in names_now]
        raise WarmStartError(f"train.warm_start: the feature set differs from that of {source.path} (new: "
                             f"{added or 'none'}; gone: {gone or 'none'}; else their order): set "
                             "train.warm_start=none to train from scratch")
    previous = {f.name: f for f in source.feature_map.fields}
    for f in fmap.fields:
        for key in ("source_role", "transform", "hash_buckets", "oov_buckets"):
            if getattr(f, key) != getattr(previous[f.name], key):
                raise WarmStartError(f"dataset column {f.name}: its {key} is {getattr(f, key)!r} here but "
                                     f"{getattr(previous[f.name], key)!r} in the model to warm-start from "
                                     f"({source.path}): set it back, or set train.warm_start=none")
    if fmap.hash_seed != source.feature_map.hash_seed and any(f.hash_buckets or f.oov_buckets for f in fmap.fields):
        raise WarmStartError(f"preprocess.vocab.hash_seed is {fmap.hash_seed} here but {source.feature_map.hash_seed} "
                             f"in the model to warm-start from ({source.path}), so hashed ids differ: set it back, "
                             "or set train.warm_start=none")


@dataclass(frozen=True)
class RowMatch:
    """Rows of the new table (`rows`) and the earlier table's rows they take over (`from_rows`)."""

    rows: np.ndarray
    from_rows: np.ndarray
    fields: dict[str, dict[str, int]]  # per field: rows taken over, new and dropped


def match_rows(fmap: FeatureMap, vocabulary: Where, source: ModelVersion) -> RowMatch:
    """Pair every row of the new table with the earlier one of the same token, or id (module docstring)."""
    now, before = token_rows(vocabulary, fmap), token_rows(source.vocabulary, source.feature_map)
    shared = now.join(before, ["field", "token"], join_type="inner", right_suffix="_before",
                      use_threads=False)
    rows = [shared.column("row").to_numpy()]
    from_rows = [shared.column("row_before").to_numpy()]
    offsets, offsets_before = table_offsets(fmap), table_offsets(source.feature_map)
    previous = {f.name: f for f in source.feature_map.categorical}
    counts = [_per_field(table) for table in (shared, now, before)]
    fields: dict[str, dict[str, int]] = {}
    for f in fmap.categorical:
        ids, ids_before = _by_id(f), _by_id(previous[f.name])
        rows.append(offsets[f.name] + ids)
        from_rows.append(offsets_before[f.name] + ids_before)
        taken, in_now, in_before = (c.get(f.name, 0) for c in counts)
        fields[f.name] = {"taken_over": taken + len(ids), "new": in_now - taken, "dropped": in_before - taken}
    return RowMatch(np.concatenate(rows).astype(np.int64), np.concatenate(from_rows).astype(np.int64), fields)


def _by_id(f: FeatureField) -> np.ndarray:
    """The ids of a field that stand for no token: all of a hashed field's, else missing, OOV and
    the tail buckets (equal in number in both models: check_compatible)."""
    if f.hash_buckets:
        return np.arange(int(f.vocab_size))
    buckets = np.arange(f.first_oov_bucket, int(f.vocab_size)) if f.oov_buckets else np.arange(0)
    return np.concatenate([np.arange(FIRST_VALUE_ID), buckets])


def _per_field(table: pa.Table) -> dict[str, int]:
    """Rows per field, in one pass over the column (vocabularies run to millions of rows)."""
    return {row["values"]: row["counts"] for row in pc.value_counts(table.column("field")).to_pylist()}


@dataclass(frozen=True)
class TakenOver:
    """What a warm start took over; of a sharded table, this worker's stripe of each tensor."""

    summary: dict[str, Any]  # for metrics.json and the log
    # The table's prior centre (deepfm/training/regularization.py): each row as taken over, zero for the others.
    center: torch.Tensor | None
    rows: torch.Tensor | None  # the table's rows taken over
    # The earlier row-wise optimizer's sum for each of `rows`; None where the source kept none.
    accumulator: torch.Tensor | None

    @torch.no_grad()
    def seed_optimizers(self, model: DeepFM, optimizers: list[torch.optim.Optimizer], share: float) -> None:
        """Give the row-wise optimizer `share` of the earlier sum of each row taken over
        (train.warm_start_accumulator), so that a row learned on earlier days keeps smaller steps
        than a new one, which starts as in a fresh run. Called once the backend has prepared the
        optimizers (Horovod's are rebuilt there)."""
        if self.accumulator is None or share == 0:
            return
        for optimizer in optimizers:
            if isinstance(optimizer, RowWiseAdagrad):
                for table in model.embedding_parameters():
                    optimizer.accumulator(table)[self.rows.to(table.device)] = share * self.accumulator.to(table.device)


@torch.no_grad()
def take_over(model: DeepFM, fmap: FeatureMap, vocabulary: Where, source: ModelVersion) -> TakenOver:
    """Initialise `model` (built fresh for this feature map) from `source`, and say what was taken over."""
    table = model.embeddings.table
    match = match_rows(fmap, vocabulary, source) if table is not None else None
    rows = from_rows = None
    if match is not None:
        rows, from_rows = torch.from_numpy(match.rows), torch.from_numpy(match.from_rows)
        if isinstance(table, RowShardedTable):  # this worker's rows only, at their places in its stripe
            owner, local = place(rows, table.world)
            rows, from_rows = local[owner == table.rank], from_rows[owner == table.rank]
    weights, taken = source.weights_and_table_rows(from_rows)
    state = model.state_dict()
    for key, value in weights.items():
        if key != TABLE_KEY and key not in FROM_VOCABULARY:
            state[key].copy_(value)
    summary: dict[str, Any] = {"from": str(source.path), "version": source.name,
                               "weights_digest": source.weights_digest}
    center = accumulator = None
    if match is not None:
        table.weight[rows] = taken.to(table.weight.dtype)
        center = torch.zeros_like(table.weight)
        center[rows] = table.weight[rows]
        accumulator = source.accumulator_rows(from_rows)
        totals = {k: sum(v[k] for v in match.fields.values()) for k in ("taken_over", "new", "dropped")}
        summary.update({"rows": totals, "fields": match.fields, "accumulator_taken_over": accumulator is not None})
        log.info("warm start from %s: %d embedding rows taken over%s, %d new, %d dropped", source.path,
                 totals["taken_over"], " with their optimizer sums" if accumulator is not None else "",
                 totals["new"], totals["dropped"])
    return TakenOver(summary, center, rows, accumulator)
