"""The preprocess job: raw click logs in, training-ready Parquet shards out.

extract  parse every input table; quarantine malformed rows with a reason
transform join clicks and side tables, split, fit vocabularies and numeric statistics on train
load     write train/valid/test shards, vocabularies, rejects and manifest.json, atomically

Output layout (committed by rename, `_SUCCESS` last):
    manifest.json  vocab/vocabulary.parquet  vocab_summary.json  rejects/  train/  valid/  test/
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from deepfm import __version__, strict_json
from deepfm.config import Config, DatasetConfig, PreprocessConfig, TableSpec, config_hash
from deepfm.features.feature_map import TRANSFORMS_VERSION, FeatureMap
from deepfm.features.preprocess_output import (
    HOLDOUT,
    REJECTS,
    VOCAB_SUMMARY,
    VOCABULARY,
    InputFiles,
    Manifest,
    PreprocessOutput,
    RowCounts,
    SplitRows,
    TableRows,
)
from deepfm.storage.commit import committed_directory, is_committed
from deepfm.storage.hadoop import HadoopFiles
from deepfm.storage.location import Location
from deepfm.training.model_versions import ModelVersionError, open_model_version
from pipelines import features, quarantine, read
from pipelines.drift_checks import check_drift
from pipelines.join import join_side_table, label_from_clicks
from pipelines.split import ROW_HASH, SPLIT, SPLITS, assign_split
from pipelines.steps import step
from pipelines.vocab import FIELD, ID, TOKEN
from pipelines.vocab import fingerprint as vocab_fingerprint

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class PreprocessResult:
    output: str
    manifest: Manifest
    skipped: bool


def run_preprocess(spark: SparkSession, cfg: Config, force: bool = False,
                   engines: features.Engines = features.ARROW) -> PreprocessResult:
    """Run the whole job. Reruns on unchanged input and config return early unless `force`.
    `engines`: Spark SQL in place of Arrow, for the tests that compare the two (pipelines/features.py)."""
    dataset: DatasetConfig = cfg.require("dataset")
    pre: PreprocessConfig = cfg.require("preprocess")
    storage = HadoopFiles(spark)
    output = storage.qualify(pre.output)
    tables = _tables(dataset)
    read.check_output_outside_inputs(spark, output, "preprocess.output", {n: s.path for n, s in tables.items()})
    inputs = {name: _describe_input(storage, spec) for name, spec in tables.items()}
    # Only what shapes the output: Spark tuning and the other stages' sections do not.
    fingerprint_of_config = config_hash(
        cfg.model_copy(update={"spark": None, "generate": None, "train": None, "score": None, "evaluate": None}),
        exclude={"promote", "drift"},
    )

    previous = _committed_manifest(storage, output)
    if not force and previous and _same_run(previous, inputs, fingerprint_of_config):
        log.info("%s is up to date with its input and config; nothing to do (--force rebuilds)", output)
        return PreprocessResult(output, previous, skipped=True)

    with committed_directory(storage, output, "preprocess", "preprocess.output") as tmp:
        staging = f"{tmp}/_staging"
        with step("parse inputs and quarantine malformed rows"):
            rows = {
                name: _stage_parsed(spark, spec, name, f"{staging}/{name}", dataset if name == "input" else None,
                                    engines.parse)
                for name, spec in tables.items()
            }
            quarantine.write_rejects(spark, {name: f"{staging}/{name}" for name in tables}, f"{tmp}/{REJECTS}", rows)
            for name, counts in rows.items():
                quarantine.check_reject_rate(spark, name, counts, f"{staging}/{name}", pre.max_reject_rate,
                                             "preprocess.max_reject_rate")
            if rows["input"]["accepted"] == 0:
                raise read.InputError(f"{dataset.input.path}: no data rows ({rows['input']['input']} read, "
                                      f"{rows['input']['rejected']} rejected): an empty or header-only input")
        with step("join clicks and side tables" if len(tables) > 1 else "count splits"):
            joined = _joined(spark, dataset, staging)
            split_rows = _split_counts(joined, dataset.label_name)
            _check_splits(split_rows, dataset)
        with step("fit vocabularies and numeric statistics on train"):
            fmap, vocabulary = _fit(spark, joined.where(F.col(SPLIT) == "train"), dataset, pre, tmp, storage)
        with step("check drift against the previous data and the serving model"):
            drift = check_drift(cfg.drift, joined.where(F.col(SPLIT) == "train"), fmap, vocabulary)
        with step("write shards"):
            keep = _kept_columns(dataset)
            _write_shards(joined, fmap, vocabulary, pre, keep, split_rows, tmp, engines)
            _write_holdout(joined, fmap, keep, split_rows, pre, f"{tmp}/{HOLDOUT}")
        accepted = rows["input"]["accepted"]
        if accepted != sum(s["rows"] for s in split_rows.values()):
            raise AssertionError(f"row conservation broken: {accepted} accepted vs {split_rows}")
        manifest = _manifest(dataset, pre, fmap, inputs, fingerprint_of_config, rows, split_rows, keep, drift)
        PreprocessOutput.write_manifest(tmp, manifest, storage)
        storage.delete(staging)
    log.info(
        "preprocess done: %d rows in, %d accepted, %d rejected; %s",
        rows["input"]["input"], accepted, rows["input"]["rejected"],
        ", ".join(f"{s} {v['rows']}" for s, v in split_rows.items()),
    )
    return PreprocessResult(output, manifest, skipped=False)


# ------------------------------------------------------------------------------------------ extract
def _tables(dataset: DatasetConfig) -> dict[str, TableSpec]:
    tables = {"input": dataset.input}
    if dataset.clicks is not None:
        tables["clicks"] = dataset.clicks.table
    for side in dataset.side_tables:
        tables[f"side_{side.name}"] = side.table
    return tables


def _describe_input(storage: HadoopFiles, spec: TableSpec) -> InputFiles:
    files = storage.list_files(spec.path)
    return InputFiles(path=spec.path, files=len(files), bytes=sum(f.size for f in files),
                      fingerprint=storage.fingerprint(spec.path))


def _stage_parsed(
    spark: SparkSession, spec: TableSpec, name: str, path: str, dataset: DatasetConfig | None, parse: str
) -> dict[str, int]:
    """Parse once into typed Parquet. The main input also gets its split here: the split depends
    on input columns only, so a data set without joins needs no second pass before fitting."""
    parsed = read.read_table(spark, spec, name, parse)
    if dataset is not None:
        parsed = assign_split(parsed, dataset.split, [c.name for c in spec.resolved_columns])
    return quarantine.stage(parsed, path, spec.path)


def _staged(spark: SparkSession, staging: str, name: str, status: str) -> DataFrame:
    return quarantine.staged(spark, f"{staging}/{name}", status)


# ---------------------------------------------------------------------------------------- transform
def _joined(spark: SparkSession, dataset: DatasetConfig, staging: str) -> DataFrame:
    """Accepted input rows with labels from clicks and side-table columns, staged once if joined."""
    frame = _staged(spark, staging, "input", "ok")
    if dataset.clicks is None and not dataset.side_tables:
        return frame
    if dataset.clicks is not None:
        frame = label_from_clicks(frame, _staged(spark, staging, "clicks", "ok"), dataset.clicks)
    for side in dataset.side_tables:
        columns = [c.name for c in side.table.resolved_columns if c.role != "ignore"]
        side_frame = _staged(spark, staging, f"side_{side.name}", "ok").select(*columns)
        frame = join_side_table(frame, side_frame, side)
    frame.write.parquet(f"{staging}/joined")
    return spark.read.parquet(f"{staging}/joined")


def _check_splits(split_rows: dict[str, dict[str, Any]], dataset: DatasetConfig) -> None:
    """Every split the configuration asks for has rows (time boundaries that miss the data leave one empty)."""
    split = dataset.split
    wanted = SPLITS if split.method == "time" else [s for s in SPLITS if getattr(split, s) > 0]
    empty = [s for s in wanted if split_rows[s]["rows"] == 0]
    if empty:
        how = (f"time boundaries dataset.split.train_end={split.train_end}, valid_end={split.valid_end} on column "
               f"'{split.time_column}'" if split.method == "time" else "dataset.split fractions")
        counts = ", ".join(f"{s} {v['rows']}" for s, v in split_rows.items())
        raise read.InputError(f"the {' and '.join(empty)} split(s) of {dataset.input.path} are empty ({counts}): "
                              f"check the {how} against the data")


def _split_counts(joined: DataFrame, label: str) -> dict[str, dict[str, Any]]:
    stats = {
        r[SPLIT]: (r["rows"], r["rate"])
        for r in joined.groupBy(SPLIT).agg(F.count(F.lit(1)).alias("rows"), F.avg(label).alias("rate")).collect()
    }
    return {s: {"rows": stats.get(s, (0, None))[0], "label_rate": stats.get(s, (0, None))[1]} for s in SPLITS}


def _fit(
    spark: SparkSession,
    train: DataFrame,
    dataset: DatasetConfig,
    pre: PreprocessConfig,
    tmp: str,
    storage: HadoopFiles,
) -> tuple[FeatureMap, DataFrame]:
    declared = features.declared_fields(dataset, pre)
    known = _known_values(spark, pre.vocab.keep_values_of)
    _write_single_parquet(storage, features.fit_vocabulary(train, declared, pre.vocab.hash_seed, known)
                          .orderBy(FIELD, ID), f"{tmp}/{VOCABULARY}")
    vocabulary = spark.read.parquet(f"{tmp}/{VOCABULARY}")
    fitted = features.fitted_fields(train, declared, vocabulary)
    fmap = FeatureMap(
        label=dataset.label_name,
        fields=tuple(fitted),
        passthrough=tuple(_kept_columns(dataset)),
        vocab_fingerprint=vocab_fingerprint(vocabulary, fitted),
        hash_seed=pre.vocab.hash_seed,
        transforms_version=TRANSFORMS_VERSION,
    )
    summary = {
        f.name: {"size": f.vocab_size, "hashed": bool(f.hash_buckets), "min_count": f.min_count, "top_k": f.top_k,
                 "oov_buckets": f.oov_buckets or 0}
        for f in fmap.categorical
    }
    storage.write_text(f"{tmp}/{VOCAB_SUMMARY}", strict_json.dumps(summary, indent=2, sort_keys=True))
    return fmap, vocabulary


def _known_values(spark: SparkSession, model: str | None) -> DataFrame | None:
    """The (field, token) pairs of the vocabulary of preprocess.vocab.keep_values_of's model."""
    if model is None:
        return None
    try:
        version = open_model_version(model)
    except ModelVersionError as err:
        log.info("preprocess.vocab.keep_values_of: %s: the vocabulary is fitted on this data alone", err)
        return None
    log.info("keeping the values of %s's vocabulary seen at all, below min_count", version.path)
    return spark.read.parquet(version.vocabulary.uri).where(F.col(TOKEN).isNotNull()).select(FIELD, TOKEN)


