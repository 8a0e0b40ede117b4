"""The current Spark line against the named stack, on one machine in one run.

Runs each benchmark below under each stack's own environment (`make setup` makes .venv, `STACK=current
make setup` makes .venv-current), interleaved over rounds, keeping each figure's best (this shared
machine's speed drifts from minute to minute):
  preprocess rows/s   bench_preprocess.py --sizes 1000000      1M synthetic raw rows on local[2]
  training samples/s  bench_train.py --readers native          the native pyarrow reader, 1 worker
  scoring rows/s      bench_score.py --cases spark_raw_logs    4M raw rows (the 1M rows' file 4 times) through
                      the Spark score job, twice in one Spark session: the second job is the steady state
                      (the goal's figure), the first also pays the session's start (JIT, class loading,
                      the first Python worker), a fixed cost per spark-submit reported apart as
                      `score_raw_first_job_rows_per_s`
  in-process scoring  bench_score.py --cases in_process_raw_logs  the job's parse/encode/score, no Spark
Prints one JSON object: each stack's versions and figures, and the current/named ratios (goal: none
below 0.95 among the steady-state figures; the in-process scoring figure only locates a scoring gap).
    python bench/bench_stacks.py [--rounds 2] [--benchmarks score_raw_rows_per_s ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STACKS = {"named": ROOT / ".venv", "current": ROOT / ".venv-current"}
# name: (command, {figure: how to read it from the command's JSON})
BENCHMARKS = {
    "preprocess_rows_per_s": (["bench/bench_preprocess.py", "--sizes", "1000000"],
                              {"preprocess_rows_per_s": lambda out: out["runs"][0]["rows_per_s"]}),
    "train_samples_per_s": (["bench/bench_train.py", "--readers-only", "--readers", "native", "--rounds", "1"],
                            {"train_samples_per_s": lambda out: out["cases"][0]["samples_per_s"]}),
    "score_raw_rows_per_s": (["bench/bench_score.py", "--cases", "spark_raw_logs", "--rounds", "2",
                              "--raw-copies", "4"],
                             {"score_raw_rows_per_s": lambda out: out["spark_raw_logs"]["rows_per_s"],
                              "score_raw_first_job_rows_per_s":
                                  lambda out: out["first_round"]["spark_raw_logs"]["rows_per_s"]}),
    # The same parse, encode and score without Spark: whether a scoring gap is Python's or Spark's
    "score_raw_in_process_rows_per_s": (["bench/bench_score.py", "--cases", "in_process_raw_logs", "--rounds", "1"],
                                        {"score_raw_in_process_rows_per_s":
                                             lambda out: out["in_process_raw_logs"]["rows_per_s"]}),
}
# Figures that locate or explain a gap rather than measure the goal
NOT_GOALS = {"score_raw_in_process_rows_per_s", "score_raw_first_job_rows_per_s"}


def _run(python: Path, args: list[str]) -> dict:
    result = subprocess.run([str(python), *args], cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"bench_stacks.py: {python} {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--benchmarks", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    args = parser.parse_args()
    for stack, venv in STACKS.items():
        if not (venv / "bin" / "python").exists():
            sys.exit(f"bench_stacks.py: no {stack} stack at {venv}: run `STACK={stack} make setup` first")
    versions = {stack: subprocess.run([str(venv / "bin" / "python"), "-c",
                                       "from deepfm.stack import versions; import json; print(json.dumps(versions()))"],
                                      cwd=ROOT, capture_output=True, text=True, check=True).stdout
                for stack, venv in STACKS.items()}
    best: dict[str, dict[str, float]] = {stack: {} for stack in STACKS}
    for round_ in range(args.rounds):
        for name in args.benchmarks:
            command, figures = BENCHMARKS[name]
            for stack, venv in STACKS.items():
                out = _run(venv / "bin" / "python", command)
                for figure, read in figures.items():
                    value = read(out)
                    print(f"round {round_ + 1}: {stack} {figure} {value:,.0f}", file=sys.stderr)
                    best[stack][figure] = max(best[stack].get(figure, 0), value)
    ratios = {figure: round(best["current"][figure] / best["named"][figure], 3) for figure in best["named"]}
    print(json.dumps({
        "machine": machine(),
        "benchmark": "stacks",
        "rounds": args.rounds,
        "versions": {stack: json.loads(text) for stack, text in versions.items()},
        "best": best,
        "ratios_current_vs_named": ratios,
        "goal": 0.95,
        "met": all(r >= 0.95 for figure, r in ratios.items() if figure not in NOT_GOALS),
    }, indent=2))


if __name__ == "__main__":
    main()
