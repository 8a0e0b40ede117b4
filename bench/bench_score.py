"""Batch-scoring throughput: the Spark score job against in-process torch inference, in one run.

Same model (embedding 16, MLP 400-400-400, trained one epoch) and the same 1M synthetic rows:
(a) in-process: the encoded rows already in memory as tensors, the model run in batches of
    --batch-rows on every core (the ceiling: no I/O, no transforms);
(b) the Spark job (local[2]) on the raw TSV logs: parse, quarantine, encode, score, write, with
    the lines parsed and encoded in the scoring Python workers (what the job runs);
(b') the same with the parsing in Spark SQL (the test oracle, pipelines/features.py's Engines), the
    encoding in Arrow;
(b'') the same with the encoding in Spark SQL too (one vocabulary join per field: what the job runs
    for a vocabulary over preprocess.vocab.broadcast_max_entries);
(c) the Spark job on the same rows already encoded (preprocessed Parquet): read, score, write;
(d) in-process on the raw logs: the score job's own LineScorer (parse, encode, score) over the
    file's lines on every core, without Spark: the same work as (b), so (b)/(d) is Spark's cost.
Prints one JSON object; ratios are Spark rows/s over in-process rows/s.
    python bench/bench_score.py [--data out/bench/train_1m] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import machine  # noqa: E402
from synthetic_data import CONF_FILES, generate, preprocess, run_stage, settings  # noqa: E402

from deepfm.config import Config, load_config  # noqa: E402
from deepfm.training.model_versions import open_model_version  # noqa: E402

MODEL = settings("train.model.embedding_dim=16", "train.model.hidden=[400,400,400]")


def prepare(data: Path, model: Path, raw: Path) -> None:
    if not (data / "_SUCCESS").exists():
        generate(1_000_000, raw)
        preprocess(raw, data, "preprocess.vocab.min_count=1")
    if not (model / "LATEST").exists():
        run_stage("train", *MODEL, *settings(f"train.data={data}", f"train.output={model}", "train.epochs=1"))


def repeated_logs(raw: Path, copies: int) -> Path:
    """A directory holding `copies` links to the logs' files: a bigger input for the Spark job
    without generating one, so that a job's fixed costs (planning, the vocabulary broadcast,
    the small jobs around the scoring stage) weigh what they weigh on a day's logs."""
    if copies == 1:
        return raw
    repeated = raw.with_name(f"{raw.name}_x{copies}")
    repeated.mkdir(exist_ok=True)
    for source in sorted(raw.glob("*.tsv")):
        for copy in range(copies):
            link = repeated / f"{source.stem}-{copy}.tsv"
            if not link.exists():
                os.link(source, link)
    return repeated


def in_process_rate(model_dir: Path, data: Path, batch_rows: int) -> dict:
    md = open_model_version(model_dir)
    model = md.load()
    torch.set_num_threads(os.cpu_count() or 1)
    table = pa.concat_tables(pq.read_table(data / split) for split in ("train", "valid", "test"))
    fmap = md.feature_map
    ids = torch.from_numpy(np.stack([table[f.name].to_numpy() for f in fmap.categorical], axis=1))
    dense = torch.zeros(len(table), 0)
    rows = len(table)
    with torch.inference_mode():
        model(ids[:batch_rows], dense[:batch_rows])  # warm-up
        start = time.perf_counter()
        for begin in range(0, rows, batch_rows):
            torch.sigmoid(model(ids[begin:begin + batch_rows], dense[begin:begin + batch_rows]))
        seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds)}


def raw_line_scorer(md, keep: tuple[str, ...] = (), weights=None):
    """The score job's LineScorer over the synthetic logs' lines, with the whole model in this
    process (`weights`: its state dict's bytes; default, the version's)."""
    from deepfm.features.encode import vocabulary_to_bytes
    from deepfm.features.parse import ParseLines
    from deepfm.serving.inference import ArrowScorer, LineScorer
    from pipelines import read

    fmap, spec = md.feature_map, load_config(CONF_FILES).dataset.input
    weights = md.weights_bytes() if weights is None else weights
    vocabulary = vocabulary_to_bytes(pq.read_table(md.vocabulary.uri))
    header = [c.name for c in spec.resolved_columns]  # the synthetic logs have no header line
    return LineScorer(
        ParseLines(read.line_parser(spec, header, {name: i for i, name in enumerate(header)}), read.ARROW_BOOKKEEPING),
        ArrowScorer(weights_digest=md.weights_digest, model_config=md.config.to_dict(),
                    categorical=tuple(f.name for f in fmap.categorical), dense=tuple(f.name for f in fmap.dense),
                    keep=(), weights=lambda: weights,
                    threads=os.cpu_count() or 1, device="cpu", feature_map=fmap.to_dict(),
                    vocabulary=lambda: vocabulary),
        keep, fmap.label)


def raw_batches(raw: Path, batch_rows: int):
    """The logs' lines as the batches `pipelines.read.raw_lines` hands the score job's Python workers."""
    from pipelines import read

    lines = [line for f in sorted(raw.glob("*.tsv")) for line in f.read_text().splitlines()]
    for begin in range(0, len(lines), batch_rows):
        chunk = pa.array(lines[begin:begin + batch_rows], pa.string())
        yield pa.RecordBatch.from_arrays(
            [chunk, pa.array(np.zeros(len(chunk), bool)), pa.nulls(len(chunk), pa.binary()),
             pa.array([str(raw)] * len(chunk), pa.string())],
            names=[read.RAW, read.BAD_UTF8, read.RAW_BYTES, read.SOURCE])


