"""Raw text lines to typed columns in Arrow: the rules of `pipelines/read.py` without Spark SQL.

The score job parses its raw logs in the Python workers that encode and score them: each line
crosses from the JVM once, as one string, instead of forty typed columns, and the split, the
regular expressions and the casts run in Arrow's kernels at about a quarter of Spark SQL's CPU.
Both parsers share the patterns below and the wording of every reason;
`tests/pipelines/test_score.py` holds them to the same rejects and scores on the bad-input corpus.

A row is rejected with the first problem found: the line's structure (empty, not UTF-8, the wrong
number of fields), then each column's value in column order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Plain decimal literals only, the same rule for ints and floats: no surrounding spaces (Spark's
# casts would trim them for floats only), no Java suffixes (`1d`, `3f`), no words (NaN, Infinity).
INT_PATTERN = r"^[+-]?[0-9]+$"
FLOAT_PATTERN = r"^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?$"
QUOTED_CHARACTERS = 40  # of a bad value, in its reason


@dataclass(frozen=True)
class ParsedColumn:
    name: str
    position: int  # its field's index in a line
    kind: str  # int, float or string (pipelines/read.py's parse types, timestamps excepted)
    label: bool = False


@dataclass(frozen=True)
class LineParser:
    """Splits delimited lines into `columns`, typed, and says why each bad line is rejected."""

    columns: tuple[ParsedColumn, ...]
    fields: int  # the number of fields a line must have
    delimiter: str

    def parse(self, lines: pa.Array, bad_utf8: pa.Array) -> tuple[dict[str, pa.Array], pa.Array]:
        """Typed columns (null where missing or unparseable) and the reason per line (null: good)."""
        parts = pc.split_pattern(lines, self.delimiter)
        counts = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
        well_formed = counts == self.fields
        starts = parts.offsets.to_numpy()[:-1]
        problems = [self._structure(lines, bad_utf8, counts)]
        typed = {}
        for column in self.columns:
            # A line with the wrong number of fields is rejected for that alone: its fields are null.
            positions = pa.array(np.where(well_formed, starts + column.position, 0), mask=~well_formed)
            token = pc.take(parts.values, positions)
            token = pc.if_else(pc.equal(token, ""), pa.scalar(None, pa.string()), token)
            typed[column.name], problem = _typed(column, token)
            problems.append(problem)
        return typed, pc.coalesce(*problems)

    def _structure(self, lines: pa.Array, bad_utf8: pa.Array, counts: np.ndarray) -> pa.Array:
        reasons = np.full(len(lines), None, dtype=object)
        for row in np.flatnonzero(counts != self.fields):
            reasons[row] = f"expected {self.fields} fields, found {counts[row]}"
        reasons[bad_utf8.to_numpy(zero_copy_only=False)] = "invalid UTF-8"
        reasons[pc.equal(lines, "").to_numpy(zero_copy_only=False)] = "empty line"
        return pa.array(reasons, pa.string())


@dataclass(frozen=True)
class ParseLines:
    """A picklable callable for `DataFrame.mapInArrow` over raw lines (`pipelines.read.raw_lines`):
    the typed columns, then the reason, raw line and raw bytes (null for good rows) and the source;
    `pipelines.read.read_table`'s output, computed in Arrow."""

    parser: LineParser
    bookkeeping: tuple[str, str, str, str, str]  # the names: reason, raw, raw bytes, source, bad UTF-8

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        reason_name, raw, raw_bytes, source, bad_utf8 = self.bookkeeping
        for batch in batches:
            typed, reason = self.parser.parse(batch.column(raw), batch.column(bad_utf8))
            rejected = pc.is_valid(reason)
            if reason.null_count == len(reason):  # the usual batch: nothing to keep of its lines
                lines = pa.nulls(len(reason), pa.string()), pa.nulls(len(reason), pa.binary())
            else:
                lines = (pc.if_else(rejected, batch.column(raw), pa.scalar(None, pa.string())),
                         pc.if_else(rejected, batch.column(raw_bytes), pa.scalar(None, pa.binary())))
            yield pa.RecordBatch.from_arrays([*typed.values(), reason, *lines, batch.column(source)],
                                             names=[*typed, reason_name, raw, raw_bytes, source])


