"""Continual training on a drifting stream: what warm start buys against training from scratch.

The drifting stream (pipelines/drift.py) is generated for --days days with the same seed. For each
day from the second on, three ways of training that day's model, each then judged on the next day's
logs (progressive validation: a model is always judged on the day after its training data):
  (a) scratch_day     from scratch on that day alone
  (b) scratch_window  from scratch on the last --window days (fewer at the stream's start)
  (c) warm_day        warm-started from the previous day's (c) model, trained on that day alone, as
                      conf/schedule/daily.yaml runs it: train.warm_start latest, and the vocabulary
                      keeping the values the previous model knows (preprocess.vocab.keep_values_of)
plus the oracle: the teacher's true click probability, the best AUC any model can reach there.
Every stage runs as the pipeline runs it (one SparkSession): preprocess, train (a model root per
way, versions named by date), and the score job on the next day's raw logs.
The warm way runs behind the promotion gate (promote.gate, as the daily schedule does): the model
judged on the next day is the one serving (LATEST) after that day's gate. --broken-day D plants a
day of shuffled labels; the gate's decision on every day is reported.
Goal (issue 25): (c) within 0.002 of (b) in mean next-day AUC, processing at most 1/3 of (b)'s
samples, and above (a); the gate turns the broken day down and passes every other.
    python bench/continual.py [--days 9] [--rows 50000] [--window 7] [--work out/bench/continual]
                              [--train-set KEY=VALUE ...] [--ways warm_day ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
from sklearn.metrics import log_loss, roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import machine  # noqa: E402

from deepfm.config import GenerateConfig, PromoteConfig, load_config  # noqa: E402
from deepfm.errors import PromotionRejected  # noqa: E402
from deepfm.features.preprocess_output import PreprocessOutput  # noqa: E402
from deepfm.training.launch import run_training  # noqa: E402
from deepfm.training.model_versions import ModelRoot  # noqa: E402
from pipelines.drift import PARTITION, generate_stream  # noqa: E402
from pipelines.generate import CRITEO_COLUMNS  # noqa: E402
from pipelines.preprocess import run_preprocess  # noqa: E402
from pipelines.score import run_score  # noqa: E402
from pipelines.spark import get_spark  # noqa: E402

CONF = [ROOT / "conf" / name for name in ("base.yaml", "datasets/drifting.yaml", "env/local.yaml")]
WAYS = {"scratch_day": "none", "scratch_window": "none", "warm_day": "latest"}  # train.warm_start
SHARDS = {"scratch_day": "day", "scratch_window": "window", "warm_day": "warm"}  # the preprocess output each reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=9)
    parser.add_argument("--rows", type=int, default=50_000, help="rows a day")
    parser.add_argument("--window", type=int, default=7)
    parser.add_argument("--cardinality-scale", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "bench" / "continual")
    parser.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a train setting for all three ways, e.g. train.epochs=3")
    parser.add_argument("--broken-day", help="a date whose labels are shuffled (generate.drift.broken_day)")
    parser.add_argument("--ways", nargs="+", choices=list(WAYS), default=list(WAYS),
                        help="the ways to run (all three for the goal; one, to try a setting of it)")
    args = parser.parse_args()
    ways = {way: WAYS[way] for way in args.ways}

    raw = args.work / "raw"
    stream = GenerateConfig(output=str(raw), rows=args.rows, days=args.days, seed=args.seed,
                            cardinality_scale=args.cardinality_scale, rows_per_file=args.rows,
                            drift={"broken_day": args.broken_day, "broken": "shuffled_labels"})
    if args.work.exists():
        shutil.rmtree(args.work)
    generated = generate_stream(stream)
    dates = stream.day_names()
    base = load_config(CONF, args.train_set)
    spark = get_spark(base.spark, "bench-continual")
    days: list[dict] = []
    started = time.perf_counter()
    for i, date in enumerate(dates[:-1]):  # the last day only judges the day before's models
        window = dates[max(0, i - args.window + 1):i + 1]
        inputs = {"scratch_day": [date], "scratch_window": window, "warm_day": [date]}
        trained = {}
        for way, warm_start in ways.items():
            models = args.work / "models" / way
            data = args.work / "shards" / SHARDS[way] / date
            if not data.exists():
                _preprocess(spark, raw, inputs[way], data,
                            [f"preprocess.vocab.keep_values_of={models}"] if warm_start == "latest" else [])
            train = base.train.model_copy(update={"data": str(data), "output": str(models), "warm_start": warm_start})
            gated = warm_start == "latest"
            try:
                result = run_training(train, run_date=date, promote=PromoteConfig(gate=gated))
                decision = result.promotion.decision if result.promotion else None
            except PromotionRejected as rejected:
                result, decision = rejected.trained, "rejected"
            trained[way] = {"model": str(models / ModelRoot.of(models).latest()),  # the version serving
                            "epochs": result.result.epochs, "gate": decision,
                            "samples": result.result.epochs * PreprocessOutput.open(data).rows("train")}
        if i == 0:
            continue
        following = dates[i + 1]
        day = {"trained_on": date, "judged_on": following, "oracle_auc": _oracle_auc(raw, following)}
        for way, model in trained.items():
            day[way] = {**_next_day(spark, base, model["model"], raw, following, args.work / "scores" / way / date),
                        "epochs": model["epochs"], "samples": model["samples"],
                        **({"gate": model["gate"]} if model["gate"] else {})}
        days.append(day)
        print(json.dumps(day), file=sys.stderr, flush=True)

    mean = {way: float(np.mean([d[way]["auc"] for d in days])) for way in ways}
    samples = {way: int(sum(d[way]["samples"] for d in days)) for way in ways}
    compared = {}
    if len(ways) == len(WAYS):
        compared = {
            "warm_minus_window_auc": round(mean["warm_day"] - mean["scratch_window"], 5),
            "warm_minus_day_auc": round(mean["warm_day"] - mean["scratch_day"], 5),
            "warm_over_window_samples": round(samples["warm_day"] / samples["scratch_window"], 3),
            "goal_met": bool(mean["warm_day"] >= mean["scratch_window"] - 0.002
                             and samples["warm_day"] <= samples["scratch_window"] / 3
                             and mean["warm_day"] > mean["scratch_day"])}
    gated = [d for d in days if "warm_day" in d]
    print(json.dumps({
        "benchmark": "continual", "machine": machine(), "days": args.days, "rows_per_day": args.rows,
        "window": args.window, "cardinality_scale": args.cardinality_scale, "train_set": args.train_set,
        "new_value_traffic": [round(d["new_value_traffic"], 4) for d in generated["days"]],
        "broken_day": args.broken_day,
        "gate": {d["trained_on"]: d["warm_day"].get("gate") for d in gated},
        "gate_turned_down_exactly_the_broken_day": all(
            (d["warm_day"].get("gate") == "rejected") == (d["trained_on"] == args.broken_day) for d in gated),
        "per_day": days,
        "mean_next_day_auc": {**{k: round(v, 5) for k, v in mean.items()},
                              "oracle": round(float(np.mean([d["oracle_auc"] for d in days])), 5)},
        "samples": samples,
        **compared,
        "seconds": round(time.perf_counter() - started, 1),
    }, indent=2))
    spark.stop()


def _preprocess(spark, raw: Path, dates: list[str], out: Path, settings: list[str]) -> None:
    days = dates[0] if len(dates) == 1 else "{" + ",".join(dates) + "}"
    cfg = load_config(CONF, [f"dataset.input.path={raw}/{PARTITION}={days}", f"preprocess.output={out}", *settings])
    run_preprocess(spark, cfg)


def _next_day(spark, base, model: str, raw: Path, date: str, out: Path) -> dict:
    """The score job on the next day's raw logs with the model; AUC, logloss and calibration."""
    cfg = base.model_copy(update={"score": base.score.model_copy(update={
        "model": model, "input_path": f"{raw}/{PARTITION}={date}", "output": str(out)})})
    run_score(spark, cfg, run_date=date)
    scored = ds.dataset(out / f"run_date={date}", format="parquet").to_table(columns=["label", "probability"])
    label, probability = scored.column("label").to_numpy(), scored.column("probability").to_numpy()
    return {"auc": round(float(roc_auc_score(label, probability)), 5),
            "logloss": round(float(log_loss(label, np.clip(probability, 1e-7, 1 - 1e-7))), 5),
            "calibration": round(float(probability.mean() / label.mean()), 4)}


def _oracle_auc(raw: Path, date: str) -> float:
    """The AUC of the teacher's true click probability on the day's rows."""
    frames = [pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=list(CRITEO_COLUMNS)),
                             parse_options=pacsv.ParseOptions(delimiter="\t"),
                             convert_options=pacsv.ConvertOptions(include_columns=["label", "p_true"]))
              for path in sorted((raw / f"{PARTITION}={date}").glob("part-*"))]
    label = np.concatenate([f.column("label").to_numpy() for f in frames])
    p_true = np.concatenate([f.column("p_true").to_numpy() for f in frames])
    return round(float(roc_auc_score(label, p_true)), 5)


if __name__ == "__main__":
    main()