def _write_single_parquet(storage: HadoopFiles, frame: DataFrame, path: str) -> None:
    """One Parquet file with a stable name, so reruns can be compared byte for byte."""
    scratch = f"{path.rsplit('/', 1)[0]}/_writing"
    frame.coalesce(1).write.parquet(scratch)
    part = next(f.path for f in storage.list_files(scratch) if f.path.endswith(".parquet"))
    storage.rename(part, path)
    storage.delete(scratch)


# --------------------------------------------------------------------------------------------- load
def _kept_columns(dataset: DatasetConfig) -> list[str]:
    return [c.name for c in dataset.all_columns if c.role in ("id", "passthrough")]


def _write_shards(
    joined: DataFrame,
    fmap: FeatureMap,
    vocabulary: DataFrame,
    pre: PreprocessConfig,
    keep: list[str],
    split_rows: dict[str, dict[str, Any]],
    tmp: str,
    engines: features.Engines,
) -> None:
    """Encode every split in one pass, then lay each split out as ceil(rows / rows_per_file) files.

    Rows are hash-partitioned and sorted by the row hash: a fixed pseudo-random order (no time or
    file order leaks into training batches), identical on every rerun.
    """
    encoded_path = f"{tmp}/_staging/encoded"
    shipped = None if engines.encode == "spark" else features.broadcast_vocabulary(
        joined.sparkSession, Location.of(f"{tmp}/{VOCABULARY}"), pre.vocab.broadcast_max_entries)
    if shipped is not None:
        encoded = features.apply_feature_map_in_arrow(joined, fmap, shipped, keep=(*keep, ROW_HASH, SPLIT))
    else:
        encoded = features.apply_feature_map(joined, fmap, vocabulary, pre.vocab.broadcast_max_entries,
                                             keep=(*keep, ROW_HASH, SPLIT))
    encoded.write.partitionBy(SPLIT).parquet(encoded_path)
    encoded = joined.sparkSession.read.parquet(encoded_path)
    # Dictionary encoding off: ids are already dense codes, and plain int32/float32 pages make
    # the row-group size predictable (4 bytes a value) and the fastest to decode.
    bytes_per_row = 4 * (len(fmap.fields) + 1) + 16 * len(keep)
    for split in SPLITS:
        files = max(1, math.ceil(split_rows[split]["rows"] / pre.shards.rows_per_file))
        (
            encoded.where(F.col(SPLIT) == split)
            .drop(SPLIT)
            .repartition(files, ROW_HASH)
            .sortWithinPartitions(ROW_HASH)
            .drop(ROW_HASH)
            .write.option("parquet.block.size", pre.shards.rows_per_row_group * bytes_per_row)
            .option("parquet.enable.dictionary", "false")
            .option("compression", pre.shards.compression)
            .parquet(f"{tmp}/{split}")
        )


