"""Reading raw tables into typed columns, with every malformed row kept and explained.

`read_table` never drops a row: it returns each configured column parsed to its type plus three
bookkeeping columns. `_reason` is null for a good row and says what is wrong otherwise; `_raw`
holds the original line (or the row as JSON for Parquet input) for rejected rows; `_source` names
the file the row came from.
"""

from __future__ import annotations

import gzip
import logging
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from deepfm.config import Column, TableSpec
from deepfm.features.parse import FLOAT_PATTERN, INT_PATTERN, QUOTED_CHARACTERS, LineParser, ParsedColumn, ParseLines
from deepfm.storage.hadoop import HadoopFiles
from deepfm.storage.location import Location
from pipelines.spark import try_cast, utf8_with_replacements

REASON, RAW, RAW_BYTES, SOURCE = "_reason", "_raw", "_raw_bytes", "_source"
BOOKKEEPING = (REASON, RAW, RAW_BYTES, SOURCE)
BAD_UTF8 = "_bad_utf8"
log = logging.getLogger(__name__)
# The names deepfm/features/parse.py is given, in its order, and the types of the bookkeeping columns.
ARROW_BOOKKEEPING = (REASON, RAW, RAW_BYTES, SOURCE, BAD_UTF8)
BOOKKEEPING_FIELDS = (T.StructField(REASON, T.StringType()), T.StructField(RAW, T.StringType()),
                      T.StructField(RAW_BYTES, T.BinaryType()), T.StructField(SOURCE, T.StringType()))


class InputError(ValueError):
    """The input itself is unusable (missing, empty, wrong header): nothing to quarantine."""


def read_table(spark: SparkSession, spec: TableSpec, table: str = "input", parse: str = "arrow") -> DataFrame:
    """Parse a table described by config.

    Args:
        table: a name used in error messages ("input", "clicks", a side table's name).
        parse: `arrow` splits and validates text lines in the Python workers (deepfm/features/parse.py),
            where the table allows it (`arrow_parses`); `spark` in Spark SQL. The same rows and reasons.

    Raises:
        InputError: the path has no files, or a header lacks a configured column.
    """
    if parse == "arrow" and arrow_parses(spec):
        lines, header, positions = raw_lines(spark, spec, table)
        return lines.mapInArrow(ParseLines(line_parser(spec, header, positions), ARROW_BOOKKEEPING),
                                T.StructType([*(T.StructField(c.name, spark_type(c)) for c in spec.resolved_columns),
                                              *BOOKKEEPING_FIELDS]))
    if spec.format == "parquet":
        pattern, files = _listed_input(spark, spec.path, table)
        with unreadable_files_named(spark, spec.path):
            frame = spark.read.parquet(pattern)
        _check_every_file_is_read(frame, files, spec.path, table)
        tokens, lines = _parquet_tokens(frame, spec, table)
        structural = None
    else:
        tokens, lines, structural = _text_tokens(spark, spec, table)
    columns = spec.resolved_columns
    problems = [_field_problem(col, tokens[col.name]) for col in columns]
    reason = F.coalesce(*([structural] if structural is not None else []), *problems)
    typed = [_parse(col, tokens[col.name]).alias(col.name) for col in columns]
    return lines.select(
        *typed,
        reason.alias(REASON),
        F.when(reason.isNotNull(), F.col(RAW)).alias(RAW),
        F.when(reason.isNotNull(), F.col(RAW_BYTES)).alias(RAW_BYTES),
        F.col(SOURCE),
    )


def arrow_parses(spec: TableSpec) -> bool:
    """Text tables without timestamp columns: Spark's date patterns have no Arrow equivalent."""
    return spec.format != "parquet" and all(c.parse_type != "timestamp" for c in spec.resolved_columns)


