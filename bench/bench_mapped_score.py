"""Scoring a model bigger than an executor (issue 28): the score job's ways to reach the embedding
table, measured on one real standalone cluster (a Master and a Worker from the pip pyspark, loopback).

The model: the synthetic logs with C1-C26 hashed into --buckets ids each (a table of about
26 x buckets rows x 17 floats), trained for one epoch with sharded tables on 2 workers; its
weight files are several times spark.executor.memory (--executor-memory). Cases, each scoring the
same 1M raw rows:
(a) mapped     score.tables=mapped: each executor memory-maps the version's weight files and
               reads only the rows its batches look up;
(b) broadcast  score.tables=broadcast: today's path, the whole model in every Python worker;
(c) join       the alternative weighed: the lookups alone done by Spark, as a join of the rows'
               ids (exploded) to the table stored as Parquet, gathered back per row; no model is
               run, so its time is a lower bound of a scoring job built that way;
(d) in_process the score job's LineScorer over the same lines with the whole model in this
               process: the reference scores, matched to (a)'s and (b)'s by (p_true, probability).
Memory: peaks over the Worker's process tree (executor JVM, Python workers): `anon` (private;
what a memory limit must hold), `file` (mapped pages: page cache, reclaimable), and the largest
single process's anonymous memory.
    python bench/bench_mapped_score.py [--work /tmp/mapped] [--buckets 1500000] [--executor-memory 1g]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_score import raw_batches, raw_line_scorer  # noqa: E402
from machine import machine  # noqa: E402
from procmem import PeakMemory  # noqa: E402
from synthetic_data import command, generate, preprocess, run_stage, settings  # noqa: E402

from deepfm.training.model_versions import open_model_version  # noqa: E402
from tests.standalone import StandaloneCluster  # noqa: E402

RUN_DATE = "2026-12-05"
GiB = 2**30


def columns(buckets: int) -> str:
    return json.dumps([
        {"name": "label", "role": "label"},
        {"names": ["I{1..13}"], "role": "numeric", "dtype": "int", "transform": "log_bucketize"},
        {"names": ["C{1..26}"], "role": "categorical", "hash_buckets": buckets},
        {"name": "p_true", "role": "passthrough", "dtype": "float"}])


def prepare(work: Path, rows: int, buckets: int) -> tuple[Path, Path]:
    raw, data, model = work / "raw", work / "prep", work / "model"
    dataset = f"dataset.input.columns={columns(buckets)}"
    if not (data / "_SUCCESS").exists():
        generate(rows, raw)
        preprocess(raw, data, dataset)
    if not (model / "LATEST").exists():
        run_stage("train", *settings(
            f"train.data={data}", f"train.output={model}", "train.epochs=1", "train.backend=torch", "train.workers=2",
            "train.threads=1", "train.embeddings=sharded", "train.embedding_optimizer=rowwise_adagrad",
            "train.model.embedding_dim=16", "train.model.hidden=[400,400,400]"))
    return raw, model


def score_on_cluster(cluster: StandaloneCluster, raw: Path, model: Path, out: Path, tables: str, buckets: int,
                     executor_memory: str) -> dict:
    args = settings(f"dataset.input.columns={columns(buckets)}", f"spark.master={cluster.master_url}",
                    f"spark.conf.spark.executor.memory={executor_memory}",
                    "spark.conf.spark.ui.showConsoleProgress=false",
                    f"spark.conf.spark.pyspark.python={sys.executable}",
                    f"spark.conf.spark.executorEnv.PYTHONPATH={ROOT}", f"score.model={model}",
                    f"score.input_path={raw}", f"score.output={out}", f"score.tables={tables}")
    with PeakMemory(cluster.worker.pid) as memory:
        started = time.perf_counter()
        done = subprocess.run(command("score", "--run-date", RUN_DATE, *args), cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - started
    figures = {"exit": done.returncode, "wall_s": round(wall, 1), **_gib(memory.peak)}
    if done.returncode != 0:
        return {**figures, "error": (done.stderr.strip().splitlines() or ["?"])[-1][:300]}
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    # rows/s over the job's own seconds (from the model check to the commit), without the JVM's start
    figures |= {"rows": summary["rows"], "job_s": summary["seconds"],
                "rows_per_s": round(summary["rows"] / summary["seconds"])}
    scores = pq.read_table(out / f"run_date={RUN_DATE}", columns=["p_true", "probability"])
    return {**figures, "_scores": scores}


def in_process(raw: Path, model: Path) -> tuple[dict, pa.Table]:
    scorer = raw_line_scorer(open_model_version(model), keep=("p_true",))
    started = time.perf_counter()
    out = pa.Table.from_batches(list(scorer(raw_batches(raw, 16_384)))).select(["p_true", "probability"])
    seconds = time.perf_counter() - started
    return {"rows": out.num_rows, "seconds": round(seconds, 1), "rows_per_s": round(out.num_rows / seconds)}, out


def largest_difference(a: pa.Table, b: pa.Table) -> float:
    """Rows matched by sorting both on (p_true, probability): the logs carry no row id."""
    def ordered(t: pa.Table) -> np.ndarray:
        t = t.sort_by([("p_true", "ascending"), ("probability", "ascending")])
        return t["probability"].to_numpy().astype(np.float64)
    assert a.num_rows == b.num_rows, (a.num_rows, b.num_rows)
    return float(np.abs(ordered(a) - ordered(b)).max())


def table_as_parquet(model: Path, out: Path) -> int:
    """The version's table as Parquet (row id, vector), written stripe by stripe, for the join."""
    version = open_model_version(model)
    if not (out / "_SUCCESS").exists():
        out.mkdir(parents=True, exist_ok=True)
        world = version.table_stripes
        for rank, path in enumerate(version.weight_files[1:]):
            stripe = torch.load(path.local_path, mmap=True, weights_only=True)
            with pq.ParquetWriter(out / f"part-{rank}.parquet", pa.schema(
                    [("row", pa.int64()), ("vector", pa.list_(pa.float32(), stripe.shape[1]))])) as writer:
                for begin in range(0, len(stripe), 1 << 20):
                    chunk = stripe[begin:begin + (1 << 20)].float().numpy()
                    ids = np.arange(begin, begin + len(chunk), dtype=np.int64) * world + rank
                    writer.write_table(pa.table({"row": ids, "vector": pa.FixedSizeListArray.from_arrays(
                        pa.array(chunk.ravel()), chunk.shape[1])}))
        (out / "_SUCCESS").touch()
    return sum(version.config.vocab_sizes)


