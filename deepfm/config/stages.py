"""The stages' sections: preprocess, generate, train (and its model), score, evaluate, spark, tune, tracking."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from deepfm.config.base import _URI, PathStr, SettingError, _is_field, _Strict, absolute_path, parse_size
from deepfm.config.dataset import TableSpec
from deepfm.features.transforms import TransformName
from deepfm.stack import why_not_petastorm


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
    # A model (its root: the version serving; or a version) whose vocabulary's values are kept when
    # seen at all, below min_count: a value the model learned over earlier days keeps its row under
    # warm start (train.warm_start) instead of falling into OOV on a day it is rare. None yet: no effect.
    keep_values_of: PathStr | None = None


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
    # The job fails when more than this fraction of input rows is rejected.
    max_reject_rate: Annotated[float, Field(ge=0, le=1)] = 0.01


class DriftConfig(_Strict):
    """How a dated stream (`generate.days`) changes from one day to the next (pipelines/drift.py)."""

    # Each day this share of every categorical field's values is replaced by values never seen
    # before (about as much of its traffic); the values replaced fade out for good.
    new_value_share: Annotated[float, Field(ge=0, lt=1)] = 0.03
    # Each day every value's log-rank takes a normal step of this size: popularity reshuffles along
    # the long tail (a value of rank ~1,000 moves by tens of ranks) while the head keeps its order.
    popularity_shift: Annotated[float, Field(ge=0)] = 0.05
    # Each value's effect on the click rotates by this angle (radians) a day: the correlation of its
    # effects a day apart is cos(angle), a week apart cos(7 angle).
    effect_drift: Annotated[float, Field(ge=0)] = 0.05
    # A broken day to plant (its YYYY-MM-DD), as upstream faults make them: `shuffled_labels`, the
    # labels permuted among the day's rows; `empty_field`, `broken_field` missing in every row.
    broken_day: str | None = None
    broken: Literal["shuffled_labels", "empty_field"] = "shuffled_labels"  # what is wrong with the broken day
    broken_field: str = "C3"  # the field `empty_field` empties (I1-I13, C1-C26)

    @field_validator("broken_day")
    @classmethod
    def _is_date(cls, value: str | None) -> str | None:
        if value is not None:
            dt.date.fromisoformat(value)
        return value


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
    # of at most 1M values, as in real logs; `field_pairs`, `heavy_tail`, `numeric_cross` and
    # `triples`, the long-tail teacher with one more structure each (pipelines/generate.py).
    teacher: Literal["head", "long_tail", "field_pairs", "heavy_tail", "numeric_cross", "triples"] = "head"
    gzip: bool = False  # write .tsv.gz
    # A dated stream: `days` partitions output/dt=YYYY-MM-DD/ from start_date on, `rows` rows each,
    # whose values and effects drift from day to day as `drift` says (pipelines/drift.py).
    days: Annotated[int, Field(ge=1)] | None = None
    start_date: str = "2026-11-01"  # the stream's first day, YYYY-MM-DD
    drift: DriftConfig = DriftConfig()

    @model_validator(mode="after")
    def _check(self) -> GenerateConfig:
        try:
            first = dt.date.fromisoformat(self.start_date)
        except ValueError:
            raise SettingError(("start_date",), f"not a date as YYYY-MM-DD: {self.start_date!r}") from None
        if self.days is not None and self.mode != "criteo":
            raise SettingError(("days",), "a dated stream is written in mode criteo only")
        if self.days is not None and self.teacher not in ("head", "long_tail"):
            raise SettingError(("teacher",), "a dated stream drifts the head and long_tail teachers only")
        broken = self.drift.broken_day
        if broken is not None:
            if self.days is None:
                raise SettingError(("drift", "broken_day"), "a broken day needs a dated stream: set generate.days")
            last = first + dt.timedelta(days=self.days - 1)
            if not first <= dt.date.fromisoformat(broken) <= last:
                raise SettingError(("drift", "broken_day"), f"{broken} is not one of the stream's days "
                                                            f"({first} .. {last})")
        if self.drift.broken == "empty_field" and self.drift.broken_field not in _GENERATED_FIELDS:
            raise SettingError(("drift", "broken_field"), f"{self.drift.broken_field!r} is not a generated field "
                                                          "(I1-I13, C1-C26)")
        return self

    def day_names(self) -> list[str]:
        """The stream's dates, oldest first."""
        first = dt.date.fromisoformat(self.start_date)
        return [(first + dt.timedelta(days=d)).isoformat() for d in range(self.days or 0)]


