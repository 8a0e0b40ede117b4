"""The bad-input corpus (tests/data/bad/, made by its make_cases.py): every case ends as its
cases.json says, and no row is lost.

Row cases are read in one preprocess run, each from a file of its own beside the good sample:
a rejected line lands in `rejects/` with its reason, its raw text and its file; an accepted one
is encoded. File cases stop the job with exit 2 and a message naming what to fix.
"""

import importlib.metadata
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from deepfm.config import ScoreConfig, TrainConfig
from deepfm.errors import exit_code
from deepfm.training.launch import run_training
from pipelines import read
from pipelines.features import Engines
from pipelines.preprocess import run_preprocess
from pipelines.score import run_score
from tests.conftest import CLI, CLI_ENV, CRITEO_SAMPLE, REPO_ROOT, criteo_dataset, make_config, run_cli

BAD = REPO_ROOT / "tests" / "data" / "bad"
CASES = json.loads((BAD / "cases.json").read_text())
ROW_CASES = {name: case["expect"] for name, case in CASES.items() if case["kind"] == "row"}
FILE_CASES = {name: case["expect"] for name, case in CASES.items() if case["kind"] == "file"}
SPARK_MAJOR = int(importlib.metadata.version("pyspark").split(".")[0])


def test_the_corpus_has_at_least_30_cases():
    assert len(CASES) >= 30 and len(ROW_CASES) == len(list((BAD / "rows").glob("*.tsv")))


@pytest.fixture(scope="module")
def row_run(spark, tmp_path_factory):
    logs = tmp_path_factory.mktemp("bad_rows") / "logs"
    shutil.copytree(BAD / "rows", logs)
    shutil.copy(CRITEO_SAMPLE, logs / "good.tsv")
    out = logs.parent / "prep"
    result = run_preprocess(spark, make_config(criteo_dataset(logs), str(out), max_reject_rate=0.05))
    rejects = pq.read_table(out / "rejects").to_pylist()
    return result.manifest.rows, rejects, logs


def test_the_corpus_is_parsed_alike_by_arrow_and_spark_sql(spark, row_run, tmp_path):
    """row_run parses in Arrow (what preprocess runs); Spark SQL (the oracle) must reject the same lines
    for the same reasons, keep the same raw text and bytes, and encode the same rows."""
    rows, rejects, logs = row_run
    result = run_preprocess(spark, make_config(criteo_dataset(logs), str(tmp_path / "sql"), max_reject_rate=0.05),
                            engines=Engines(parse="spark"))
    assert result.manifest.rows == rows
    assert _sorted(pq.read_table(tmp_path / "sql" / "rejects").to_pylist()) == _sorted(rejects)
    for split in ("train", "valid", "test"):
        assert pq.read_table(tmp_path / "sql" / split).equals(pq.read_table(logs.parent / "prep" / split))


def _sorted(rejects: list[dict]) -> list[tuple]:
    return sorted((r["reason"], r["raw"], r["raw_bytes"] or b"", r["source"]) for r in rejects)


@pytest.mark.parametrize("name", sorted(ROW_CASES))
def test_each_bad_row_is_quarantined_with_its_reason_or_accepted(row_run, name):
    _, rejects, _ = row_run
    mine = [r for r in rejects if r["source"].endswith(f"/{name}.tsv")]
    expected = ROW_CASES[name]
    if expected == "accepted":
        assert mine == []
        return
    assert len(mine) == 1 and mine[0]["reason"] == expected["reason"], mine
    line = (BAD / "rows" / f"{name}.tsv").read_bytes().rstrip(b"\n")
    assert mine[0]["raw"] == line.decode("utf-8", errors="replace")  # readable, undecodable bytes as U+FFFD
    # ...and a line that is not UTF-8 keeps its bytes: nothing of it is lost
    assert mine[0]["raw_bytes"] == (line if "UTF-8" in expected["reason"] else None)


def test_no_row_is_lost(row_run):
    rows, rejects, _ = row_run
    lines = sum(1 for _ in CRITEO_SAMPLE.open("rb")) + len(ROW_CASES)
    rejected = sum(1 for expected in ROW_CASES.values() if expected != "accepted")
    assert rows.input == lines
    assert rows.rejected == len(rejects) == rejected
    assert rows.accepted == lines - rejected == sum(split.rows for split in rows.splits.values())


@pytest.mark.parametrize("name", sorted(FILE_CASES))
def test_each_bad_input_file_ends_as_its_case_says(spark, tmp_path, caplog, name):
    """Exit 2 with a message naming what to fix and nothing written; or read whole, with a warning
    where some files are not read (exit 0)."""
    expected = FILE_CASES[name]
    if SPARK_MAJOR >= 4:  # what Spark 4 reads differently (zstd, say)
        expected = {**expected, **expected.get("spark4", {})}
    folder = BAD / "files" / name
    dataset = criteo_dataset(folder)
    dataset["input"].update(expected.get("input", {}))
    output = folder / "prep" if expected.get("output_inside_input") else tmp_path / "prep"
    if expected["exit"] == 0:
        with caplog.at_level(logging.WARNING):
            result = run_preprocess(spark, make_config(dataset, str(output), max_reject_rate=0.05))
        assert result.manifest.rows.input == result.manifest.rows.accepted == expected["rows"]
        assert result.manifest.inputs["input"].files == expected["files"]  # and each was read
        assert (expected["warning"] in caplog.text) if "warning" in expected else "not read" not in caplog.text
        return
    with pytest.raises(Exception) as err:  # noqa: PT011 - the exit code is what the contract fixes
        run_preprocess(spark, make_config(dataset, str(output)))
    assert exit_code(err.value) == expected["exit"], repr(err.value)
    assert expected["message"] in str(err.value), str(err.value)
    assert not output.exists()  # nothing half-written