def line_parser(spec: TableSpec, header: list[str], positions: dict[str, int]) -> LineParser:
    return LineParser(tuple(ParsedColumn(c.name, positions[c.name], c.parse_type, c.role == "label")
                            for c in spec.resolved_columns), len(header), spec.field_delimiter)


def spark_type(column: Column) -> T.DataType:
    """What `read_table` types a column as."""
    return _SPARK_TYPES[column.parse_type]


_SPARK_TYPES = {"int": T.LongType(), "float": T.DoubleType(), "string": T.StringType(), "timestamp": T.TimestampType()}


def accepted(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col(REASON).isNull()).drop(*BOOKKEEPING)


def rejected(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col(REASON).isNotNull()).select(REASON, RAW, RAW_BYTES, SOURCE)


@contextmanager
def unreadable_files_named(spark: SparkSession, path: str) -> Iterator[None]:
    """Turn a Spark job that died reading a file of the input at `path` into one line naming the
    file and what is wrong with it: exit 2 for what only the user can mend (a corrupt or truncated
    file, a codec this Hadoop lacks, a type that differs between files, no permission), exit 1 with
    the file named for anything else (a store that timed out may answer on a retry).

    Spark's own error is a Java stack of hundreds of lines whose first names neither file nor
    cause; the file and the cause are in its text, except for a missing codec and a gzip stream
    cut short, where the input's files are looked at once to find the one.
    """
    try:
        yield
    except Exception as err:
        from_spark = type(err).__module__.split(".")[0] in ("py4j", "pyspark")
        explained = _unreadable_file(spark, path, str(err)) if from_spark else None
        if explained is None:
            raise
        raise explained from None


# Spark 3.5 and Spark 4 word these apart; each pattern below has a group per fact it names.
_FAILED_FILE = re.compile(r"Encountered error while reading file (\S+?)\.?\s")
_NOT_PARQUET = re.compile(r"(\S+) is not a Parquet file\.? ?([^\n]*)")
_PARQUET_TYPES = re.compile(r"Parquet column cannot be converted in file (\S+?)\. Column: \[([^\]]*)\], "
                            r"Expected: (\S+), Found: ([A-Za-z0-9_]+)")
_PARQUET_TYPES_SPARK4 = re.compile(r"Data type mismatches when reading Parquet column \[([^\]]*)\]\. "
                                   r"Expected Spark type (\S+), actual Parquet type ([A-Za-z0-9_]+)")
# Spark 4's Hadoop reads zstd (zstd-jni); a file that only looks like zstd fails inside it.
_BROKEN_ZSTD = "com.github.luben.zstd."
_NO_CODEC = re.compile(r"native (\w+) library not available")
_CODEC_SUFFIXES = {"zstandard": (".zst", ".zstd"), "snappy": (".snappy",), "lz4": (".lz4",), "bzip2": (".bz2",)}
_BROKEN_GZIP = ("java.io.EOFException", "java.util.zip.ZipException", "Not in GZIP format", "not a gzip file",
                "Unexpected end of input stream")
_DENIED = ("Permission denied", "AccessDeniedException", "AccessControlException")


