"""The score job: new click logs in, click probabilities out, with exactly the training transforms.

read       raw logs (the data set's layout, or one of their own) or already-encoded Parquet;
           malformed rows are quarantined with a reason and counted, as in preprocess
transform  the model directory's feature map and vocabulary, never refitted: unseen values map to
           OOV, missing ones to the missing id, numeric fields use the training statistics. Each
           Python worker parses the raw lines and encodes the Arrow batches it scores
           (deepfm/features/parse.py, encode.py, the vocabulary broadcast once); Spark SQL parses
           and encodes only what Arrow cannot (pipelines/features.py). Neither runs per-row Python.
predict    mapInArrow: each Python worker builds the model once and scores Arrow batches of
           score.batch_rows rows. A model of up to score.broadcast_max_mb comes as a broadcast of its
           weights; a bigger one (or score.tables=mapped) from its weight files, which each executor
           memory-maps: a worker reads only the table rows it looks up, the page cache holds them for
           every worker of the machine, and no executor needs the model's size in memory
write      output/run_date=D/ (Parquet, _rejects/, _SUCCESS), swapped in by rename: a rerun for the
           same date replaces the whole partition, and a failed run leaves the old one untouched

Output columns: score.keep, `probability` (float), `model_version` (the version's name: its run date
or start time), `model_digest` (a hash of its weights: equal digests score identically), `scored_at`;
`run_date` comes from the directory name when the output is read as a table.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pyspark import Broadcast, SparkFiles
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from deepfm.config import Config, ScoreConfig, TableSpec, VocabConfig, parse_run_date
from deepfm.errors import UserError
from deepfm.features.feature_map import FeatureMap
from deepfm.features.parse import ParseLines
from deepfm.features.preprocess_output import PreprocessOutput, manifest_path
from deepfm.serving.inference import PROBABILITY, ArrowScorer, LineScorer
from deepfm.storage.commit import committed_directory
from deepfm.storage.hadoop import HadoopFiles
from deepfm.storage.location import Location
from deepfm.training.model_versions import ModelVersion, ModelVersionError, open_model_version
from pipelines import features, quarantine, read
from pipelines.join import join_side_table
from pipelines.steps import step
from pipelines.vocab import VOCAB_SCHEMA
from pipelines.vocab import fingerprint as vocab_fingerprint

log = logging.getLogger(__name__)

MODEL_VERSION, MODEL_DIGEST, SCORED_AT, RUN_DATE = "model_version", "model_digest", "scored_at", "run_date"
REJECTS = "_rejects"
_ARROW_BATCH = "spark.sql.execution.arrow.maxRecordsPerBatch"
_RAW_PREFIX = "_raw_value_of_"


@dataclass(frozen=True)
class ScoreResult:
    partition: str
    rows: int
    rejected: int
    model_version: str  # the version's name
    model_digest: str  # of its weights
    seconds: float


def run_score(spark: SparkSession, cfg: Config, run_date: str, engines: features.Engines = features.ARROW
              ) -> ScoreResult:
    """Score the configured input into score.output/run_date=<run_date>/, atomically. `engines`:
    Spark SQL in place of Arrow, for the tests that compare the two (pipelines/features.py)."""
    score: ScoreConfig = cfg.require("score")
    parse_run_date(run_date)
    start = time.perf_counter()
    storage = HadoopFiles(spark)
    read.check_output_outside_inputs(spark, score.output, "score.output",
                                     {"input": score.preprocessed or _input_spec(cfg).path})
    model = open_model_version(score.model)
    weights = executor_weights(spark, model, score.tables, score.broadcast_max_mb)
    partition = f"{storage.qualify(score.output).rstrip('/')}/{RUN_DATE}={run_date}"
    scored_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    with committed_directory(storage, partition, "score", "score.output") as tmp:
        with step("check the model's vocabulary"):
            vocabulary = checked_vocabulary(spark, model)
        encoder = _arrow_encoder(spark, cfg, model, engines)
        scoring = (f"score with model version {model.name} ({model.weights_digest})"
                   + (" (encoding in Arrow)" if encoder is not None else ""))
        if encoder is not None and _arrow_parses(cfg, engines):
            with step(f"read, quarantine and {scoring.replace('encoding', 'parsing and encoding')}"):
                predictions, counts = _score_lines(spark, cfg, model, weights, encoder, f"{tmp}/_staging",
                                                   f"{tmp}/{REJECTS}")
            scoring = "write the scores"
        else:
            with step("read and quarantine input" if score.preprocessed is None else "read encoded input"):
                inputs, keep, counts = _model_inputs(spark, cfg, model, vocabulary, f"{tmp}/_staging",
                                                     f"{tmp}/{REJECTS}", engines, encoder is not None)
            predictions = predict(inputs, model, keep, score.batch_rows, score.threads, score.device, encoder,
                                  weights)
            for name in keep:
                if name.startswith(_RAW_PREFIX):
                    predictions = predictions.withColumnRenamed(name, name.removeprefix(_RAW_PREFIX))
        with step(scoring):
            (predictions.withColumn(MODEL_VERSION, F.lit(model.name))
             .withColumn(MODEL_DIGEST, F.lit(model.weights_digest))
             .withColumn(SCORED_AT, F.lit(scored_at).cast("timestamp"))
             .write.mode("append").parquet(tmp))
        storage.delete(f"{tmp}/_staging")
        rows = spark.read.parquet(quarantine.parquet_files(tmp)).count()
        if rows != counts["accepted"]:
            raise AssertionError(f"row conservation broken: {counts['accepted']} accepted rows, {rows} scored")
    seconds = time.perf_counter() - start
    log.info("scored %d rows (%d rejected) in %.1fs, %.0f rows/s, into %s", rows, counts["rejected"], seconds,
             rows / max(seconds, 1e-9), partition)
    return ScoreResult(partition, rows, counts["rejected"], model.name, model.weights_digest, seconds)


def checked_vocabulary(spark: SparkSession, model: ModelVersion) -> DataFrame:
    """The model's vocabulary table, after checking it is the one the model was trained with."""
    if not model.vocabulary.is_file():
        raise ModelVersionError(f"{model.vocabulary} is missing: the model cannot be applied without its vocabulary")
    vocabulary = _read_vocabulary(spark, model.vocabulary)
    found = vocab_fingerprint(vocabulary, list(model.feature_map.fields))
    if found != model.vocab_fingerprint:
        raise ModelVersionError(
            f"{model.vocabulary} does not match the model: its fingerprint is {found[:12]}, the model was "
            f"trained with {model.vocab_fingerprint[:12]} ({model.path / 'model.json'}). Copy the vocabulary "
            "from the preprocess output the model was trained on, or retrain."
        )
    return vocabulary


