"""Preprocess benchmark: rows/s and peak memory at 1M and 10M synthetic rows on local[2].

Prints one JSON object. The baseline is the 1M-row run measured in the same invocation: the
target is linear cost, time(10M) <= 11 x time(1M). Generated inputs are cached under out/bench.
With --compare-encode the smallest size is also run with the encoding in Spark SQL (one vocabulary
join per field, what a vocabulary over preprocess.vocab.broadcast_max_entries gets: the run sets it
to 0) beside the Arrow encoding.
    python bench/bench_preprocess.py [--sizes 1000000 10000000] [--master local[2]] [--compare-encode]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine  # noqa: E402
from procmem import run_measured  # noqa: E402
from synthetic_data import command, preprocess_args  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _generate(rows: int, work: Path) -> Path:
    raw = work / f"raw_{rows}"
    if not (raw / f"part-{(rows - 1) // 1_000_000:05d}.tsv").exists():
        result, seconds, _ = run_measured(command("generate", "--rows", str(rows), "--output", str(raw)),
                                          cwd=ROOT)
        if result.returncode:
            sys.exit(f"generate failed:\n{result.stderr[-3000:]}")
        print(f"generated {rows} rows in {seconds:.0f}s", file=sys.stderr)
    return raw


def _preprocess(rows: int, raw: Path, work: Path, master: str, driver_memory: str, encode: str = "arrow") -> dict:
    out = work / f"shards_{rows}"
    sql_encoding = ["preprocess.vocab.broadcast_max_entries=0"] if encode == "spark" else []
    cmd = command("preprocess", *preprocess_args(raw, out, f"spark.master={master}", *sql_encoding,
                                                 f"spark.conf.spark.driver.memory={driver_memory}",
                                                 "spark.conf.spark.ui.showConsoleProgress=false", force=True))
    result, seconds, peak = run_measured(cmd, cwd=ROOT)
    if result.returncode:
        sys.exit(f"preprocess of {rows} rows failed:\n{result.stderr[-3000:]}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    vocab_total = sum(summary["vocab_sizes"].values())
    return {"rows": rows, "encode": encode, "seconds": round(seconds, 1),
            "rows_per_s": round(rows / seconds),
            "peak_rss_gib": round(peak / 2**30, 2), "vocab_ids": vocab_total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "bench")
    parser.add_argument("--compare-encode", action="store_true")
    args = parser.parse_args()
    runs = [_preprocess(n, _generate(n, args.work), args.work, args.master, args.driver_memory) for n in args.sizes]
    smallest = (args.sizes[0], _generate(args.sizes[0], args.work), args.work, args.master, args.driver_memory)
    sql = _preprocess(*smallest, encode="spark") if args.compare_encode else None
    base = runs[0]
    for run in runs[1:]:
        size_ratio = run["rows"] / base["rows"]
        run["time_ratio_vs_baseline"] = round(run["seconds"] / base["seconds"], 2)
        run["size_ratio_vs_baseline"] = size_ratio
        run["linear"] = run["seconds"] / base["seconds"] <= 1.1 * size_ratio
    largest = runs[-1]
    print(json.dumps({
        "machine": machine(),
        "benchmark": "preprocess",
        "master": args.master,
        "baseline_rows": base["rows"],
        "runs": runs,
        "spark_sql_encoding": sql and {**sql, "arrow_speedup": round(sql["seconds"] / runs[0]["seconds"], 2)},
        "projected_seconds_45M": round(largest["seconds"] / largest["rows"] * 45_000_000),
    }, indent=2))


if __name__ == "__main__":
    main()
