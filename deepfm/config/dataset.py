"""The data set: its tables and columns, the click and side-table joins, the split."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

from deepfm.config.base import PathStr, _Strict
from deepfm.features.transforms import TransformName, transform


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