def _read_vocabulary(spark: SparkSession, location: Location) -> DataFrame:
    """Spark reads the vocabulary where every executor can (a Hadoop file system, or a local path under
    a local master); otherwise (s3://, or the driver's disk on a cluster) the driver reads it and ships it."""
    if location.is_local:
        if spark.sparkContext.master.startswith("local"):
            return spark.read.parquet(location.as_uri)
    elif HadoopFiles(spark).supports(location.uri):
        return spark.read.parquet(location.uri)
    with location.open() as f:
        table = pq.read_table(f)
    arrow = "spark.sql.execution.arrow.pyspark.enabled"  # a columnar transfer, not one Python row at a time
    previous = spark.conf.get(arrow, "false")
    spark.conf.set(arrow, "true")
    try:
        return spark.createDataFrame(table.to_pandas(), VOCAB_SCHEMA)
    finally:
        spark.conf.set(arrow, previous)


def _arrow_encoder(spark: SparkSession, cfg: Config, model: ModelVersion, engines: features.Engines
                   ) -> Broadcast | None:
    """The broadcast vocabulary when raw input is encoded in the Python workers that score it."""
    score: ScoreConfig = cfg.score
    if score.preprocessed is not None or engines.encode != "arrow":
        return None
    broadcast_max = (cfg.preprocess.vocab if cfg.preprocess else VocabConfig()).broadcast_max_entries
    return features.broadcast_vocabulary(spark, model.vocabulary, broadcast_max)


def _arrow_parses(cfg: Config, engines: features.Engines) -> bool:
    """Whether the raw input can be parsed in the scoring Python workers."""
    score: ScoreConfig = cfg.score
    if engines.parse != "arrow" or score.preprocessed is not None:
        return False
    return not cfg.require("dataset").side_tables and read.arrow_parses(_input_spec(cfg))