def _typed(column: ParsedColumn, token: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The column's values and its problem per row, worded as pipelines/read.py words them."""
    present = pc.is_valid(token)
    none = pa.scalar(None, pa.string())
    if column.label:
        bad = pc.and_(present, pc.invert(pc.is_in(token, pa.array(["0", "1"]))))
        problem = pc.if_else(present, _said(f"{column.name}: label must be 0 or 1, got ", token, bad),
                             f"{column.name}: missing label")
        return _cast_int(pc.if_else(bad, none, token)), problem
    if column.kind == "int":
        if (plain := _plain_integers(token)) is not None:
            return plain, pa.nulls(len(token), pa.string())
        literal = pc.fill_null(pc.match_substring_regex(token, INT_PATTERN), False)
        values = _cast_int(pc.if_else(literal, token, none))
        not_literal = pc.and_(present, pc.invert(literal))
        out_of_range = pc.and_(literal, pc.is_null(values))
        return values, pc.coalesce(_said(f"{column.name}: not an integer: ", token, not_literal),
                                   _said(f"{column.name}: integer out of the 64-bit range: ", token, out_of_range))
    if column.kind == "float":
        if (plain := _plain_finite_floats(token)) is not None:
            return plain, pa.nulls(len(token), pa.string())
        literal = pc.fill_null(pc.match_substring_regex(token, FLOAT_PATTERN), False)
        values = _cast_float(pc.if_else(literal, token, none))
        finite = pc.fill_null(pc.is_finite(values), False)
        bad = pc.and_(present, pc.invert(pc.and_(literal, finite)))
        return (pc.if_else(bad, pa.scalar(None, pa.float64()), values),
                _said(f"{column.name}: not a finite number: ", token, bad))
    return token, pa.nulls(len(token), pa.string())


def _said(prefix: str, token: pa.Array, where: pa.Array) -> pa.Array:
    """`prefix` and the quoted start of the value where `where` holds, else null. Nearly every batch
    has no bad value: the strings are then not built at all."""
    if not pc.any(where).as_py():
        return pa.nulls(len(token), pa.string())
    quoted = pc.binary_join_element_wise("'", pc.utf8_slice_codeunits(token, 0, QUOTED_CHARACTERS), "'", "")
    return pc.if_else(where, pc.binary_join_element_wise(prefix, quoted, ""), pa.scalar(None, pa.string()))


def _plain_integers(token: pa.Array) -> pa.Array | None:
    """The int64 values when every value is a plain integer literal (the usual batch), else None.
    Arrow's cast accepts exactly INT_PATTERN's literals without a '+', and hexadecimal ones
    ('0x10'), which INT_PATTERN rejects; it fails on anything else, and on a value out of range."""
    if any(pc.any(pc.match_substring(token, x)).as_py() for x in "xX"):  # ignore_case is a regex: 7x slower
        return None
    try:
        return pc.cast(token, pa.int64())
    except pa.ArrowInvalid:
        return None


def _plain_finite_floats(token: pa.Array) -> pa.Array | None:
    """The float64 values when every value is a finite FLOAT_PATTERN literal (the usual batch), else
    None. Arrow's cast accepts exactly those literals, and NaN and infinity in their spellings,
    which are not finite; it fails on anything else."""
    try:
        values = pc.cast(token, pa.float64())
    except pa.ArrowInvalid:
        return None
    return values if pc.all(pc.is_finite(values)).as_py() is not False else None


def _cast_int(token: pa.Array) -> pa.Array:
    """int64 of integer literals (a leading '+' allowed, as Spark's cast allows it); null beyond
    the 64-bit range, where Arrow's cast would fail the whole column."""
    unsigned = pc.replace_substring_regex(token, r"^\+", "")
    try:
        return pc.cast(unsigned, pa.int64())
    except pa.ArrowInvalid:  # some value overflows: only then, value by value
        return pa.array([_int64_or_none(v) for v in unsigned.to_pylist()], pa.int64())


_INT64_DIGITS = len(str(1 << 63))


def _int64_or_none(literal: str | None) -> int | None:
    """The int64 of a literal, None beyond the range. The digits are counted before `int()` reads
    them: Python refuses literals of over 4,300 digits (sys.int_info.str_digits_check_threshold)
    with a ValueError that would take the whole job down for one row."""
    if literal is None or len(literal.lstrip("-").lstrip("0")) > _INT64_DIGITS:
        return None
    value = int(literal)
    return value if -(1 << 63) <= value < (1 << 63) else None


def _cast_float(token: pa.Array) -> pa.Array:
    try:
        return pc.cast(token, pa.float64())
    except pa.ArrowInvalid:  # a literal Arrow's parser refuses: Python's reads every one the pattern allows
        return pa.array([None if v is None else float(v) for v in token.to_pylist()], pa.float64())