def _unreadable_file(spark: SparkSession, path: str, text: str) -> Exception | None:
    failed = _FAILED_FILE.search(text)
    file = failed.group(1) if failed else None
    if found := _NOT_PARQUET.search(text):
        return InputError(f"{found.group(1)} is not a Parquet file, or was cut short ({found.group(2).strip()}): "
                          "replace or remove it")
    if mismatch := _parquet_type_mismatch(text, file):
        name, column, expected, actual = mismatch
        return InputError(f"{name}: column '{column}' is {actual} in this file but {expected} in the schema Spark "
                          f"took from the other files of {path}: write every file with one type per column")
    if file and _BROKEN_ZSTD in text:
        causes = re.findall(r"Caused by: [\w.$]+: ([^\n]+)", text)
        cause = causes[-1].strip() if causes else "unreadable"
        return InputError(f"{file} is a truncated or corrupt zstd file ({cause}): replace or remove it")
    if found := _NO_CODEC.search(text):
        codec = found.group(1)
        suffixes = _CODEC_SUFFIXES.get(codec.lower(), (f".{codec.lower()}",))
        named = file or next((f.path for f in HadoopFiles(spark).list_files(path) if f.path.endswith(suffixes)), path)
        return InputError(f"{named} is {codec}-compressed, and this Spark's Hadoop has no native {codec} library "
                          "to read it: decompress it, or compress it with gzip or bzip2")
    if any(marker in text for marker in _DENIED):
        denied = re.search(r"(\S+) \(Permission denied\)", text)  # Java's FileNotFoundException
        named = file or (denied.group(1) if denied else path)
        return PermissionError(f"permission denied: the job may not read {named}; let the user that runs it read "
                               "the file, or remove it from the input")
    if any(marker in text for marker in _BROKEN_GZIP):
        candidates = [file] if file and file.endswith(".gz") else [
            f.path for f in HadoopFiles(spark).list_files(path) if f.path.endswith(".gz")]
        for candidate in candidates:
            if problem := _gzip_problem(Location.of(candidate)):
                return InputError(f"{candidate} is a truncated or corrupt gzip file ({problem}): replace or "
                                  "remove it")
    if file:
        causes = re.findall(r"Caused by: ([^\n]+)", text)
        return OSError(f"{file} could not be read ({causes[-1].strip() if causes else 'see the Spark log'})")
    return None


def _parquet_type_mismatch(text: str, file: str | None) -> tuple[str, str, str, str] | None:
    """(file, column, Spark's type, the file's type) where a Parquet file's column type differs."""
    if found := _PARQUET_TYPES.search(text):
        return found.group(1), found.group(2), found.group(3), found.group(4)
    if file and (found := _PARQUET_TYPES_SPARK4.search(text)):
        return file, found.group(1), found.group(2), found.group(3)
    return None


def check_output_outside_inputs(spark: SparkSession, output: str, key: str, inputs: dict[str, str]) -> None:
    """An output inside an input directory would be read as input by every later run (and the run
    would never be up to date with its input): refused, naming both."""
    storage = HadoopFiles(spark)
    out = storage.qualify(output).rstrip("/")
    for table, path in inputs.items():
        directory = storage.literal_directory(path)
        if out == directory or out.startswith(f"{directory}/"):
            raise InputError(f"{key} {out} is inside the {table} directory {directory}: its files would be read as "
                             f"input by the next run; choose a {key} outside it")


def _gzip_problem(file: Location) -> str | None:
    try:
        with file.open() as raw, gzip.open(raw) as unzipped:
            while unzipped.read(1 << 22):
                pass
    except (EOFError, OSError, zlib.error) as err:
        return str(err)
    return None


def _listed_input(spark: SparkSession, path: str, table: str) -> tuple[str, list[str]]:
    """The glob Spark is to read a table from, and the files it must read there. A table without
    data files is refused; hidden files, which Spark skips, are named in a warning."""
    storage = HadoopFiles(spark)
    files, hidden = storage.listing(path)
    if not files:
        raise InputError(f"{table}: no input files at {path} (check the path in the config)")
    if storage.pattern(path) == path:
        # A glob's {a,b} matches what any of its alternatives matches: a day of a window
        # ({run_date-6d..run_date}) whose logs have not landed would be left out without a word.
        empty = [alternative for alternative in alternatives(path) if not storage.listing(alternative)[0]]
        if empty:
            raise InputError(f"{table}: no input files at {', '.join(empty[:3])}{' ...' if len(empty) > 3 else ''}, "
                             f"{'one' if len(empty) == 1 else len(empty)} of the paths {path} stands for (a window "
                             "reads every one of its days: wait for its logs to land, or shorten the window)")
    if all(f.size == 0 for f in files):
        raise InputError(f"{table}: every input file at {path} is empty")
    if hidden:
        log.warning("%s: %d file(s) under %s are not read, as their names (or their folders') start with '_' or "
                    "'.', which marks files as hidden to Spark: %s%s; rename them to read them", table, len(hidden),
                    path, ", ".join(hidden[:5]), " ..." if len(hidden) > 5 else "")
    return storage.pattern(path), [f.path for f in files]