Weights = Callable[[], "bytes | list[str]"]


def executor_weights(spark: SparkSession, model: ModelVersion, tables: str = "auto", broadcast_max_mb: int = 1024
                     ) -> Weights:
    """What the scoring Python workers build the model from (ArrowScorer.weights), after the model
    is loaded here the same way, so that one that cannot be fails before any input work: a broadcast
    of its weights, or (score.tables) the paths of its weight files, which each executor maps."""
    size = model.weights_size
    if tables == "broadcast" or (tables == "auto" and size <= broadcast_max_mb << 20):
        model.load()
        broadcast = spark.sparkContext.broadcast(model.weights_bytes())
        return lambda: broadcast.value
    _check_address_space(spark, size)
    local_master = spark.sparkContext.master.startswith("local")
    if local_master and all(f.is_local for f in model.weight_files):
        paths = [str(f.local_path) for f in model.weight_files]
    else:
        paths = _staged_weight_files(model)
    model.load(mapped_from=paths)
    log.info("executors map the model's %.2f GiB of weights from its files (score.tables=%s)", size / 2**30, tables)
    if local_master:  # the executor is this process's JVM: its Python workers read the driver's files
        return lambda: paths
    for path in paths:
        # A file: URI, not a path: Spark resolves a path's links, and would ship the link's target under its name.
        spark.sparkContext.addFile(Path(path).as_uri())
    names = [Path(p).name for p in paths]
    return lambda: [SparkFiles.get(name) for name in names]


def _staged_weight_files(model: ModelVersion) -> list[str]:
    """The weight files for SparkContext.addFile, in the driver's directory of added files (deleted
    with the application): links to local files, copies of remote ones, named by the weights'
    digest, because added files are fetched by name and two versions' names are alike."""
    staging = Path(SparkFiles.getRootDirectory()) / "deepfm-weights"
    staging.mkdir(exist_ok=True)
    paths = []
    for source in model.weight_files:
        staged = staging / f"{model.weights_digest}-{source.name}"
        if not staged.exists():
            if source.is_local:
                staged.symlink_to(source.local_path)
            else:
                log.info("copying %s (%.2f GiB) for the executors", source, source.size / 2**30)
                source.download_to(staged)
        paths.append(str(staged))
    return paths


def _check_address_space(spark: SparkSession, weights_size: int) -> None:
    """spark.executor.pyspark.memory caps each Python worker's address space (RLIMIT_AS), which
    mapped files count in whole, though they take no memory until read."""
    limit = spark.sparkContext.getConf().get("spark.executor.pyspark.memory", None)
    if limit is None:
        return
    limit_mb = spark.sparkContext._jvm.org.apache.spark.network.util.JavaUtils.byteStringAsMb(limit)
    needed_mb = (weights_size >> 20) + 1024  # and torch's own mappings
    if needed_mb > limit_mb:
        raise UserError(
            f"spark.executor.pyspark.memory={limit} caps each Python worker's address space, and mapping the "
            f"model's {weights_size / 2**30:.2f} GiB of weight files (score.tables) needs about {needed_mb} MiB of "
            "it: unset spark.executor.pyspark.memory (mapped pages are page cache, which the kernel reclaims) "
            "or raise it above that")


def _scorer(model: ModelVersion, weights: Weights, keep: list[str], threads: int, device: str,
            vocabulary: Broadcast | None) -> ArrowScorer:
    fmap = model.feature_map
    return ArrowScorer(
        weights_digest=model.weights_digest,
        model_config=model.config.to_dict(),
        categorical=tuple(f.name for f in fmap.categorical),
        dense=tuple(f.name for f in fmap.dense),
        keep=tuple(keep),
        weights=weights,
        threads=threads,
        device=device,
        feature_map=fmap.to_dict() if vocabulary is not None else None,
        vocabulary=(lambda: vocabulary.value) if vocabulary is not None else None,
    )