def join_lookups(cluster: StandaloneCluster, model: Path, data: Path, table: Path, executor_memory: str) -> dict:
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    version = open_model_version(model)
    spark = (SparkSession.builder.master(cluster.master_url).appName("bench-join-lookups")
             .config("spark.executor.memory", executor_memory).config("spark.pyspark.python", sys.executable)
             .config("spark.sql.shuffle.partitions", "32").getOrCreate())
    try:
        encoded = spark.read.parquet(*(str(data / split) for split in ("train", "valid", "test")))
        offsets = np.cumsum([0, *version.config.vocab_sizes[:-1]])
        ids = F.array(*(F.col(f.name).cast("long") + F.lit(int(offset))
                        for f, offset in zip(version.feature_map.categorical, offsets, strict=True)))
        exploded = encoded.select(F.monotonically_increasing_id().alias("rid"), F.posexplode(ids).alias("pos", "row"))
        gathered = (exploded.join(spark.read.parquet(str(table)), "row").groupBy("rid")
                    .agg(F.sort_array(F.collect_list(F.struct("pos", "vector"))).alias("embeddings")))
        with PeakMemory(cluster.worker.pid) as memory:
            started = time.perf_counter()
            gathered.write.format("noop").mode("overwrite").save()
            seconds = time.perf_counter() - started
        rows = encoded.count()
    finally:
        spark.stop()
    return {"rows": rows, "wall_s": round(seconds, 1), "rows_per_s": round(rows / seconds), **_gib(memory.peak)}


def _gib(peak: dict) -> dict:
    return {f"peak_{k}_gib": round(v / GiB, 2) for k, v in peak.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("out/bench/mapped_score"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--buckets", type=int, default=1_500_000, help="hashed ids per C field")
    parser.add_argument("--executor-memory", default="1g")
    parser.add_argument("--cases", default="mapped,broadcast,join")
    args = parser.parse_args()
    work = args.work.resolve()
    raw, model = prepare(work, args.rows, args.buckets)
    version = open_model_version(model)
    report: dict = {"machine": machine(), "rows": args.rows, "table_rows": sum(version.config.vocab_sizes),
                    "weights_gib": round(version.weights_size / GiB, 2), "executor_memory": args.executor_memory,
                    "table_stripes": version.table_stripes}
    reference, expected = in_process(raw, model)
    report["in_process"] = reference
    cases = args.cases.split(",")
    (work / "hidden").mkdir(exist_ok=True)
    cluster = StandaloneCluster(work / "cluster", [work / "hidden"], cores=2, memory="20g").start()
    try:
        for tables in ("mapped", "broadcast"):
            if tables in cases:
                figures = score_on_cluster(cluster, raw, model, work / f"scores_{tables}", tables, args.buckets,
                                           args.executor_memory)
                if "_scores" in figures:
                    figures["largest_difference_to_in_process"] = largest_difference(figures.pop("_scores"), expected)
                report[tables] = figures
                print(json.dumps({tables: figures}), file=sys.stderr)
        if "join" in cases:
            table_as_parquet(model, work / "table_parquet")
            report["join"] = join_lookups(cluster, model, work / "prep", work / "table_parquet", args.executor_memory)
    finally:
        cluster.stop()
    for case in ("mapped", "broadcast", "join"):
        if report.get(case, {}).get("rows_per_s"):
            report[case]["rows_per_s_over_in_process"] = round(report[case]["rows_per_s"] / reference["rows_per_s"], 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