def in_process_raw_rate(model_dir: Path, raw: Path, batch_rows: int) -> dict:
    """The score job's Python side alone, on every core: the raw lines read from the file, parsed,
    encoded and scored in batches by the same LineScorer, with no Spark around it."""
    scorer = raw_line_scorer(open_model_version(model_dir))
    next(scorer(iter([next(raw_batches(raw, batch_rows))])))  # warm-up: the model and the encoder are built once
    start = time.perf_counter()
    rows = sum(out.num_rows for out in scorer(raw_batches(raw, batch_rows)))
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds)}


def spark_rate(spark, model_dir: Path, raw: Path, data: Path, preprocessed: bool, batch_rows: int,
               encode: str = "arrow", parse: str = "arrow") -> dict:
    from pipelines.features import Engines
    from pipelines.score import run_score

    with tempfile.TemporaryDirectory() as out:
        score = {"model": str(model_dir), "output": out, "batch_rows": batch_rows}
        score |= {"preprocessed": f"{data}/{{train,valid,test}}"} if preprocessed else {"input_path": str(raw)}
        cfg = Config.model_validate({**load_config(CONF_FILES).model_dump(), "score": score})
        result = run_score(spark, cfg, "2026-01-01", Engines(parse=parse, encode=encode))
    return {"rows": result.rows, "seconds": round(result.seconds, 2), "rows_per_s": round(result.rows / result.seconds)}


CASES = ("in_process", "in_process_raw_logs", "spark_raw_logs", "spark_raw_logs_sql_parsing",
         "spark_raw_logs_sql_encoding", "spark_preprocessed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "out" / "bench" / "train_1m")
    parser.add_argument("--raw", type=Path, default=ROOT / "out" / "bench" / "raw_1000000")
    parser.add_argument("--model", type=Path, default=ROOT / "out" / "bench" / "score_model")
    parser.add_argument("--raw-copies", type=int, default=1,
                        help="the Spark cases score the raw logs this many times over, as one input")
    parser.add_argument("--batch-rows", type=int, default=16_384)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES),
                        help="a subset of the cases (the ratios need in_process, spark_raw_logs and the others)")
    args = parser.parse_args()
    prepare(args.data, args.model, args.raw)
    spark_raw = repeated_logs(args.raw, args.raw_copies)

    from deepfm.config import SparkConfig
    from pipelines.spark import get_spark

    spark = get_spark(SparkConfig(master="local[2]", conf={
        **load_config(CONF_FILES).spark.conf, "spark.driver.memory": "6g", "spark.ui.showConsoleProgress": "false"}))
    # Rounds interleave the cases and keep each one's best: this shared machine's speed drifts.
    runs = {"in_process": lambda: in_process_rate(args.model, args.data, args.batch_rows),
            "in_process_raw_logs": lambda: in_process_raw_rate(args.model, args.raw, args.batch_rows),
            "spark_raw_logs": lambda: spark_rate(spark, args.model, spark_raw, args.data, False, args.batch_rows),
            "spark_raw_logs_sql_parsing": lambda: spark_rate(spark, args.model, spark_raw, args.data, False,
                                                             args.batch_rows, parse="spark"),
            "spark_raw_logs_sql_encoding": lambda: spark_rate(spark, args.model, spark_raw, args.data, False,
                                                              args.batch_rows, "spark", "spark"),
            "spark_preprocessed": lambda: spark_rate(spark, args.model, args.raw, args.data, True, args.batch_rows)}
    best: dict[str, dict] = {}
    first: dict[str, dict] = {}  # the first round: a Spark job's first run in the session pays its warm-up
    for round_ in range(args.rounds):
        for name in args.cases:
            result = runs[name]()
            if round_ == 0:
                first[name] = result
            if name not in best or result["rows_per_s"] > best[name]["rows_per_s"]:
                best[name] = result

    def ratio(case: str, baseline: str = "in_process") -> float | None:
        if not {case, baseline} <= set(best):
            return None
        return round(best[case]["rows_per_s"] / best[baseline]["rows_per_s"], 3)

    print(json.dumps({
        "machine": machine(),
        "model": {"embedding_dim": 16, "hidden": [400, 400, 400],
                  "weights_digest": open_model_version(args.model).weights_digest},
        "cores": os.cpu_count(), "batch_rows": args.batch_rows, "rounds": args.rounds, **best,
        "first_round": first,
        "ratio_spark_raw_logs": ratio("spark_raw_logs"),
        "ratio_spark_raw_logs_sql_parsing": ratio("spark_raw_logs_sql_parsing"),
        "ratio_spark_raw_logs_sql_encoding": ratio("spark_raw_logs_sql_encoding"),
        "ratio_spark_preprocessed": ratio("spark_preprocessed"),
        # the same work on the same raw lines, in process: what Spark itself costs the raw-log job
        "ratio_spark_raw_logs_vs_in_process_raw_logs": ratio("spark_raw_logs", "in_process_raw_logs"),
        "target_ratio": 0.7,
    }, indent=2))


if __name__ == "__main__":
    main()