def _write_holdout(joined: DataFrame, fmap: FeatureMap, keep: list[str], split_rows: dict[str, dict[str, Any]],
                   pre: PreprocessConfig, path: str) -> None:
    """The test rows as parsed: any model encodes them with its own feature map, so that two models
    of different vocabularies are judged on the same rows (deepfm/training/promotion.py)."""
    columns = list(dict.fromkeys([fmap.label, *(f.name for f in fmap.fields), *keep]))
    files = max(1, math.ceil(split_rows["test"]["rows"] / pre.shards.rows_per_file))
    (joined.where(F.col(SPLIT) == "test").select(*(F.col(f"`{c}`") for c in columns))
     .repartition(files).write.option("compression", pre.shards.compression).parquet(path))


def _manifest(
    dataset: DatasetConfig,
    pre: PreprocessConfig,
    fmap: FeatureMap,
    inputs: dict[str, InputFiles],
    fingerprint_of_config: str,
    rows: dict[str, dict[str, Any]],
    split_rows: dict[str, dict[str, Any]],
    keep: list[str],
    drift: dict[str, Any],
) -> Manifest:
    return Manifest(
        dataset=dataset.name,
        code_version=__version__,
        transforms_version=TRANSFORMS_VERSION,
        config_hash=fingerprint_of_config,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        inputs=inputs,
        label=fmap.label,
        field_order=[f.name for f in fmap.fields],
        vocab_sizes=fmap.vocab_sizes,
        vocab={"path": VOCABULARY, "fingerprint": fmap.vocab_fingerprint},
        feature_map=fmap.to_dict(),
        kept_columns=keep,
        rows=RowCounts(**TableRows.model_validate(rows["input"]).model_dump(),
                       tables={name: TableRows.model_validate(counts) for name, counts in rows.items()},
                       splits={name: SplitRows.model_validate(counts) for name, counts in split_rows.items()}),
        shards=pre.shards.model_dump(),
        drift=drift,
    )


def _committed_manifest(storage: HadoopFiles, output: str) -> Manifest | None:
    if not is_committed(storage, output):
        return None
    try:
        return PreprocessOutput.open(output, storage).manifest
    except (FileNotFoundError, ValueError) as err:  # a damaged or outdated earlier output is rebuilt, not trusted
        log.warning("%s", err)
        return None


def _same_run(previous: Manifest, inputs: dict[str, InputFiles], fingerprint_of_config: str) -> bool:
    return (
        previous.config_hash == fingerprint_of_config
        and previous.code_version == __version__
        and previous.transforms_version == TRANSFORMS_VERSION
        and {k: v.fingerprint for k, v in previous.inputs.items()} == {k: v.fingerprint for k, v in inputs.items()}
    )