def _score_lines(spark: SparkSession, cfg: Config, model: ModelVersion, weights: Weights, vocabulary: Broadcast,
                 staging: str, rejects: str) -> tuple[DataFrame, dict[str, Any]]:
    """Raw text logs scored in one pass: the lines go to the Python workers, which parse, encode and
    score them; good rows' scores and rejected rows' reasons are staged together (a few narrow
    columns), then split into the predictions and the rejects."""
    score: ScoreConfig = cfg.score
    spec = _input_spec(cfg)
    keep = _raw_keep(cfg, model.feature_map)
    lines, header, positions = read.raw_lines(spark, spec, "input")
    scorer = LineScorer(ParseLines(read.line_parser(spec, header, positions), read.ARROW_BOOKKEEPING),
                        _scorer(model, weights, [], score.threads, score.device, vocabulary), tuple(keep),
                        model.feature_map.label)
    columns = {c.name: c for c in spec.resolved_columns}
    schema = T.StructType([
        *(T.StructField(name, T.FloatType() if columns[name].role == "label" else read.spark_type(columns[name]))
          for name in keep),
        T.StructField(PROBABILITY, T.FloatType()), *read.BOOKKEEPING_FIELDS])
    spark.conf.set(_ARROW_BATCH, str(score.batch_rows))
    rows = _stage(spark, {"input": (lines.mapInArrow(scorer, schema), spec.path)}, staging, rejects,
                  score.max_reject_rate)
    return quarantine.staged(spark, f"{staging}/input", "ok"), rows["input"]


def predict(inputs: DataFrame, model: ModelVersion, keep: list[str], batch_rows: int = 16_384, threads: int = 1,
            device: str = "auto", vocabulary: Broadcast | None = None, weights: Weights | None = None) -> DataFrame:
    """`keep` columns plus `probability`, computed in the executors by mapInArrow; with `vocabulary`
    (a broadcast of its Arrow IPC bytes) `inputs` hold raw feature values, encoded there too.
    `weights`: from `executor_weights`; by default, its choice for the model's size."""
    spark = inputs.sparkSession
    scorer = _scorer(model, weights or executor_weights(spark, model), keep, threads, device, vocabulary)
    schema = T.StructType([inputs.schema[name] for name in keep] + [T.StructField(PROBABILITY, T.FloatType())])
    # mapInArrow hands the function batches of this many rows; the setting is read when the job runs.
    spark.conf.set(_ARROW_BATCH, str(batch_rows))
    return inputs.mapInArrow(scorer, schema)


def encoded_split(spark: SparkSession, path: str, model: ModelVersion, keep: list[str]) -> DataFrame:
    """Already-encoded rows (a preprocess split), checked against the model's feature map."""
    frame = spark.read.parquet(path)
    _require_columns(frame.columns, [f.name for f in model.feature_map.fields], path, "the model's inputs")
    _require_columns(frame.columns, keep, path, "score.keep")
    encoded_by = _preprocess_output_of(HadoopFiles(spark), path)
    if encoded_by is not None and encoded_by.vocab_fingerprint != model.vocab_fingerprint:
        raise ModelVersionError(
            f"{path} was encoded with another vocabulary (fingerprint {encoded_by.vocab_fingerprint[:12]}) "
            f"than model {model.path} ({model.vocab_fingerprint[:12]}): its ids mean different values. "
            "Score the raw logs instead, or the split of the preprocess run the model was trained on."
        )
    return frame.select(*[f.name for f in model.feature_map.fields], *keep)


