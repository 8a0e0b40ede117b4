"""Writes the bad-input corpus in this folder from one good line of the Criteo sample.

    python -m tests.data.bad.make_cases

rows/<case>.tsv   one line each (Criteo layout: label, I1..I13 integers, C1..C26 strings), read
                  together with the good sample in one preprocess run
files/<case>/     an input of its own, which stops the job
cases.json        each case's expected outcome: "accepted", a reject reason (fragment), or exit
                  code 2 with a message fragment
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

HERE = Path(__file__).parent
GOOD = ["1", "5", "110", "", "16", "", "1", "0", "14", "7", "1", "", "306", "", "62770d79", "e21f5d58",
        "afea442f", "945c7fcf", "38b02748", "6fcd6dcb", "3580aa21", "28808903", "46dedfa6", "2e027dc1",
        "0c7c4231", "95981d1f", "00c5ffb7", "be4ee537", "8a0b74cc", "4cdc3efa", "d20856aa", "b8170bba",
        "9512c20b", "c38e2f28", "14f65a5d", "25b1b089", "d7c1fc0b", "7caf609c", "30436bfc", "ed10571d"]


NAMES = ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]


def line(**fields: str) -> bytes:
    """The good line with some fields replaced (I1=..., C3=..., label=...)."""
    values = dict(zip(NAMES, GOOD, strict=True)) | fields
    return "\t".join(values[n] for n in NAMES).encode()


ROWS: dict[str, tuple[bytes, str]] = {
    # label
    "label_missing": (line(label=""), "label: missing label"),
    "label_two": (line(label="2"), "label: label must be 0 or 1, got '2'"),
    "label_word": (line(label="yes"), "label: label must be 0 or 1, got 'yes'"),
    "label_padded": (line(label=" 1"), "label: label must be 0 or 1, got ' 1'"),
    "label_float": (line(label="1.0"), "label: label must be 0 or 1, got '1.0'"),
    # integers
    "int_word": (line(I1="abc"), "I1: not an integer: 'abc'"),
    "int_decimal": (line(I2="1.5"), "I2: not an integer: '1.5'"),
    "int_padded": (line(I3=" 5"), "I3: not an integer: ' 5'"),
    "int_exponent": (line(I4="1e3"), "I4: not an integer: '1e3'"),
    "int_hex": (line(I5="0x10"), "I5: not an integer: '0x10'"),
    "int_nan": (line(I6="NaN"), "I6: not an integer: 'NaN'"),
    "int_java_suffix": (line(I7="5L"), "I7: not an integer: '5L'"),
    "int_fullwidth_digits": (line(I8="１２"), "I8: not an integer: '１２'"),
    "int_overflow": (line(I9="9223372036854775808"), "I9: integer out of the 64-bit range: '9223372036854775808'"),
    # beyond Python's 4,300-digit limit for int(): one such row must not take the job down
    "int_thousands_of_digits": (line(I1="9" * 5000), f"I1: integer out of the 64-bit range: '{'9' * 40}'"),
    "int_thousands_of_leading_zeros": (line(I2="0" * 5000 + "5"), "accepted"),
    "int_max": (line(I9="9223372036854775807"), "accepted"),
    "int_min": (line(I10="-9223372036854775808"), "accepted"),
    "int_plus_sign": (line(I11="+5"), "accepted"),
    "int_negative_zero": (line(I12="-0"), "accepted"),
    "int_leading_zeros": (line(I13="007"), "accepted"),
    # structure
    "fields_too_few": (b"\t".join(line().split(b"\t")[:39]), "expected 40 fields, found 39"),
    "fields_too_many": (line() + b"\textra", "expected 40 fields, found 41"),
    "trailing_tab": (line() + b"\t", "expected 40 fields, found 41"),
    "comma_separated": (line().replace(b"\t", b","), "expected 40 fields, found 1"),
    "invalid_utf8": (line(C3="abc").replace(b"abc", b"ab\xff\xfe"), "invalid UTF-8"),
    "only_tabs": (b"\t" * 39, "label: missing label"),
    # strings that are fine
    "categorical_quoted": (line(C4='"quoted, with comma"'), "accepted"),
    "categorical_very_long": (line(C5="x" * 10_000), "accepted"),
    "categorical_nul_byte": (line(C6="a\0b"), "accepted"),
    "categorical_non_ascii": (line(C7="café-日本"), "accepted"),
    "all_features_missing": (b"0" + b"\t" * 39, "accepted"),
    "crlf_line_end": (line() + b"\r", "accepted"),
}

GZIP_OK = gzip.compress(line() + b"\n")
LINES = b"".join(line(C1=f"value{i}") + b"\n" for i in range(60))  # distinct rows: enough for every split
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _parquet(**types: str) -> bytes:
    """The good line as one Parquet row: numbers as int64, strings as text, unless `types` says otherwise."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = dict(zip(NAMES, GOOD, strict=True))
    columns = {}
    for name in NAMES:
        numeric = name == "label" or name.startswith("I")
        kind = types.get(name, "int64" if numeric else "string")
        value = values[name] or None
        columns[name] = pa.array([int(value) if value is not None and kind == "int64" else value], kind)
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


