"""RELIABILITY.md, written from the tests: the bad-input corpus (tests/data/bad/cases.json) and
the tests of faults, errors and outputs, each named by what it asserts.

    python -m tests.reliability          # rewrite RELIABILITY.md
tests/test_reliability.py fails while the file is not what this writes.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "RELIABILITY.md"
# The tests of what goes wrong, by the part they exercise.
FAULT_TESTS = {
    "Killed and retried jobs": ["tests/deepfm/test_faults.py", "tests/test_airflow_dag.py",
                                "tests/deepfm/test_train.py", "tests/test_cluster.py"],
    "Outputs: versions, ownership, leases": ["tests/deepfm/test_model_versions.py", "tests/deepfm/test_lease.py",
                                             "tests/pipelines/test_generate.py"],
    "Errors and exit codes": ["tests/test_exit_codes.py", "tests/test_cli.py", "tests/pipelines/test_score.py",
                              "tests/pipelines/test_bad_inputs.py"],
    "Continual training: windows, warm start, drift, the promotion gate": [
        "tests/pipelines/test_window.py", "tests/deepfm/test_warm_start.py", "tests/pipelines/test_drift_checks.py",
        "tests/deepfm/test_promotion.py"],
    "Remote file systems": ["tests/pipelines/test_object_store.py"],
    "Experiment tracking": ["tests/pipelines/test_tracking.py", "tests/pipelines/test_tracking_server.py"],
    "Configuration and extreme values": ["tests/test_config.py", "tests/pipelines/test_features.py"],
}
KEYWORDS = ("kill", "resume", "exit", "lease", "not_write", "refused", "version", "latest", "replica", "fail",
            "non_finite", "missing", "corrupt", "cannot", "up_to_date", "s3", "daily", "object_store", "two_process",
            "unreachable", "not_answer", "twice", "finite", "full_disk", "down", "other_code", "broken", "emptied",
            "turned_down", "without_logs", "threshold")


def _tests(path: Path) -> list[tuple[str, str]]:
    """(name, what it asserts) of the test functions in a file that concern failures."""
    tree = ast.parse(path.read_text())
    found = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and any(
                k in node.name for k in KEYWORDS):
            found.append((node.name, node.name.removeprefix("test_").replace("_", " ")))
    return found


def render() -> str:
    cases = json.loads((ROOT / "tests" / "data" / "bad" / "cases.json").read_text())
    lines = ["# Reliability", "",
             "Written by `python -m tests.reliability` from the tests; `tests/test_reliability.py` fails when it is "
             "out of date. Every row is asserted by a test in the default run (`make test`), except those of "
             "`tests/test_airflow_dag.py` (`make test-airflow`), `tests/test_cluster.py` (`make test-cluster`) and "
             "`tests/pipelines/test_tracking_server.py` (`make test-tracking-server`), which CI runs too.", "",
             "## Bad input (`tests/data/bad/`, asserted by `tests/pipelines/test_bad_inputs.py`)", "",
             "Row cases are read together with the 10,000-line sample in one preprocess run: input rows = accepted + "
             "rejected, and every rejected line is in `rejects/` with its reason, its text, its bytes when not "
             "UTF-8, and its file.", "",
             "| case | kind | outcome |", "|---|---|---|"]
    for name, case in cases.items():
        expect = case["expect"]
        if expect == "accepted":
            outcome = "accepted and encoded"
        elif "reason" in expect:
            outcome = f"quarantined: `{expect['reason']}`"
        elif expect["exit"] == 0:
            outcome = f"read whole: {expect['rows']} rows from {expect['files']} file(s)" + (
                f", warning `{expect['warning']}`" if "warning" in expect else "")
        else:
            outcome = f"exit {expect['exit']}: `{expect['message']}`"
        lines.append(f"| `{name}` | {case['kind']} | {outcome} |")
    for group, files in FAULT_TESTS.items():
        lines += ["", f"## {group}", "", "| asserted | test |", "|---|---|"]
        for file in files:
            for name, sentence in _tests(ROOT / file):
                lines.append(f"| {sentence} | `{file}::{name}` |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")