# ------------------------------------------------------------------------------------------ inputs
def _model_inputs(spark: SparkSession, cfg: Config, model: ModelVersion, vocabulary: DataFrame, staging: str,
                  rejects: str, engines: features.Engines, raw: bool = False
                  ) -> tuple[DataFrame, list[str], dict[str, Any]]:
    """The rows to score: encoded model inputs and `keep`, or with `raw` the raw feature values."""
    score: ScoreConfig = cfg.score
    fmap = model.feature_map
    if score.preprocessed is not None:
        columns = spark.read.parquet(score.preprocessed).columns
        keep = score.keep if score.keep is not None else _default_keep(columns, list(fmap.passthrough), fmap.label)
        frame = encoded_split(spark, score.preprocessed, model, keep)
        return frame, keep, {"accepted": frame.count(), "rejected": 0}

    dataset = cfg.require("dataset")
    spec = _input_spec(cfg)
    keep = _raw_keep(cfg, fmap)
    tables: dict[str, TableSpec] = {"input": spec, **{f"side_{s.name}": s.table for s in dataset.side_tables}}
    rows = _stage(spark, {name: (read.read_table(spark, table, name, engines.parse), table.path)
                          for name, table in tables.items()}, staging, rejects, score.max_reject_rate)
    frame = quarantine.staged(spark, f"{staging}/input", "ok")
    for side in dataset.side_tables:
        side_columns = [c.name for c in side.table.resolved_columns if c.role != "ignore"]
        frame = join_side_table(frame, quarantine.staged(spark, f"{staging}/side_{side.name}", "ok")
                                .select(*side_columns), side)
    if raw:  # the label as the Spark SQL encoding outputs it; kept feature columns are raw already
        columns = list(dict.fromkeys([*(f.name for f in fmap.fields), *keep]))
        return frame.select(*[F.col(f"`{c}`").cast("float").alias(c) if c == fmap.label else F.col(f"`{c}`")
                              for c in columns]), keep, rows["input"]
    # A kept feature column (a country to slice by, say) is output raw, not as its encoded id.
    features_kept = [k for k in keep if k in {f.name for f in fmap.fields}]
    for name in features_kept:
        frame = frame.withColumn(_RAW_PREFIX + name, F.col(f"`{name}`"))
    keep_in_frame = [_RAW_PREFIX + k if k in features_kept else k for k in keep]
    broadcast_max = (cfg.preprocess.vocab if cfg.preprocess else VocabConfig()).broadcast_max_entries
    encoded = features.apply_feature_map(frame, fmap, vocabulary, broadcast_max, keep=tuple(keep_in_frame))
    # apply_feature_map puts the label first when the input has one; keep decides what is output.
    return encoded.select(*[f.name for f in fmap.fields], *keep_in_frame), keep_in_frame, rows["input"]


def _input_spec(cfg: Config) -> TableSpec:
    score: ScoreConfig = cfg.score
    spec = score.input or cfg.require("dataset").input
    return spec.model_copy(update={"path": score.input_path}) if score.input_path is not None else spec


def _raw_keep(cfg: Config, fmap: FeatureMap) -> list[str]:
    """The columns copied to the output from raw input, after checking the input has the model's."""
    dataset, spec = cfg.require("dataset"), _input_spec(cfg)
    provided = {c.name for c in spec.resolved_columns}
    provided |= {c.name for s in dataset.side_tables for c in s.table.resolved_columns}
    _require_columns(sorted(provided), [f.name for f in fmap.fields], f"score input {spec.path}", "the model's inputs")
    declared_keep = list(dict.fromkeys([*dataset.row_key,
                                        *(c.name for c in dataset.all_columns if c.role in ("id", "passthrough"))]))
    keep = cfg.score.keep if cfg.score.keep is not None else _default_keep(sorted(provided), declared_keep, fmap.label)
    _require_columns(sorted(provided), keep, f"score input {spec.path}", "score.keep")
    return keep


def _stage(spark: SparkSession, parsed: dict[str, tuple[DataFrame, str]], staging: str, rejects: str,
           max_reject_rate: float) -> dict[str, dict[str, Any]]:
    """Each parsed table (with the input path it came from) staged by status, the rejects written,
    and the reject rate checked; the row counts per table."""
    rows = {name: quarantine.stage(frame, f"{staging}/{name}", source) for name, (frame, source) in parsed.items()}
    quarantine.write_rejects(spark, {name: f"{staging}/{name}" for name in parsed}, rejects, rows)
    for name, counts in rows.items():
        quarantine.check_reject_rate(spark, name, counts, f"{staging}/{name}", max_reject_rate, "score.max_reject_rate")
    return rows


def _default_keep(columns: list[str], declared: list[str], label: str) -> list[str]:
    keep = [c for c in declared if c in columns]
    return [*keep, label] if label in columns and label not in keep else keep


def _require_columns(available: list[str], required: list[str], where: str, what: str) -> None:
    missing = [c for c in required if c not in available]
    if missing:
        raise read.InputError(f"{where} lacks column(s) {missing} needed for {what}")


def _preprocess_output_of(storage: HadoopFiles, path: str) -> PreprocessOutput | None:
    """The preprocess output a split directory (one level up) belongs to, or that `path` is."""
    for candidate in (path.rstrip("/"), path.rstrip("/").rsplit("/", 1)[0]):
        if storage.is_file(manifest_path(candidate)):
            return PreprocessOutput.open(candidate, storage)
    return None
