"""Warm start by token: real preprocess outputs of two "days" whose vocabularies differ, real training."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from deepfm.config import TrainConfig
from deepfm.errors import DO_NOT_RETRY, exit_code
from deepfm.features.preprocess_output import PreprocessOutput
from deepfm.model import DeepFM
from deepfm.training.launch import run_training
from deepfm.training.model_versions import ModelRoot, open_model_version
from deepfm.training.optim import RowWiseAdagrad
from deepfm.training.sharding import TABLE_KEY
from deepfm.training.train import model_config
from deepfm.training.warm_start import WarmStartError, take_over
from pipelines.preprocess import run_preprocess
from tests.conftest import CRITEO_COLUMNS, criteo_dataset, make_config

# C3 hashed into 64 ids, every other text field with 4 tail buckets: each kind of id is warm-started.
COLUMNS = [*CRITEO_COLUMNS[:2], {"names": ["C1", "C2", "C{4..26}"], "role": "categorical"},
           {"name": "C3", "role": "categorical", "hash_buckets": 64}]


def _preprocess(spark, out, split_seed, min_count, columns=COLUMNS):
    dataset = criteo_dataset(split={"method": "random", "seed": split_seed, "train": 0.8, "valid": 0.1, "test": 0.1})
    dataset["input"]["columns"] = columns
    run_preprocess(spark, make_config(dataset, str(out), vocab={"min_count": min_count, "oov_buckets": 4},
                                      shards={"rows_per_row_group": 1000}))
    return out


@pytest.fixture(scope="module")
def days(spark, tmp_path_factory):
    """Two days' outputs: another split and min_count, so ids move, tokens appear and go."""
    base = tmp_path_factory.mktemp("warm")
    return _preprocess(spark, base / "day1", 2017, 3), _preprocess(spark, base / "day2", 7, 2)


def _cfg(data, output, **kw):
    return TrainConfig.model_validate({"data": str(data), "output": str(output), "epochs": 1, "batch_size": 512,
                                       "model": {"embedding_dim": 4, "hidden": [16]}, "threads": 1, **kw})


def _tokens(output, field):
    table = pq.read_table(PreprocessOutput.open(output).vocabulary.local_path).to_pandas()
    table = table[(table.field == field) & table.token.notna()]
    return dict(zip(table.token, table.id, strict=True))


def test_rows_of_shared_tokens_are_taken_over_new_ones_initialised_gone_ones_dropped(days, tmp_path):
    day1, day2 = days
    root = ModelRoot.of(tmp_path / "models")
    previous = open_model_version(run_training(_cfg(day1, root.path), run_date="2026-11-01").model)
    data = PreprocessOutput.open(day2)
    fmap = data.feature_map
    torch.manual_seed(5)
    model = DeepFM(model_config(fmap, _cfg(day2, root.path), sparse=True))
    torch.manual_seed(5)
    fresh = DeepFM(model.config)
    taken = take_over(model, fmap, data.vocabulary, previous)
    summary = taken.summary
    adagrad = RowWiseAdagrad(model.embedding_parameters(), lr=0.03)  # the default tables' optimizer
    taken.seed_optimizers(model, [adagrad], 0.25)  # train.warm_start_accumulator's default

    old_weights = torch.load(previous.weights.local_path, weights_only=True)
    old_sums = torch.load(previous.path.local_path / "table_accumulator.pt", weights_only=True)
    old_table, new_table = old_weights[TABLE_KEY], model.embeddings.table.weight
    fresh_table, sums = fresh.embeddings.table.weight, adagrad.accumulator(new_table)
    assert summary["accumulator_taken_over"] and len(old_sums) == len(old_table)
    offsets_old = dict(zip([f.name for f in previous.feature_map.categorical],
                           np.cumsum([0, *[f.vocab_size for f in previous.feature_map.categorical][:-1]]), strict=True))
    offsets_new = dict(zip([f.name for f in fmap.categorical],
                           np.cumsum([0, *[f.vocab_size for f in fmap.categorical][:-1]]), strict=True))
    for field in ("C4", "C12", "C16"):
        before, now = _tokens(day1, field), _tokens(day2, field)
        shared, new = set(before) & set(now), set(now) - set(before)
        assert shared and new and set(before) - set(now), field  # the two days' vocabularies differ every way
        moved = [t for t in shared if before[t] != now[t]]
        assert moved, field  # ids differ: only matching by token takes the right rows over
        for token in shared:
            row, row_before = offsets_new[field] + now[token], offsets_old[field] + before[token]
            assert torch.equal(new_table[row], old_table[row_before])
            assert sums[row] == 0.25 * old_sums[row_before]  # its steps stay smaller than a new row's
        for token in new:
            row = offsets_new[field] + now[token]
            assert torch.equal(new_table[row], fresh_table[row])
            assert sums[row] == 0  # a new value's first step is as in a fresh run
        spec = fmap.categorical[[f.name for f in fmap.categorical].index(field)]
        by_id = [0, 1, *range(spec.first_oov_bucket, spec.vocab_size)]  # missing, OOV, tail buckets
        old_spec = previous.feature_map.categorical[[f.name for f in fmap.categorical].index(field)]
        old_by_id = [0, 1, *range(old_spec.first_oov_bucket, old_spec.vocab_size)]
        assert torch.equal(new_table[[offsets_new[field] + i for i in by_id]],
                           old_table[[offsets_old[field] + i for i in old_by_id]])
        assert summary["fields"][field] == {"taken_over": len(shared) + len(by_id), "new": len(new),
                                            "dropped": len(set(before) - set(now))}
    hashed = slice(offsets_new["C3"], offsets_new["C3"] + 66)  # 64 buckets after missing and OOV
    assert torch.equal(new_table[hashed], old_table[offsets_old["C3"]:offsets_old["C3"] + 66])
    for key, value in old_weights.items():  # every dense weight, copied
        if key != TABLE_KEY:
            assert torch.equal(model.state_dict()[key], value), key


