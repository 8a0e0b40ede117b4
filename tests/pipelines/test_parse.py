"""The Arrow line parser on single batches: a batch of plain values takes the cast alone, and one
odd value among them is still read by INT_PATTERN's or FLOAT_PATTERN's rule (the corpus in
test_bad_inputs.py reads every odd value together, in one batch)."""

import pyarrow as pa
import pytest

from deepfm.features.parse import LineParser, ParsedColumn


def _parse(kind: str, *values: str) -> tuple[list, list]:
    parser = LineParser((ParsedColumn("label", 0, "int", label=True), ParsedColumn("x", 1, kind)), 2, "\t")
    lines = pa.array([f"{i % 2}\t{v}" for i, v in enumerate(values)])
    typed, reasons = parser.parse(lines, pa.array([False] * len(values)))
    return typed["x"].to_pylist(), reasons.to_pylist()


def test_a_batch_of_plain_numbers_is_read_whole():
    assert _parse("int", "7", "-3", "007", "-0", "", "9223372036854775807") == (
        [7, -3, 7, 0, None, 9223372036854775807], [None] * 6)
    assert _parse("float", "1.5", "-3", ".5", "1.", "", "+2e-3", "1E5") == (
        [1.5, -3.0, 0.5, 1.0, None, 0.002, 100000.0], [None] * 7)


@pytest.mark.parametrize(("value", "read", "reason"), [
    ("0x10", None, "x: not an integer: '0x10'"),  # Arrow's cast alone would read 16
    ("0X1f", None, "x: not an integer: '0X1f'"),
    ("+5", 5, None),
    ("9223372036854775808", None, "x: integer out of the 64-bit range: '9223372036854775808'"),
    (" 5", None, "x: not an integer: ' 5'"),
    ("1e3", None, "x: not an integer: '1e3'"),
])
def test_one_odd_integer_among_plain_ones_is_read_by_the_pattern(value, read, reason):
    assert _parse("int", "7", value, "-3") == ([7, read, -3], [None, reason, None])


@pytest.mark.parametrize(("value", "reason"), [
    ("NaN", "x: not a finite number: 'NaN'"),  # Arrow's cast alone would read these
    ("inf", "x: not a finite number: 'inf'"),
    ("-Infinity", "x: not a finite number: '-Infinity'"),
    ("1e400", "x: not a finite number: '1e400'"),
    ("1.5f", "x: not a finite number: '1.5f'"),
    (" 1.5", "x: not a finite number: ' 1.5'"),
])
def test_one_odd_float_among_plain_ones_is_read_by_the_pattern(value, reason):
    assert _parse("float", "7.5", value, "-3") == ([7.5, None, -3.0], [None, reason, None])