def _zstd(data: bytes) -> bytes:
    import pyarrow as pa

    return pa.compress(data, "zstd", asbytes=True)


PARQUET_OK = _parquet()
PARQUET_I1_TEXT = _parquet(I1="string")
FILES: dict[str, tuple[dict[str, bytes], dict]] = {
    "truncated_gzip": ({"part-0.tsv.gz": GZIP_OK[: len(GZIP_OK) // 2]},
                       {"exit": 2, "message": "part-0.tsv.gz is a truncated or corrupt gzip file"}),
    "empty_file": ({"part-0.tsv": b""}, {"exit": 2, "message": "files/empty_file is empty"}),
    "only_empty_lines": ({"part-0.tsv": b"\n\n\n"},
                         {"exit": 2, "message": "3 of 3 rows rejected (100.00%), above preprocess.max_reject_rate"}),
    # read with `header: true` (the case's "input" settings): a header and nothing else
    "header_only": ({"part-0.tsv": "\t".join(NAMES).encode() + b"\n"},
                    {"exit": 2, "message": "no data rows", "input": {"header": True}}),
    "every_row_bad": ({"part-0.tsv": b"a\tb\n" * 50}, {"exit": 2, "message": "preprocess.max_reject_rate"}),
    "no_input_files": ({}, {"exit": 2, "message": "no input files"}),
    "gzip_name_plain_text": ({"part-0.tsv.gz": line() + b"\n"},
                             {"exit": 2, "message": "part-0.tsv.gz is a truncated or corrupt gzip file (Not a gzipped "
                                                    "file"}),
    # Spark 3.5's Hadoop codec needs a native zstd library that its pip package lacks; Spark 4's reads
    # zstd itself ("spark4": what differs there), so there this file, zstd only in its magic, is corrupt.
    "zstd_file": ({"part-0.tsv.zst": ZSTD_MAGIC + line() + b"\n"},
                  {"exit": 2, "message": "part-0.tsv.zst is zStandard-compressed, and this Spark's Hadoop has no "
                                         "native zStandard library",
                   "spark4": {"message": "part-0.tsv.zst is a truncated or corrupt zstd file (Dictionary mismatch)"}}),
    "zstd_real": ({"part-0.tsv.zst": _zstd(LINES)},
                  {"exit": 2, "message": "part-0.tsv.zst is zStandard-compressed, and this Spark's Hadoop has no "
                                         "native zStandard library",
                   "spark4": {"exit": 0, "rows": 60, "files": 1}}),
    "parquet_truncated": ({"part-0.parquet": PARQUET_OK, "part-1.parquet": PARQUET_OK[: len(PARQUET_OK) // 2]},
                          {"exit": 2, "message": "part-1.parquet is not a Parquet file, or was cut short",
                           "input": {"format": "parquet"}}),
    "parquet_types_differ": ({"part-0.parquet": PARQUET_OK, "part-1.parquet": PARQUET_I1_TEXT},
                             {"exit": 2, "message": "part-1.parquet: column 'I1' is BINARY in this file but bigint",
                              "input": {"format": "parquet"}}),
    "plain_subdirectory": ({"part-0.tsv": line() + b"\n", "more/part-1.tsv": line() + b"\n"},
                           {"exit": 2, "message": "1 of the 2 files under"}),
    # the input directory is named with glob characters: taken literally, as the path exists
    "glob_characters[1]": ({"part-0.tsv": LINES}, {"exit": 0, "rows": 60, "files": 1}),
    # Spark skips names starting with _ or .: read nothing of them silently, say so
    "hidden_files": ({"part-0.tsv": LINES, "_part-1.tsv": line() + b"\n", ".part-2.tsv": line() + b"\n"},
                     {"exit": 0, "rows": 60, "files": 1, "warning": "2 file(s) under"}),
    # preprocess.output inside the input directory
    "output_inside_input": ({"part-0.tsv": line() + b"\n"},
                            {"exit": 2, "message": "is inside the input directory", "output_inside_input": True}),
}


def main() -> None:
    cases: dict[str, dict] = {}
    rows = HERE / "rows"
    rows.mkdir(exist_ok=True)
    for name, (data, expected) in ROWS.items():
        (rows / f"{name}.tsv").write_bytes(data + b"\n")
        cases[name] = {"kind": "row", "expect": "accepted" if expected == "accepted" else {"reason": expected}}
    for name, (files, expected) in FILES.items():
        folder = HERE / "files" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".keep").write_text("")  # an empty input folder is a case too
        for file_name, data in files.items():
            (folder / file_name).parent.mkdir(exist_ok=True)
            (folder / file_name).write_bytes(data)
        cases[name] = {"kind": "file", "expect": expected}
    (HERE / "cases.json").write_text(json.dumps(cases, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
