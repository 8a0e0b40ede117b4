"""Typed, validated configuration: the one place where YAML becomes objects.

Files are layered left to right (`--conf base.yaml --conf datasets/criteo.yaml ...`), then
`--set key.path=value` overrides apply. Every error names the offending key and the file that set
it, and is raised before Spark starts.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import importlib.resources
import json
import os
import re
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deepfm.features.transforms import TransformName, transform


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who wrote the YAML."""


_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def absolute_path(path: str) -> str:
    """The one rule for every key that names a file or directory: a URI (`hdfs://`, `s3a://`,
    `file:/`) is kept as it is; a relative path is relative to the current directory of the command
    that loads the configuration, and becomes absolute at once, so that Spark executors and spawned
    training workers (whose current directories differ) all see the same location. An empty path
    is refused: it would mean the current directory, where a stage would then write its output."""
    if not path.strip():
        raise ValueError("an empty path: name a file or directory")
    if _URI.match(path):
        return path
    return os.path.abspath(os.path.expanduser(path))


# A file, directory or glob: local, or any URI a file system is installed for.
PathStr = Annotated[str, AfterValidator(absolute_path)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------------------------
class ColumnSpec(_Strict):
    """One input column, or a group of columns (`names`) sharing the same options."""

    # One column (`name`), or a numbered family: `names: ["C{1..26}"]` stands for C1 ... C26.
    name: str | None = None
    names: list[str] | None = None
    # `label` (0/1), `id` (kept in the shards and the scores), `timestamp`, `categorical`, `numeric`,
    # `passthrough` (kept, not a feature) or `ignore`.
    role: Literal["label", "id", "timestamp", "categorical", "numeric", "passthrough", "ignore"]
    dtype: Literal["int", "float", "string"] | None = None  # how the raw value is validated (`int` rejects `2.5`)
    # Numeric fields: `log_bucketize` (then categorical), `log1p_standardize` (a dense feature),
    # `standardize` or `none`; default preprocess.numeric_transform (deepfm/features/transforms.py).
    transform: TransformName | None = None
    clip: tuple[float, float] | None = None  # [lo, hi], applied to the raw value first
    # Categorical (and bucketized numeric) fields: this field's vocabulary options; unset, those of
    # preprocess.vocab.
    min_count: Annotated[int, Field(ge=1)] | None = None
    top_k: Annotated[int, Field(ge=1)] | None = None  # keep at most this many of its most frequent values
    hash_buckets: Annotated[int, Field(ge=1)] | None = None  # hash values into this many ids, no vocabulary
    # timestamp fields: a Spark datetime pattern; None lets Spark parse ISO-8601
    format: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ColumnSpec:
        if (self.name is None) == (self.names is None):
            raise ValueError("give exactly one of 'name' or 'names'")
        if self.transform is not None and self.role != "numeric":
            raise ValueError(f"'transform' applies to numeric columns, not role '{self.role}'")
        if self.clip is not None and self.clip[0] > self.clip[1]:
            raise ValueError(f"clip lower bound {self.clip[0]} exceeds upper bound {self.clip[1]}")
        vocab_opts = self.min_count or self.top_k or self.hash_buckets
        if vocab_opts and self.role not in ("categorical", "numeric"):
            raise ValueError("min_count/top_k/hash_buckets apply to categorical fields only")
        if self.format is not None and self.role != "timestamp":
            raise ValueError("'format' applies to timestamp columns only")
        return self

    def expand(self) -> list[Column]:
        names = [self.name] if self.name is not None else [n for p in self.names or [] for n in _expand_range(p)]
        fields = self.model_dump(exclude={"name", "names"})
        return [Column(name=n, **fields) for n in names]


_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def _expand_range(pattern: str) -> list[str]:
    """`C{1..26}` stands for C1, C2, ..., C26 (one range per name)."""
    match = _RANGE.search(pattern)
    if match is None:
        return [pattern]
    lo, hi = int(match.group(1)), int(match.group(2))
    return [pattern[: match.start()] + str(i) + pattern[match.end():] for i in range(lo, hi + 1)]


class Column(_Strict):
    """A single resolved column: what the pipeline code works with."""

    name: str
    role: str
    dtype: str | None = None
    transform: str | None = None
    clip: tuple[float, float] | None = None
    min_count: int | None = None
    top_k: int | None = None
    hash_buckets: int | None = None
    format: str | None = None

    @property
    def parse_type(self) -> str:
        """How the raw text is parsed and validated: int, float, timestamp, or string."""
        if self.role == "timestamp":
            return "timestamp"
        if self.role == "label":
            return "int"
        if self.role == "numeric":
            return self.dtype or "float"
        return self.dtype or "string"

    @property
    def is_dense_feature(self) -> bool:
        """True when the model sees this column as a float (a value-scaled embedding)."""
        return self.role == "numeric" and not transform(self.transform).bucketizes


class TableSpec(_Strict):
    """Where a table lives and how to parse it."""

    # A file, directory or glob (`.gz`/`.bz2` decompress by extension). A path that exists as written
    # is taken literally (a directory `logs[1]`); any other path with `*?[]{}` is a glob.
    path: PathStr
    format: Literal["tsv", "csv", "parquet"] = "tsv"
    delimiter: str | None = None  # one character, no quoting; default tab for tsv, comma for csv
    header: bool = False  # columns are then matched by name; header columns not configured are ignored
    # Spark picks the codec from the file extension (.gz, .bz2); 'gzip' asserts that it is gzip.
    compression: Literal["auto", "none", "gzip"] = "auto"
    columns: list[ColumnSpec]  # the columns used, with their roles

    @property
    def field_delimiter(self) -> str:
        if self.delimiter is not None:
            return self.delimiter
        return "\t" if self.format == "tsv" else ","

    @model_validator(mode="after")
    def _check(self) -> TableSpec:
        names = [c.name for c in self.resolved_columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate column names: {dupes}")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise ValueError(f"delimiter must be one character, got {self.delimiter!r}")
        return self

    @property
    def resolved_columns(self) -> list[Column]:
        return [col for spec in self.columns for col in spec.expand()]


class ClickJoin(_Strict):
    """Labels from a separate click-event log, joined to impressions by impression id."""

    table: TableSpec
    impression_key: str  # the input column clicks refer to
    impression_time: str  # the input's timestamp column
    click_key: str  # the click table's column holding the impression key
    click_time: str  # the click table's timestamp column
    # A click counts when 0 <= click_time - impression_time <= window_seconds.
    window_seconds: Annotated[int, Field(gt=0)] = 3600
    label: str = "label"  # the name of the label column the join adds


class SideTable(_Strict):
    """A small dimension table (item attributes, say) left-joined on a key."""

    name: str  # names its rejects and staging
    table: TableSpec
    key: str  # the join column, in both tables ('on' would be a YAML boolean)
    # 'auto' leaves the choice to spark.sql.autoBroadcastJoinThreshold.
    broadcast: Literal["auto", "always", "never"] = "auto"


class SplitConfig(_Strict):
    """How input rows are split into train, valid and test."""

    method: Literal["random", "time"] = "random"  # `random`: a seeded hash of split.key; `time`: by time_column
    seed: int = 42
    train: Annotated[float, Field(gt=0, le=1)] = 0.8  # fractions of a random split; the three sum to 1
    valid: Annotated[float, Field(ge=0, lt=1)] = 0.1
    test: Annotated[float, Field(ge=0, lt=1)] = 0.1
    # Columns whose hash places a row; None hashes every input column.
    key: list[str] | None = None
    time_column: str | None = None  # time split: train < train_end <= valid < valid_end <= test
    train_end: str | None = None
    valid_end: str | None = None

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if self.method == "random" and abs(self.train + self.valid + self.test - 1.0) > 1e-9:
            raise ValueError(
                f"train + valid + test must be 1, got {self.train + self.valid + self.test:g}"
            )
        if self.method == "time" and not (self.time_column and self.train_end and self.valid_end):
            raise ValueError("a time split needs time_column, train_end and valid_end")
        return self


class DatasetConfig(_Strict):
    """A click log: its input table, the click events and side tables joined to it, and the split."""

    name: str
    input: TableSpec  # the impressions (with their label unless clicks gives it)
    clicks: ClickJoin | None = None  # labels from a separate click-event log
    side_tables: list[SideTable] = []  # dimension tables left-joined on a key
    split: SplitConfig = SplitConfig()

    @model_validator(mode="after")
    def _check(self) -> DatasetConfig:
        labels = [c.name for c in self.input.resolved_columns if c.role == "label"]
        if self.clicks is None and len(labels) != 1:
            raise ValueError(f"input needs exactly one column with role 'label', found {labels}")
        if self.clicks is not None:
            if labels:
                raise ValueError(f"labels come from 'clicks'; drop role 'label' from {labels}")
            for key in (self.clicks.impression_key, self.clicks.impression_time):
                if key not in {c.name for c in self.input.resolved_columns}:
                    raise ValueError(f"clicks: input has no column '{key}'")
            click_cols = {c.name for c in self.clicks.table.resolved_columns}
            for key in (self.clicks.click_key, self.clicks.click_time):
                if key not in click_cols:
                    raise ValueError(f"clicks.table has no column '{key}'")
        for side in self.side_tables:
            if side.key not in {c.name for c in side.table.resolved_columns}:
                raise ValueError(f"side table '{side.name}' has no column '{side.key}'")
            if side.key not in {c.name for c in self.input.resolved_columns}:
                raise ValueError(f"side table '{side.name}': input has no join column '{side.key}'")
        # The split is assigned while parsing the input, before any join.
        input_columns = {c.name for c in self.input.resolved_columns}
        for key in self.split.key or []:
            if key not in input_columns:
                raise ValueError(f"split.key names '{key}', which is not an input column")
        if self.split.time_column and self.split.time_column not in input_columns:
            raise ValueError(f"split.time_column '{self.split.time_column}' is not an input column")
        if not self.feature_columns:
            raise ValueError("no feature columns: give some columns role categorical or numeric")
        return self

    @property
    def all_columns(self) -> list[Column]:
        """Columns of the joined table: input, then each side table's (minus its join key)."""
        cols = list(self.input.resolved_columns)
        for side in self.side_tables:
            cols += [c for c in side.table.resolved_columns if c.name != side.key]
        return cols

    @property
    def feature_columns(self) -> list[Column]:
        return [c for c in self.all_columns if c.role in ("categorical", "numeric")]

    @property
    def row_key(self) -> list[str]:
        """The columns that name an input row, as the data set declares them: its `id` columns, the
        impression key clicks join on and the split's key (a score row can be joined back by them)."""
        declared = [c.name for c in self.input.resolved_columns if c.role == "id"]
        declared += [self.clicks.impression_key] if self.clicks else []
        return list(dict.fromkeys([*declared, *(self.split.key or [])]))

    @property
    def label_name(self) -> str:
        if self.clicks is not None:
            return self.clicks.label
        return next(c.name for c in self.input.resolved_columns if c.role == "label")


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------
class VocabConfig(_Strict):
    """The per-field vocabularies fitted on train: which values get their own id."""

    min_count: Annotated[int, Field(ge=1)] = 10  # rarer values in train share the OOV id; a column's own wins
    top_k: Annotated[int, Field(ge=1)] | None = None  # a field's k most frequent values only; a column's own wins
    # Vocabularies up to this size are broadcast to executors for encoding; larger ones shuffle-join.
    broadcast_max_entries: Annotated[int, Field(ge=0)] = 2_000_000
    hash_seed: int = 0  # seed of hash_buckets fields and of oov_buckets
    # Values below min_count (or beyond top_k), and values never seen in training, hashed into this
    # many ids per text field instead of the one out-of-vocabulary id (TensorFlow's num_oov_buckets):
    # a tail value then shares its row with ~1/oov_buckets of the tail, not with all of it.
    oov_buckets: Annotated[int, Field(ge=0)] = 0


class ShardConfig(_Strict):
    """The Parquet shards preprocess writes."""

    # ~64k rows (a few MB) per row group: fine enough to shuffle and to spread over workers,
    # coarse enough for efficient columnar reads. ~1M rows per file keeps file counts sane.
    rows_per_row_group: Annotated[int, Field(ge=1)] = 65_536
    rows_per_file: Annotated[int, Field(ge=1)] = 1_048_576
    compression: Literal["snappy", "zstd", "none"] = "snappy"


class PreprocessConfig(_Strict):
    """Raw logs to training shards: parse, quarantine, join, split, fit vocabularies and statistics, encode."""

    output: PathStr  # the output directory (any Hadoop path)
    numeric_transform: TransformName = "log_bucketize"  # for numeric columns without their own transform
    vocab: VocabConfig = VocabConfig()
    shards: ShardConfig = ShardConfig()
    # How rows are encoded (as score.encode): `arrow` in the Python workers (deepfm/features/encode.py, the
    # vocabulary broadcast once), `spark` in Spark SQL (one vocabulary join per field).
    # Vocabularies over vocab.broadcast_max_entries use `spark`.
    encode: Literal["arrow", "spark"] = "arrow"
    # How text input is split and validated (as score.parse): `arrow` in the Python workers
    # (deepfm/features/parse.py), `spark` in Spark SQL; the same rows, values and reasons. Tables with
    # timestamp columns, and Parquet input, are parsed by Spark.
    parse: Literal["arrow", "spark"] = "arrow"
    # The job fails when more than this fraction of input rows is rejected.
    max_reject_rate: Annotated[float, Field(ge=0, le=1)] = 0.01


class GenerateConfig(_Strict):
    """Synthetic Criteo-shaped logs with the teacher's true click probability `p_true` (pipelines/generate.py)."""

    output: PathStr
    rows: Annotated[int, Field(ge=1)] = 100_000
    mode: Literal["criteo", "joined"] = "criteo"  # `joined`: impressions, clicks and items to be joined back
    seed: int = 7
    rows_per_file: Annotated[int, Field(ge=1)] = 1_000_000
    base_ctr: Annotated[float, Field(gt=0, lt=1)] = 0.22  # the mean click probability
    # Scales every categorical cardinality (1.0 = Criteo-like, tens to ~10M values).
    cardinality_scale: Annotated[float, Field(gt=0)] = 1.0
    # Which values carry click signal: `head`, a field's popular ones (at least 1 row in 1,000);
    # `long_tail`, also the rare ones down to 2 rows in 100,000 (about 20 in 1M rows), in fields
    # of at most 1M values, as in real logs (pipelines/generate.py).
    teacher: Literal["head", "long_tail"] = "head"
    gzip: bool = False  # write .tsv.gz


class ModelConfig(_Strict):
    """DeepFM's shape: the shared embeddings, the FM and the MLP (deepfm/model.py)."""

    embedding_dim: Annotated[int, Field(ge=1)] = 16  # k in the paper: each field value's vector, shared by FM and MLP
    hidden: list[Annotated[int, Field(ge=1)]] = [400, 400, 400]  # the MLP's layer widths
    activation: Literal["relu", "gelu", "tanh", "silu"] = "relu"
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    batch_norm: bool = False
    use_fm: bool = True  # the factorization machine's logit (first order + pairwise)
    use_deep: bool = True  # the MLP's logit
    # Sparse embedding gradients (lazy Adam on the tables, deepfm/training/optim.py): an update touches only
    # the rows in the batch instead of every row of a million-row table.
    sparse_embeddings: bool = True
    # The MLP also reads each categorical value's training frequency (deepfm/model.py).
    count_features: bool = False
    # > 0: frequency-based embedding sizes, a value's dimensions ceil(D (count / field's top count)^a).
    mixed_dim_exponent: Annotated[float, Field(ge=0, le=1)] = 0.0

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if not (self.use_fm or self.use_deep):
            raise ValueError("at least one of use_fm and use_deep must be true")
        return self


class TrainConfig(_Strict):
    """Training a model version from a preprocess output (deepfm/training/train.py, deepfm/training/launch.py)."""

    data: PathStr  # a preprocess output directory (manifest.json, train/, valid/, test/)
    output: PathStr  # the model directory
    model: ModelConfig = ModelConfig()
    reader: Literal["native", "petastorm", "memory"] = "native"  # native: pyarrow streaming; memory: all rows in RAM
    backend: Literal["none", "horovod", "torch"] = "none"  # data-parallel training: Horovod or torch.distributed (DDP)
    launcher: Literal["local", "spark"] = "local"  # local processes, or Spark barrier tasks
    workers: Annotated[int, Field(ge=1)] = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when visible
    # bf16: the MLP's matrix products in bfloat16 (fp32 weights, tables, FM and loss), recorded in
    # the model so scoring computes the same way; refused where the hardware lacks bf16 units.
    precision: Literal["fp32", "bf16"] = "fp32"
    epochs: Annotated[int, Field(ge=1)] = 10  # at most (early stopping)
    batch_size: Annotated[int, Field(ge=1)] = 4096  # per worker
    # The defaults below were chosen on two synthetic teachers and the Criteo sample together (docs/training.md,
    # "Default training settings"); none of them needs tuning per data set.
    lr: Annotated[float, Field(gt=0)] = 3e-4
    # The embedding tables' own learning rate (default: 10x lr). Adam moves a parameter at most about
    # lr per step, and a value's row steps only when the value occurs: rows need a larger one.
    embedding_lr: Annotated[float, Field(gt=0)] | None = None
    # A Gaussian prior on every embedding row, in units of training rows: the objective is
    # sum over rows of logloss + embedding_l2 * sum over values of ||row||^2 (deepfm/training/regularization.py).
    # Being in rows, it needs no scaling with data size: evidence grows with the rows, the prior not.
    embedding_l2: Annotated[float, Field(ge=0)] = 0.2
    # The prior of a value seen in c of N training rows is embedding_l2 * (N / c)^exponent: 0 holds
    # every value alike; 0.5 holds one seen 100x less often 10x tighter.
    embedding_l2_rarity_exponent: Annotated[float, Field(ge=0)] = 0.75
    # Evaluate, keep and ship an exponential moving average of the weights, updated after every
    # step (0: off, the raw weights). Adam's last steps leave noise in every row; averaging over
    # about 1 / (1 - ema_decay) steps removes it. auto: over the last half epoch of steps (off
    # below 8 steps per epoch), so the horizon follows the data size and batch; the value used is
    # in metrics.json (`regularization`).
    ema_decay: Annotated[float, Field(ge=0, lt=1)] | Literal["auto"] = "auto"
    lr_decay: Annotated[float, Field(gt=0, le=1)] = 0.5  # on a validation-AUC plateau
    lr_patience: Annotated[int, Field(ge=0)] = 0  # epochs without a better validation AUC before lr_decay
    early_stopping_patience: Annotated[int, Field(ge=0)] = 2  # epochs without a better validation AUC before stopping
    checkpoint_every_steps: Annotated[int, Field(ge=0)] = 0  # 0: at epoch ends only
    shuffle_buffer_rows: Annotated[int, Field(ge=0)] = 262_144  # rows shuffled together while streaming
    eval_batch_size: Annotated[int, Field(ge=1)] = 65_536
    seed: int = 42
    threads: Annotated[int, Field(ge=0)] = 0  # torch intra-op threads per worker; 0 = cores / workers

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.workers > 1 and self.backend == "none":
            raise ValueError("workers > 1 needs backend 'horovod' or 'torch'")
        if self.reader == "petastorm" and _URI.match(self.data) and not self.data.startswith(("file:", "hdfs:")):
            # Petastorm opens remote stores through s3fs/gcsfs (fsspec), which this stack does not
            # carry; the native reader reaches them through pyarrow.fs.
            raise ValueError(f"reader 'petastorm' reads local and hdfs:// data only; use reader 'native' for "
                             f"{self.data}")
        return self


class ScoreConfig(_Strict):
    """Batch scoring: new logs in, probabilities out, with exactly the training transforms."""

    model: PathStr  # a model directory written by the train stage
    output: PathStr  # predictions land in output/run_date=YYYY-MM-DD/
    # What to score (at most one; default: the data set's input table):
    input_path: PathStr | None = None  # raw logs laid out like the data set's input, at another path
    input: TableSpec | None = None  # raw logs with their own layout (say, without the label column)
    preprocessed: PathStr | None = None  # already-encoded Parquet, such as a preprocess split directory
    # Columns copied to the output; default: the data set's row key (its id columns, clicks'
    # impression key, split.key), its passthrough columns and the label.
    keep: list[str] | None = None
    batch_rows: Annotated[int, Field(ge=1)] = 16_384  # rows per Arrow batch handed to the model
    threads: Annotated[int, Field(ge=1)] = 1  # torch threads per Python worker (Spark runs one per core)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_reject_rate: Annotated[float, Field(ge=0, le=1)] = 0.01
    # How raw logs become model inputs: `arrow` encodes each batch in the Python worker that scores
    # it (deepfm/features/encode.py, the vocabulary shipped once per worker); `spark` in Spark SQL, one
    # vocabulary join per field. Vocabularies over preprocess.vocab.broadcast_max_entries use `spark`.
    encode: Literal["arrow", "spark"] = "arrow"
    # How raw text logs are split and validated: `arrow` in the Python workers (deepfm/features/parse.py);
    # with encode arrow and no side tables, in the very workers that score them, which receive one
    # string per line. `spark` in Spark SQL (pipelines/read.py). Both reject the same rows for the
    # same reasons. Tables with timestamp columns, and Parquet input, are parsed by Spark.
    parse: Literal["arrow", "spark"] = "arrow"

    @model_validator(mode="after")
    def _check(self) -> ScoreConfig:
        given = [k for k in ("input_path", "input", "preprocessed") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of input_path, input and preprocessed, got {given}")
        return self


class EvaluateConfig(_Strict):
    """The evaluation report: from predictions with labels, or from a model and a labelled split."""

    output: PathStr  # the report directory
    predictions: PathStr | None = None  # Parquet with `probability` and the label (a score output)
    model: PathStr | None = None  # a model directory: its training curves go into the report
    data: PathStr | None = None  # a labelled preprocessed split, scored with `model` when no predictions
    label: str | None = None  # default: the model's label column, else "label"
    slice: str | None = None  # a column to break the metrics down by
    max_slices: Annotated[int, Field(ge=1)] = 20  # the most frequent values; the rest become "(other)"
    calibration_bins: Annotated[int, Field(ge=2)] = 10

    @model_validator(mode="after")
    def _check(self) -> EvaluateConfig:
        if (self.predictions is None) == (self.data is None):
            raise ValueError("give either predictions, or data (with model)")
        if self.data is not None and self.model is None:
            raise ValueError("data needs model: the split is scored with it")
        return self


class SparkConfig(_Strict):
    """The Spark session of a stage; under spark-submit its flags win over these."""

    master: str = "local[2]"  # used when not launched by spark-submit
    app_name: str = "deepfm"  # applications are named <app_name>-<stage>[-<run date>]
    # How long a stage waits for a standalone master that refuses connections (one restarting)
    # before it fails as transient (exit 1, for the scheduler's retry).
    master_wait_s: Annotated[float, Field(ge=0)] = 60
    # How long a stage's first tasks wait for executors on a cluster (one without free cores or
    # memory for them: Spark would wait forever) before it fails as transient (exit 1).
    executor_wait_s: Annotated[float, Field(gt=0)] = 300
    conf: dict[str, str | int | float | bool] = {}  # any Spark property, e.g. spark.sql.shuffle.partitions


class SearchRange(_Strict):
    """One dimension of a tuning search: a range (`low`, `high`; log-uniform with `log`; whole
    numbers with `integer`) or a list of `choices`."""

    low: float | None = None
    high: float | None = None
    log: bool = False  # sample log-uniformly
    integer: bool = False  # whole numbers
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> SearchRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low and high, not both")
            if not self.choices:
                raise ValueError("choices is empty")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError("give low < high, or choices")
        elif self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    def candidates(self) -> list[Any]:
        """The values that bound the range (or every choice): each must make a valid train config."""
        if self.choices is not None:
            return list(self.choices)
        return [int(self.low), int(self.high)] if self.integer else [self.low, self.high]


# Keys a search may not set: they say where and how to run, not what to learn.
_NOT_SEARCHED = ("data", "output", "backend", "workers", "launcher", "device", "reader", "threads")


class TuneConfig(_Strict):
    """A hyperparameter search on validation AUC (pipelines/tune.py): `space` maps `train.` keys
    to ranges; every trial trains one process in one Spark task on the same shards."""

    output: PathStr  # trials.csv, best.yaml (usable with --conf), study.journal (the study, resumable)
    space: dict[str, SearchRange]
    trials: Annotated[int, Field(ge=1)] = 20  # in all, counting those of earlier runs of this output
    parallel: Annotated[int, Field(ge=1)] = 2  # trials at once
    epochs: Annotated[int, Field(ge=1)] | None = None  # per trial, at most; default train.epochs
    # Stop a trial whose validation AUC after an epoch is below the median of the finished trials'
    # at that epoch (Optuna's MedianPruner), once `prune_after_trials` have finished.
    prune: bool = True
    prune_after_trials: Annotated[int, Field(ge=1)] = 4
    seed: int = 42
    # An Optuna storage URL every executor reaches (sqlite:///, postgresql://); default: a journal
    # file in `output`, which must then be a path the driver and the executors share.
    storage: str | None = None

    @field_validator("space")
    @classmethod
    def _keys(cls, space: dict[str, SearchRange]) -> dict[str, SearchRange]:
        if not space:
            raise ValueError("the search space is empty: give at least one train.* key")
        for key in space:
            path = key.split(".")
            if path[0] != "train" or len(path) < 2 or not _is_field(TrainConfig, path[1:]):
                raise ValueError(f"{key!r} is not a train.* setting (e.g. train.lr, train.model.embedding_dim)")
            if path[1] in _NOT_SEARCHED:
                raise ValueError(f"{key!r} says where and how to train, not what: it cannot be searched")
        return space

    @model_validator(mode="after")
    def _storage(self) -> TuneConfig:
        if self.storage is None and _URI.match(self.output) and not self.output.startswith("file:"):
            raise SettingError(("output",), f"{self.output} is not a local path: set tune.storage to a "
                                            "database URL that the driver and every executor reach")
        return self


class SettingError(ValueError):
    """A model validator's complaint about one key (`loc`, below the model's own place), so that the
    error names that key and the file that set it, as a field's own error would."""

    def __init__(self, loc: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def _is_field(model: type[BaseModel], path: list[str]) -> bool:
    field = model.model_fields.get(path[0])
    if field is None:
        return False
    if len(path) == 1:
        return True
    nested = field.annotation
    return isinstance(nested, type) and issubclass(nested, BaseModel) and _is_field(nested, path[1:])


def with_settings(plain: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """A copy of a config dict with each dotted key of `settings` (below its section) set."""
    out = json.loads(json.dumps(plain))
    for key, value in settings.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


class TrackingConfig(_Strict):
    """MLflow experiment tracking (deepfm/tracking/runs.py): one run per trained model version."""

    enabled: bool = True
    # A tracking server (http(s)://), a database (sqlite:///, postgresql://...), `databricks`, or a
    # directory, which holds an SQLite store (mlflow.db) and the artifacts (a local database keeps
    # them beside it; a server decides for itself). Unset: MLFLOW_TRACKING_URI
    # when the environment sets it, else the directory ./mlruns.
    uri: str | None = None
    experiment: str = "deepfm"
    log_model: bool = True  # the pyfunc model that scores raw feature rows
    # A tracking server that does not answer: each HTTP request is retried this many times and
    # waits this long for an answer. MLflow's own defaults (7 retries with doubling waits, 120 s)
    # held a job 4 minutes before its warning. MLFLOW_HTTP_REQUEST_MAX_RETRIES and
    # MLFLOW_HTTP_REQUEST_TIMEOUT in the environment win, as MLflow documents them.
    http_retries: Annotated[int, Field(ge=0, le=10)] = 2
    http_timeout_s: Annotated[int, Field(gt=0)] = 30  # seconds a request waits for the server's answer

    def destination(self) -> tuple[str, str | None]:
        """(tracking URI, artifact root of a new experiment: beside a directory store, else the server's)."""
        where = self.uri or os.environ.get("MLFLOW_TRACKING_URI") or "mlruns"
        if where.startswith("sqlite:///"):  # a local database keeps its artifacts beside it
            return where, Path(where.removeprefix("sqlite:///")).parent.joinpath("artifacts").as_uri()
        if _URI.match(where) and not where.startswith("file:"):
            return where, None
        # MLflow's own file store is deprecated (it refuses to start by default): a directory holds
        # an SQLite store instead, which the MLflow UI and client read alike.
        store = absolute_path(where.removeprefix("file://").removeprefix("file:"))
        return f"sqlite:///{store}/mlflow.db", Path(store, "artifacts").as_uri()


class Config(_Strict):
    spark: SparkConfig = SparkConfig()
    tracking: TrackingConfig = TrackingConfig()
    dataset: DatasetConfig | None = None
    preprocess: PreprocessConfig | None = None
    generate: GenerateConfig | None = None
    train: TrainConfig | None = None
    score: ScoreConfig | None = None
    evaluate: EvaluateConfig | None = None
    tune: TuneConfig | None = None

    @model_validator(mode="after")
    def _search_space_fits_train(self) -> Config:
        """Every bound and choice of tune.space makes a valid train config, checked before any trial."""
        if self.tune is None or self.train is None:
            return self
        plain = self.train.model_dump(mode="json")
        for key, dimension in self.tune.space.items():
            for value in dimension.candidates():
                try:
                    TrainConfig.model_validate(with_settings(plain, {key.removeprefix("train."): value}))
                except ValidationError as err:
                    problem = err.errors()[0]
                    raise SettingError(("tune", "space", key), f"the value {value!r} is not a valid {key} "
                                                               f"({problem['msg']})") from None
        return self

    def require(self, section: str) -> Any:
        value = getattr(self, section)
        if value is None:
            raise ConfigError(f"missing section '{section}': add it to one of the --conf files")
        return value


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def packaged_conf_dir() -> Path:
    """The default configuration: $DEEPFM_CONF_DIR when set, else the YAML shipped in this package."""
    override = os.environ.get("DEEPFM_CONF_DIR")
    return Path(override) if override else Path(str(importlib.resources.files("deepfm") / "conf"))


def find_conf(name: str | Path) -> Path:
    """A --conf argument: a file, else the packaged configuration of that name (`datasets/obd.yaml`,
    or `conf/datasets/obd.yaml` as the docs write it), so the commands work from any directory."""
    path = Path(name)
    if path.is_file():
        return path
    packaged = packaged_conf_dir()
    if not path.is_absolute():
        relative = Path(*path.parts[1:]) if path.parts[:1] == ("conf",) and len(path.parts) > 1 else path
        if (packaged / relative).is_file():
            return packaged / relative
    shipped = sorted(str(p.relative_to(packaged)) for p in packaged.rglob("*.yaml"))
    raise ConfigError(f"config file not found: {name} (not a file, nor one of the packaged configurations "
                      f"in {packaged}: {', '.join(shipped)})")


RUN_DATE = "{run_date}"


def load_config(paths: Sequence[str | Path], overrides: Iterable[str] = (), run_date: str | None = None) -> Config:
    """Layer YAML files and `key.path=value` overrides, put the run date in for `{run_date}`, then validate.

    Raises:
        ConfigError: naming the key and the file (or override) that set it.
    """
    merged: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}
    for name in paths:
        path = find_conf(name)
        _merge(merged, _read_yaml(path), (), origin, str(path))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key.path=value, got {item!r}")
        try:
            value = yaml.load(raw, _UniqueKeyLoader) if raw else ""  # noqa: S506 - a SafeLoader
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item}: the value is not valid YAML ({_first_line(err)})") from err
        nested: dict[str, Any] = value
        for part in reversed(_key_path(key)):
            nested = {part: nested}
        _merge(merged, nested, (), origin, f"--set {item}")
    _fill_run_date(merged, run_date, (), origin)
    try:
        return Config.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_describe(err, origin)) from err


def _fill_run_date(node: Any, run_date: str | None, path: tuple[str, ...],
                   origin: dict[tuple[str, ...], str]) -> Any:
    """Replace `{run_date}` in every string value (dated layouts: `out/scores/run_date={run_date}`)."""
    if isinstance(node, dict):
        for key, value in node.items():
            node[key] = _fill_run_date(value, run_date, (*path, str(key)), origin)
    elif isinstance(node, list):
        return [_fill_run_date(v, run_date, path, origin) for v in node]
    elif isinstance(node, str) and RUN_DATE in node:
        if run_date is None:
            source = _source_of(path, origin)
            raise ConfigError(f"{'.'.join(path)}{f' (set in {source})' if source else ''} uses {RUN_DATE}: "
                              "pass --run-date YYYY-MM-DD")
        return node.replace(RUN_DATE, run_date)
    return node


def parse_run_date(text: str) -> str:
    """A run date (an Airflow logical date, `{{ ds }}`): YYYY-MM-DD, a real calendar day."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError
        dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--run-date must be a date as YYYY-MM-DD, got {text!r}") from None
    return text


# Mappings whose own keys contain dots (Spark properties): `--set spark.conf.spark.x.y=1`.
_DOTTED_KEY_MAPPINGS = (("spark", "conf"),)


def _key_path(key: str) -> list[str]:
    parts = key.split(".")
    for prefix in _DOTTED_KEY_MAPPINGS:
        if tuple(parts[: len(prefix)]) == prefix and len(parts) > len(prefix):
            return [*prefix, ".".join(parts[len(prefix):])]
    return parts


def config_hash(section: BaseModel) -> str:
    """A stable fingerprint of a config section (sorted-key JSON, sha256)."""
    blob = json.dumps(section.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _first_line(err: Exception) -> str:
    return " ".join(str(err).split())


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that sets one key twice: PyYAML keeps the last
    silently, so the first setting a person reads in the file would not be the one in force."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise ConfigError(f"{key_node.start_mark.name}: the key '{key}' is set twice in one mapping, on "
                                  f"lines {first_line[key]} and {line}: keep one")
            first_line[key] = line
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as text:  # a stream, so that a mark names the file
            data = yaml.load(text, _UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save the file as UTF-8") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_first_line(err)}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def _merge(
    into: dict[str, Any],
    new: dict[str, Any],
    prefix: tuple[str, ...],
    origin: dict[tuple[str, ...], str],
    source: str,
) -> None:
    """Deep-merge mappings; lists and scalars replace. Records which source set each key."""
    for key, value in new.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, path, origin, source)
        else:
            into[key] = value
            origin[path] = source
            for stale in [p for p in origin if p[: len(path)] == path and p != path]:
                del origin[stale]
        origin.setdefault(path, source)


def _describe(err: ValidationError, origin: dict[tuple[str, ...], str]) -> str:
    lines = []
    for item in err.errors():
        loc = tuple(str(p) for p in item["loc"] if not str(p).startswith("function-after"))
        raised = (item.get("ctx") or {}).get("error")
        if isinstance(raised, SettingError):
            loc = (*loc, *raised.loc)
        key = ".".join(loc) or "(top level)"
        source = _source_of(loc, origin)
        where = f" (set in {source})" if source else ""
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            nearest = _nearest_key(loc)
            msg = (f"unknown key; did you mean '{nearest}'?" if nearest else
                   "unknown key; check the spelling against the configuration reference, docs/configuration.md")
        lines.append(f"{key}{where}: {msg}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _nearest_key(loc: tuple[str, ...]) -> str | None:
    """The valid key beside an unknown one (`loc`) that is spelled most like it, as a full key path."""
    model: Any = Config
    keyed = False  # the next part of loc is a mapping's key or a list's index, not a field
    for part in loc[:-1]:
        if keyed:
            keyed = False
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        model, keyed = _model_within(field.annotation)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    nearest = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.6)
    return ".".join((*loc[:-1], nearest[0])) if nearest else None


def _model_within(annotation: Any) -> tuple[Any, bool]:
    """The config model an annotation holds (in an Optional, a list or a dict's values), and whether
    it is held in a list or dict."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    container = typing.get_origin(annotation) in (list, dict)
    for argument in typing.get_args(annotation):
        model, keyed = _model_within(argument)
        if model is not None:
            return model, keyed or container
    return None, False


def _source_of(loc: tuple[str, ...], origin: dict[tuple[str, ...], str]) -> str | None:
    # List indices are not tracked; walk up to the nearest key that a file set.
    for end in range(len(loc), 0, -1):
        if loc[:end] in origin:
            return origin[loc[:end]]
    sources = sorted({src for path, src in origin.items() if path[: len(loc)] == loc})
    return ", ".join(sources) or None