def alternatives(path: str) -> list[str]:
    """The paths a glob's {a,b} groups stand for, one per combination; the path itself without any."""
    group = re.search(r"\{([^{}]*)\}", path)
    if group is None:
        return [path]
    return [expanded for option in group.group(1).split(",")
            for expanded in alternatives(path[:group.start()] + option + path[group.end():])]


def _check_every_file_is_read(frame: DataFrame, files: list[str], path: str, table: str) -> None:
    """Spark reads the files of a table's directory and of its `key=value` subdirectories only: the
    files of a plain subdirectory would be listed as input (manifest, fingerprint) yet never read."""
    read = {_comparable(f) for f in frame.inputFiles()}
    unread = [f for f in files if _comparable(f) not in read]
    if unread:
        raise InputError(f"{table}: {len(unread)} of the {len(files)} files under {path} are in subdirectories that "
                         f"Spark does not read (only key=value ones, as dt=2026-12-01/, are partitions): "
                         f"{', '.join(unread[:3])}{' ...' if len(unread) > 3 else ''}; point the path at them with a "
                         "glob (such as .../*/), or move them")


def _comparable(uri: str) -> str:
    """Hadoop writes a local file as file:/a/b, Spark's file index as file:///a/b, percent-encoded."""
    uri = unquote(uri)
    return "file:/" + uri.removeprefix("file:").lstrip("/") if uri.startswith("file:") else uri


def raw_lines(spark: SparkSession, spec: TableSpec,
              table: str = "input") -> tuple[DataFrame, list[str], dict[str, int]]:
    """A text table's data lines (RAW, BAD_UTF8, RAW_BYTES, SOURCE), its header, and each configured
    column's field index; the header line itself is dropped."""
    pattern, files = _listed_input(spark, spec.path, table)
    # The text source keeps a line's bytes as they are; Java's decoder replaces invalid UTF-8
    # with U+FFFD, so a line that changes when decoded again was not valid UTF-8. The decoded
    # form is stored as text, so that rejects stay readable by any Parquet reader, and such a
    # line's original bytes beside it, so that nothing of it is lost.
    source = spark.read.text(pattern)
    _check_every_file_is_read(source, files, spec.path, table)
    text = source.select(F.col("value"), utf8_with_replacements(F.col("value")).alias(RAW))
    bad_utf8 = F.col(RAW) != F.col("value")
    lines = text.select(RAW, bad_utf8.alias(BAD_UTF8),
                        F.when(bad_utf8, F.col("value").cast("binary")).alias(RAW_BYTES),
                        F.input_file_name().alias(SOURCE))
    if spec.header:
        header_line = lines.where(F.length(RAW) > 0).first()
        if header_line is None:
            raise InputError(f"{table}: {spec.path} has no header line")
        header = header_line[RAW].split(spec.field_delimiter)
        # Every file repeats the header; it is structure, not data.
        lines = lines.where(F.col(RAW) != header_line[RAW])
    else:
        header = [c.name for c in spec.resolved_columns]
    return lines, header, _column_positions(spec, header, table)


