"""The Arrow line parser on single batches: a batch of plain values takes the cast alone, and one
odd value among them is still read by INT_PATTERN's rule (the corpus in test_bad_inputs.py reads
every odd value together, in one batch)."""

import pyarrow as pa
import pytest

from deepfm.parse import LineParser, ParsedColumn

PARSER = LineParser((ParsedColumn("label", 0, "int", label=True), ParsedColumn("I1", 1, "int")), 2, "\t")


def _parse(*values: str) -> tuple[list, list]:
    lines = pa.array([f"{i % 2}\t{v}" for i, v in enumerate(values)])
    typed, reasons = PARSER.parse(lines, pa.array([False] * len(values)))
    return typed["I1"].to_pylist(), reasons.to_pylist()


def test_a_batch_of_plain_integers_is_read_whole():
    assert _parse("7", "-3", "007", "-0", "", "9223372036854775807") == (
        [7, -3, 7, 0, None, 9223372036854775807], [None] * 6)


@pytest.mark.parametrize(("value", "read", "reason"), [
    ("0x10", None, "I1: not an integer: '0x10'"),  # Arrow's cast alone would read 16
    ("0X1f", None, "I1: not an integer: '0X1f'"),
    ("+5", 5, None),
    ("9223372036854775808", None, "I1: integer out of the 64-bit range: '9223372036854775808'"),
    (" 5", None, "I1: not an integer: ' 5'"),
    ("1e3", None, "I1: not an integer: '1e3'"),
])
def test_one_odd_integer_among_plain_ones_is_read_by_the_pattern(value, read, reason):
    values, reasons = _parse("7", value, "-3")
    assert (values, reasons) == ([7, read, -3], [None, reason, None])