def test_train_records_its_source_and_latest_never_means_itself_or_a_later_date(days, tmp_path):
    day1, day2 = days
    root = ModelRoot.of(tmp_path / "models")
    first = run_training(_cfg(day1, root.path, warm_start="latest"), run_date="2026-11-01")
    assert root.record("2026-11-01").warm_start is None  # the model's first version: from scratch
    second = run_training(_cfg(day2, root.path, warm_start="latest"), run_date="2026-11-02")
    record = root.record("2026-11-02")
    assert record.warm_start["version"] == "2026-11-01"
    assert record.warm_start["weights_digest"] == open_model_version(first.model).weights_digest
    assert record.warm_start["rows"]["taken_over"] > 0 and second.result.warm_start["fields"]["C1"]["new"] > 0
    assert record.warm_start["accumulator_taken_over"]  # the version keeps its row-wise optimizer's sums
    # A backfill of the first date warm-starts from nothing: not from itself, nor from the later version.
    backfill = run_training(_cfg(day1, root.path, warm_start="latest", seed=3), run_date="2026-11-01")
    assert not backfill.up_to_date and root.record("2026-11-01").warm_start is None
    # The source is part of what a version is a function of: the same input and config warm-started
    # from other weights is not up to date.
    assert not run_training(_cfg(day2, root.path, warm_start="latest"), run_date="2026-11-02").up_to_date


def test_another_architecture_or_feature_set_is_refused_naming_the_key(days, spark, tmp_path):
    day1, day2 = days
    root = ModelRoot.of(tmp_path / "models")
    run_training(_cfg(day1, root.path), run_date="2026-11-01")
    wider = _cfg(day2, root.path, warm_start="latest", model={"embedding_dim": 8, "hidden": [16]})
    refused = r"train\.model\.embedding_dim is 8 here but 4 .*train\.warm_start=none"
    with pytest.raises(WarmStartError, match=refused) as err:
        run_training(wider, run_date="2026-11-02")
    assert exit_code(err.value) == DO_NOT_RETRY
    fewer = _preprocess(spark, tmp_path / "fewer", 7, 3, columns=[
        *CRITEO_COLUMNS[:2], {"names": ["C{1..25}"], "role": "categorical"}, {"name": "C26", "role": "ignore"}])
    with pytest.raises(WarmStartError, match=r"the feature set differs .*gone: \['C26 \(categorical\)'\]"):
        run_training(_cfg(fewer, root.path, warm_start="latest"), run_date="2026-11-02")
    assert root.versions() == ["2026-11-01"]  # refused before any build
    assert not [n for n in root.path.subdirs() if n.startswith(".")]
    # From scratch is always possible.
    assert run_training(_cfg(fewer, root.path, warm_start="none"), run_date="2026-11-02").version == "2026-11-02"


def test_values_the_serving_model_knows_are_kept_when_seen_at_all(days, spark, tmp_path):
    day1, _ = days
    root = ModelRoot.of(tmp_path / "models")
    run_training(_cfg(day1, root.path), run_date="2026-11-01")
    dataset = criteo_dataset(split={"method": "random", "seed": 7, "train": 0.8, "valid": 0.1, "test": 0.1})
    dataset["input"]["columns"] = COLUMNS
    out = tmp_path / "day2"
    run_preprocess(spark, make_config(dataset, str(out), vocab={"min_count": 50, "keep_values_of": str(root.path)}))
    known = _tokens(day1, "C4")
    vocabulary = pq.read_table(PreprocessOutput.open(out).vocabulary.local_path).to_pandas()
    c4 = vocabulary[(vocabulary.field == "C4") & vocabulary.token.notna()]
    rare = c4[c4["count"] < 50]
    assert len(rare) > 10 and set(rare.token) <= set(known)  # below min_count, kept because the model knows them
    assert (c4["count"] >= 1).all()  # a known value is kept only when this data has it