def _text_tokens(spark: SparkSession, spec: TableSpec, table: str):
    lines, header, positions = raw_lines(spark, spec, table)
    delimiter = spec.field_delimiter
    # Split once into a column of its own: referenced by every field, it must not be re-split
    # per reference (Spark keeps the projection apart because `_parts` is used many times).
    lines = lines.withColumn("_parts", F.split(F.col(RAW), re.escape(delimiter), -1))
    parts = F.col("_parts")
    # get(): null past the end of a short line, where [] raises under ANSI (Spark 4's default).
    tokens = {name: F.nullif(F.get(parts, i), F.lit("")) for name, i in positions.items()}
    expected = len(header)
    structural = (
        F.when(F.col(RAW) == "", F.lit("empty line"))
        .when(F.col(BAD_UTF8), F.lit("invalid UTF-8"))
        .when(
            F.size(parts) != expected,
            F.format_string(f"expected {expected} fields, found %d", F.size(parts)),
        )
    )
    return tokens, lines, structural


def _column_positions(spec: TableSpec, header: list[str], table: str) -> dict[str, int]:
    index = {name: i for i, name in enumerate(header)}
    missing = [c.name for c in spec.resolved_columns if c.name not in index]
    if missing:
        raise InputError(
            f"{table}: columns {missing} are configured but not in the header of {spec.path} "
            f"(header has {header[:12]}{'...' if len(header) > 12 else ''})"
        )
    return {c.name: index[c.name] for c in spec.resolved_columns}


def _parquet_tokens(frame: DataFrame, spec: TableSpec, table: str):
    missing = [c.name for c in spec.resolved_columns if c.name not in frame.columns]
    if missing:
        raise InputError(f"{table}: columns {missing} are not in the Parquet schema of {spec.path}")
    lines = frame.select(
        *[F.col(f"`{c}`") for c in frame.columns],
        F.to_json(F.struct(*[F.col(f"`{c}`") for c in frame.columns])).alias(RAW),
        F.lit(None).cast("binary").alias(RAW_BYTES),
        F.input_file_name().alias(SOURCE),
    )
    # Values go through the same string validation as text, so one set of rules covers both.
    tokens = {
        c.name: F.nullif(F.col(f"`{c.name}`").cast("string"), F.lit("")) for c in spec.resolved_columns
    }
    return tokens, lines


def _field_problem(col: Column, token: SparkColumn) -> SparkColumn:
    """A reason string when the token does not parse as the column's type, else null."""
    kind = col.parse_type
    quoted = F.concat(F.lit("'"), F.substring(token, 1, QUOTED_CHARACTERS), F.lit("'"))
    if col.role == "label":
        return F.when(token.isNull(), F.lit(f"{col.name}: missing label")).when(
            ~token.isin("0", "1"), F.concat(F.lit(f"{col.name}: label must be 0 or 1, got "), quoted)
        )
    if kind == "int":
        return (F.when(token.isNotNull() & ~token.rlike(INT_PATTERN),
                       F.concat(F.lit(f"{col.name}: not an integer: "), quoted))
                .when(token.isNotNull() & try_cast(token, "long").isNull(),  # beyond the 64-bit range
                      F.concat(F.lit(f"{col.name}: integer out of the 64-bit range: "), quoted)))
    if kind == "float":
        value = try_cast(token, "double")
        bad = token.isNotNull() & (~token.rlike(FLOAT_PATTERN) | value.isNull() | (F.abs(value) == float("inf")))
        return F.when(bad, F.concat(F.lit(f"{col.name}: not a finite number: "), quoted))
    if kind == "timestamp":
        return F.when(token.isNull(), F.lit(f"{col.name}: missing timestamp")).when(
            _parse_timestamp(col, token).isNull(),
            F.concat(F.lit(f"{col.name}: unparseable timestamp: "), quoted),
        )
    return F.lit(None).cast("string")


def _parse(col: Column, token: SparkColumn) -> SparkColumn:
    kind = col.parse_type
    if kind == "int":
        return try_cast(token, "long")
    if kind == "float":
        return try_cast(token, "double")
    if kind == "timestamp":
        return _parse_timestamp(col, token)
    return token


def _parse_timestamp(col: Column, token: SparkColumn) -> SparkColumn:
    return F.try_to_timestamp(token, F.lit(col.format)) if col.format else try_cast(token, "timestamp")