_GENERATED_FIELDS = {*(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))}


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
    # The FM's pairwise term weighs each pair of fields by a learned scalar (FwFM, Pan et al. 2018),
    # starting at 1 (the plain FM): the embeddings stay shared with the MLP.
    field_pair_weights: bool = False

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
    # The embedding tables' own learning rate (default: 10x lr; 0.03 with rowwise_adagrad). Adam moves
    # a parameter at most about lr per step, and a value's row steps only when the value occurs: rows
    # need a larger one.
    embedding_lr: Annotated[float, Field(gt=0)] | None = None
    # The tables' optimizer (deepfm/training/optim.py): rowwise_adagrad, one float of state a row
    # (it learned every teacher of the synthetic family better than Adam, and holds 2.8x the rows);
    # adam, lazy Adam (two vectors of state a row).
    embedding_optimizer: Literal["adam", "rowwise_adagrad"] = "rowwise_adagrad"
    # Where the tables live (deepfm/training/sharding.py): replicated, whole on every worker; sharded,
    # each of the train.workers workers holds and updates 1/workers of the rows (backend torch).
    embeddings: Literal["replicated", "sharded"] = "replicated"
    # How the tables are kept: fp32, or bf16 (half the bytes; they compute in fp32 and are updated
    # with stochastic rounding). bf16 needs embedding_optimizer rowwise_adagrad (Adam's two fp32
    # vectors a row would outweigh the saving) and leaves the moving average off (ema_decay auto).
    table_precision: Literal["fp32", "bf16"] = "fp32"
    # The memory of one training worker, as Spark writes sizes (8g, 512m), against which the
    # embedding tables are checked before training starts (deepfm/training/memory.py). Default: the
    # memory free on this machine shared by train.workers (launcher local); no check on Spark.
    worker_memory: str | None = None
    # A Gaussian prior on every embedding row, in units of training rows: the objective is
    # sum over rows of logloss + embedding_l2 * sum over values of ||row||^2 (deepfm/training/regularization.py).
    # Being in rows, it needs no scaling with data size: evidence grows with the rows, the prior not.
    # 0.1 learned every teacher of the synthetic family better than 0.2 (bench/RESULTS.md, issue 26).
    embedding_l2: Annotated[float, Field(ge=0)] = 0.1
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
    # Initialise from an earlier model version, each embedding row from the row of the same token
    # (deepfm/training/warm_start.py): `latest`, the newest version of train.output before this
    # one (none yet: from scratch); a version's directory; or `none`, from scratch.
    warm_start: str = "none"
    # Where a warm-started row's prior (embedding_l2) pulls it: `earlier`, towards the row taken over
    # (yesterday's estimate is today's prior); `zero`, as for a model trained from scratch.
    warm_start_prior: Literal["earlier", "zero"] = "earlier"
    # The share of its earlier row-wise Adagrad sum that a taken-over row starts with (tables trained
    # with rowwise_adagrad): 1, its steps stay as small as they had become; 0, as large as a new
    # row's. In between the earlier days count for less than today's, so rows keep adapting; 0.25
    # did best on the drifting stream (bench/RESULTS.md, issue 25).
    warm_start_accumulator: Annotated[float, Field(ge=0, le=1)] = 0.25

    @field_validator("worker_memory")
    @classmethod
    def _worker_memory(cls, value: str | None) -> str | None:
        if value is not None:
            parse_size(value)
        return value

    @field_validator("warm_start")
    @classmethod
    def _warm_start(cls, value: str) -> str:
        return value if value in ("none", "latest") else absolute_path(value)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.workers > 1 and self.backend == "none":
            raise ValueError("workers > 1 needs backend 'horovod' or 'torch'")
        if self.table_precision == "bf16":
            if self.embedding_optimizer != "rowwise_adagrad":
                raise ValueError("table_precision 'bf16' needs embedding_optimizer 'rowwise_adagrad' (Adam's fp32 "
                                 "state would outweigh what bf16 saves)")
            if self.backend == "horovod":
                raise ValueError("table_precision 'bf16' needs backend 'torch' or 'none'")
            if self.ema_decay not in ("auto", 0, 0.0):
                raise ValueError("table_precision 'bf16' keeps no moving average (each step's share would round "
                                 "away): set ema_decay to auto or 0")
        if self.embeddings == "sharded":
            if self.backend != "torch":
                raise ValueError("embeddings 'sharded' needs backend 'torch' (Horovod keeps tables replicated)")
            if self.model.mixed_dim_exponent > 0:
                raise ValueError("embeddings 'sharded' does not take model.mixed_dim_exponent > 0 yet; set it to 0")
        if self.reader == "petastorm" and _URI.match(self.data) and not self.data.startswith(("file:", "hdfs:")):
            # Petastorm opens remote stores through s3fs/gcsfs (fsspec), which this stack does not
            # carry; the native reader reaches them through pyarrow.fs.
            raise ValueError(f"reader 'petastorm' reads local and hdfs:// data only; use reader 'native' for "
                             f"{self.data}")
        if self.reader == "petastorm" and (why := why_not_petastorm()) is not None:
            raise ValueError(f"train.reader 'petastorm': {why}; use train.reader 'native' (the default)")
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
    # How executors get the weights: "broadcast" (each Python worker holds the whole model), or
    # "mapped" (each executor memory-maps the weight files and reads only the rows it looks up: for a
    # model bigger than an executor's memory). "auto": mapped above broadcast_max_mb of weights.
    tables: Literal["auto", "broadcast", "mapped"] = "auto"
    broadcast_max_mb: Annotated[int, Field(ge=0)] = 1024

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
_NOT_SEARCHED = ("data", "output", "backend", "workers", "launcher", "device", "reader", "threads", "warm_start")


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