def test_scoring_rejects_and_scores_every_row_alike_whether_arrow_or_spark_parses(spark, row_run, tmp_path,
                                                                                 caplog):
    """The score job's two parsers (deepfm/features/parse.py in the Python workers, pipelines/read.py in
    Spark SQL) on the whole corpus: the same rejects with the same reasons, raw text and bytes,
    and the same score for every accepted row."""
    rows, preprocess_rejects, logs = row_run
    model = run_training(TrainConfig.model_validate({
        "data": str(logs.parent / "prep"), "output": str(tmp_path / "model"), "epochs": 1, "batch_size": 512,
        "model": {"embedding_dim": 4, "hidden": [16]}, "threads": 1})).model
    runs = {}
    for parse in ("arrow", "spark"):
        cfg = make_config(criteo_dataset(logs), str(tmp_path / "prep")).model_copy(update={"score": ScoreConfig(
            model=model, output=str(tmp_path / parse), max_reject_rate=0.05, batch_rows=700)})
        with caplog.at_level(logging.INFO):
            caplog.clear()
            result = run_score(spark, cfg, "2026-11-28", Engines(parse=parse))
        assert ("parsing and encoding in Arrow" in caplog.text) is (parse == "arrow")
        partition = Path(result.partition.removeprefix("file:"))
        rejects = sorted((r["reason"], r["raw"], r["raw_bytes"], Path(r["source"]).name)
                         for r in pq.read_table(partition / "_rejects").to_pylist())
        runs[parse] = result, pq.read_table(partition).column("probability").to_numpy(), rejects
    (arrow, arrow_scores, arrow_rejects), (sql, sql_scores, sql_rejects) = runs["arrow"], runs["spark"]
    assert arrow_rejects == sql_rejects and len(arrow_rejects) == rows.rejected == len(preprocess_rejects)
    assert sorted(r[0] for r in arrow_rejects) == sorted(r["reason"] for r in preprocess_rejects)
    assert arrow.rows == sql.rows == rows.accepted
    # The corpus has no id column to pair rows by: the same scores, sorted.
    assert np.abs(np.sort(arrow_scores) - np.sort(sql_scores)).max() < 1e-6


def test_an_input_file_the_job_may_not_read_exits_2_naming_it(tmp_path):
    """Run as a user who may not read one of the files: root without the capabilities that let it
    read any file (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), as the tests and CI run as root."""
    logs = tmp_path / "logs"
    logs.mkdir()
    shutil.copy(CRITEO_SAMPLE, logs / "part-0.tsv")
    secret = logs / "part-1.tsv"
    shutil.copy(CRITEO_SAMPLE, secret)
    secret.chmod(0)
    result = run_cli(["setpriv", "--bounding-set=-dac_override,-dac_read_search", *CLI, "preprocess",
                      "--set", "spark.master=local[1]", "--set", f"dataset.input.path={logs}",
                      "--set", f"preprocess.output={tmp_path / 'prep'}"])
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert str(secret) in lines[0] and "permission denied: the job may not read " in lines[0], lines[0]
    assert not (tmp_path / "prep").exists()


def test_a_score_output_inside_its_input_exits_2_naming_both(spark, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    shutil.copy(CRITEO_SAMPLE, logs / "part-0.tsv")
    cfg = make_config(criteo_dataset(logs), str(tmp_path / "prep")).model_copy(update={"score": ScoreConfig(
        model=str(tmp_path / "model"), output=str(logs / "scores"))})
    with pytest.raises(read.InputError) as err:
        run_score(spark, cfg, "2026-12-02")
    assert str(err.value).startswith(f"score.output file:{logs}/scores is inside the input directory file:{logs}")
    assert exit_code(err.value) == 2 and sorted(p.name for p in logs.iterdir()) == ["part-0.tsv"]


@pytest.mark.parametrize("launcher", ["deepfm-pipeline", "spark-submit.sh"])
def test_a_corrupt_input_shows_the_user_a_few_lines_and_keeps_sparks_traces_in_the_log_it_names(tmp_path, launcher):
    """Spark's task-abort logging printed 355 lines of Java stack before the one line that explains
    the failure; the console now shows the stage's own lines, and the stack is in the run's log."""
    command = CLI if launcher == "deepfm-pipeline" else [str(REPO_ROOT / "spark-submit.sh")]
    result = run_cli([*command, "preprocess", "--set", "spark.master=local[1]",
                      "--set", f"dataset.input.path={BAD / 'files' / 'truncated_gzip'}",
                      "--set", f"preprocess.output={tmp_path / 'prep'}"],
                     env={**CLI_ENV, "DEEPFM_LOG_DIR": str(tmp_path / "logs"), "SPARK_MASTER": "local[1]"})
    assert result.returncode == 2, result.stderr[-3000:]
    seen = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(seen) <= 4, "\n".join(seen)  # start, step, error (and at most one more)
    error = seen[-1]
    assert "part-0.tsv.gz is a truncated or corrupt gzip file" in error, seen
    log = Path(error.rsplit("(Spark's log: ", 1)[1].rstrip(")"))
    assert log.parent == tmp_path / "logs" and "java.io.EOFException" in log.read_text()
    assert log.read_text().count("\tat ") > 50  # the whole stack is kept there
