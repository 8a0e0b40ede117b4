"""Quality on synthetic data: model AUC against the best achievable AUC, and 2 workers against 1.

The generator writes the hidden teacher's click probability (`p_true`) beside every row; its AUC
on the test rows is the best any model can reach. Trains on 1M synthetic rows (800k train) with
1 worker and with 2 workers at the same global batch, and prints JSON with the gaps.
Targets: model AUC within 0.005 of the true-probability AUC; 2 workers within 0.002 of 1 worker.
    python bench/quality_synthetic.py [--data out/bench/shards_1000000] [--backend torch]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deepfm.config import TrainConfig  # noqa: E402
from deepfm.launch import run_training  # noqa: E402

GLOBAL_BATCH = 4096


def true_auc(data: Path) -> float:
    test = ds.dataset(data / "test").to_table(columns=["label", "p_true"])
    return float(roc_auc_score(test.column("label").to_numpy(), test.column("p_true").to_numpy()))


def train(data: Path, out: Path, workers: int, backend: str, epochs: int, lr: float) -> dict:
    cfg = TrainConfig.model_validate({
        "data": str(data), "output": str(out), "workers": workers,
        "backend": backend if workers > 1 else "none", "batch_size": GLOBAL_BATCH // workers,
        "epochs": epochs, "lr": lr, "early_stopping_patience": 1, "seed": 7,
        "model": {"embedding_dim": 16, "hidden": [400, 400, 400]},
    })
    result = run_training(cfg)
    return {"workers": workers, "test_auc": result["test"]["auc"], "test_logloss": result["test"]["logloss"],
            "epochs": result["epochs"], "seconds_per_epoch": [round(800_000 / h["samples_per_s"], 1)
                                                             for h in result["history"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "out" / "bench" / "shards_1000000")
    parser.add_argument("--backend", default="torch", choices=["torch", "horovod"])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "quality")
    args = parser.parse_args()
    if not (args.data / "_SUCCESS").exists():
        subprocess.run([sys.executable, "bench/bench_preprocess.py", "--sizes", "1000000"], cwd=ROOT, check=True)
    best = true_auc(args.data)
    one = train(args.data, args.out / "w1", 1, args.backend, args.epochs, args.lr)
    two = train(args.data, args.out / "w2", 2, args.backend, args.epochs, args.lr)
    print(json.dumps({
        "benchmark": "synthetic_quality", "data": str(args.data), "true_probability_test_auc": best,
        "one_worker": one, "two_workers": {**two, "backend": args.backend},
        "gap_to_true_auc": round(best - one["test_auc"], 4),
        "two_vs_one_worker_auc": round(two["test_auc"] - one["test_auc"], 4),
        "within_0.005_of_true": best - one["test_auc"] <= 0.005,
        "two_workers_within_0.002": abs(two["test_auc"] - one["test_auc"]) <= 0.002,
    }, indent=2))


if __name__ == "__main__":
    main()