def _sharded_take_over(rank: int, port: int, data: str, source: str, out: str) -> None:
    """One of 2 gloo workers: its stripe of a sharded table warm-started from `source`."""
    import os

    import torch.distributed as dist

    from deepfm.training.sharding import RowShardedTable

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    dist.init_process_group("gloo")
    prep = PreprocessOutput.open(data)
    config = model_config(prep.feature_map, _cfg(data, out), sparse=True)
    table = RowShardedTable(sum(config.vocab_sizes), config.embedding_dim + 1)
    table.initialize(0)
    model = DeepFM(config, table)
    taken = take_over(model, prep.feature_map, prep.vocabulary, open_model_version(source))
    adagrad = RowWiseAdagrad([table.weight], lr=0.03)
    taken.seed_optimizers(model, [adagrad], 1.0)
    torch.save({"stripe": table.weight.detach(), "center": taken.center, "summary": taken.summary,
                "sums": adagrad.accumulator(table.weight)}, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.stack_neutral
def test_a_sharded_table_takes_over_each_workers_rows_from_a_sharded_version(days, tmp_path):
    """Day 1 trained sharded; day 2's sharded table takes over, worker by worker, exactly the rows a
    whole table takes over (read from the stripes one at a time); then day 2 trains from them."""
    import torch.multiprocessing as mp

    from deepfm.training.launch import free_port

    day1, day2 = days
    root = ModelRoot.of(tmp_path / "models")
    sharded = {"backend": "torch", "workers": 2, "embeddings": "sharded"}
    previous = open_model_version(run_training(_cfg(day1, root.path, **sharded), run_date="2026-11-01").model)
    assert previous.table_stripes == 2
    data = PreprocessOutput.open(day2)
    whole = DeepFM(model_config(data.feature_map, _cfg(day2, root.path), sparse=True))
    taken_whole = take_over(whole, data.feature_map, data.vocabulary, previous)
    summary, center = taken_whole.summary, taken_whole.center
    adagrad = RowWiseAdagrad(whole.embedding_parameters(), lr=0.03)
    taken_whole.seed_optimizers(whole, [adagrad], 1.0)
    sums = adagrad.accumulator(whole.embeddings.table.weight)
    assert summary["accumulator_taken_over"] and int((sums > 0).sum()) > 0
    out = str(tmp_path / "stripes")
    mp.spawn(_sharded_take_over, args=(free_port(), str(day2), str(previous.path), out), nprocs=2)
    taken = center.abs().sum(1) > 0  # the rows taken over (a fresh row's centre is zero)
    assert 0 < int(taken.sum()) < len(taken)
    for rank in range(2):
        got = torch.load(f"{out}.{rank}", weights_only=False)
        mine = taken[rank::2]
        assert torch.equal(got["stripe"][mine], whole.embeddings.table.weight.detach()[rank::2][mine])
        assert torch.equal(got["center"], center[rank::2])
        assert torch.equal(got["sums"], sums[rank::2])  # the optimizer's sums, read from the stripes alike
        assert got["summary"] == summary
    # and the day trains on, warm-started, as a daily run does
    second = run_training(_cfg(day2, root.path, warm_start="latest", **sharded), run_date="2026-11-02")
    assert root.record("2026-11-02").warm_start["rows"]["taken_over"] == summary["rows"]["taken_over"]
    assert 0.55 < second.result.test["auc"] < 0.9


def test_a_model_without_categorical_fields_takes_its_dense_weights_over(tmp_path):
    """No table on either side: every weight is copied, and there is no table to centre a prior on."""
    from deepfm.model import DeepFMConfig
    from deepfm.storage.location import Location
    from deepfm.training.model_versions import ModelVersion

    config = DeepFMConfig(vocab_sizes=(), num_dense=3, embedding_dim=4, hidden=(8,))
    torch.manual_seed(1)
    earlier = DeepFM(config)
    torch.save(earlier.state_dict(), tmp_path / "model.pt")
    source = ModelVersion(Location.of(str(tmp_path)), config, None, "", "digest", {})
    torch.manual_seed(2)
    model = DeepFM(config)
    taken = take_over(model, None, None, source)
    assert taken.center is None and taken.accumulator is None and "rows" not in taken.summary
    assert all(torch.equal(model.state_dict()[k], v) for k, v in earlier.state_dict().items())
