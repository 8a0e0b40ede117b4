"""Quality on the Criteo sample: our DeepFM against DeepCTR-Torch 0.3.0's DeepFM, same split and sizes.

Both read the same preprocessed shards (out/criteo: 80/10/10 split, the same ids), use embedding
size 16 and MLP 400-400-400, Adam at lr 1e-3, batch 256, and keep the epoch with the best
validation AUC (at most 10 epochs, patience 2). Prints JSON with both test AUCs and loglosses.
With --bf16-seeds N it trains ours N times (seeds 2017, 2018, ...) in fp32 and in bf16 instead and
prints each precision's test AUC as mean and spread with the paired differences: a 989-row test
split cannot separate two settings on one seed.
With --splits N it instead re-splits the sample N times (dataset.split.seed 2017, 2018, ...: N
different 80/10/10 train/valid/test splits, preprocessed anew) and trains on each with the
project's default train: settings (conf/base.yaml + conf/datasets/criteo.yaml) and with the
previous defaults (plain Adam at lr 1e-3, no prior, no averaging), printing each one's test AUC as
mean and spread and the paired differences. --set key=value changes the defaults' run (exploring).
    python bench/compare_criteo.py [--data out/criteo] [--bf16-seeds 5] [--splits 5 [--set train.lr=1e-3]]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import machine  # noqa: E402

from deepfm.config import TrainConfig  # noqa: E402
from deepfm.features.preprocess_output import PreprocessOutput  # noqa: E402
from deepfm.training.launch import run_training  # noqa: E402
from deepfm.training.metrics import binary_metrics  # noqa: E402
from deepfm.training.readers import InMemoryReader  # noqa: E402

EMBEDDING, HIDDEN, LR, BATCH, EPOCHS, PATIENCE, SEED = 16, [400, 400, 400], 1e-3, 256, 10, 2, 2017


def ours(data: Path, out: Path, seed: int = SEED, precision: str = "fp32") -> dict:
    cfg = TrainConfig.model_validate({
        "data": str(data), "output": str(out), "epochs": EPOCHS, "batch_size": BATCH, "lr": LR,
        "early_stopping_patience": PATIENCE, "seed": seed, "precision": precision,
        "model": {"embedding_dim": EMBEDDING, "hidden": HIDDEN},
    })
    result = run_training(cfg).result
    return {**result.test, "epochs": result.epochs, "valid_auc_best": result.valid_auc_best}


def bf16_against_fp32(data: Path, seeds: int) -> dict:
    aucs: dict[str, list[float]] = {"fp32": [], "bf16": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(SEED, SEED + seeds):
            for precision in aucs:
                aucs[precision].append(ours(data, Path(tmp) / f"{precision}-{seed}", seed, precision)["auc"])
    differences = np.array(aucs["bf16"]) - np.array(aucs["fp32"])
    return {"benchmark": "criteo_sample_bf16", "seeds": seeds, "test_auc": {
        precision: {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v, ddof=1)), 4),
                    "each": [round(a, 4) for a in v]} for precision, v in aucs.items()},
        "bf16_minus_fp32": {"mean": round(float(differences.mean()), 4),
                            "max_abs": round(float(np.abs(differences).max()), 4)},
        "within_0.002": bool(abs(differences.mean()) <= 0.002)}


PLAIN = {"lr": 1e-3, "embedding_lr": 1e-3, "embedding_optimizer": "adam", "embedding_l2": 0.0,
         "embedding_l2_rarity_exponent": 0.0, "ema_decay": 0.0}
CRITEO_CONF = [str(ROOT / "conf" / name) for name in ("base.yaml", "datasets/criteo.yaml")]


def defaults_over_splits(splits: int, overrides: list[str]) -> dict:
    from deepfm.config import load_config

    aucs: dict[str, list[float]] = {"defaults": [], "plain": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(SEED, SEED + splits):
            data = Path(tmp) / f"split-{seed}"
            conf = [arg for path in CRITEO_CONF for arg in ("--conf", path)]
            subprocess.run([sys.executable, "-m", "jobs.cli", "preprocess", *conf,
                            "--set", f"dataset.split.seed={seed}", "--set", f"preprocess.output={data}"],
                           cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            defaults = load_config(CRITEO_CONF, [f"train.data={data}", f"train.output={tmp}/d-{seed}",
                                                 "tracking.enabled=false", *overrides]).train
            plain = defaults.model_copy(update={**PLAIN, "output": f"{tmp}/p-{seed}"})
            for name, cfg in (("defaults", defaults), ("plain", plain)):
                aucs[name].append(run_training(cfg).result.test["auc"])
    differences = np.array(aucs["defaults"]) - np.array(aucs["plain"])
    return {"benchmark": "criteo_sample_defaults_over_splits", "splits": splits, "overrides": overrides,
            "test_auc": {name: {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v, ddof=1)), 4),
                                "each": [round(a, 4) for a in v]} for name, v in aucs.items()},
            "defaults_minus_plain": {"mean": round(float(differences.mean()), 4),
                                     "standard_error": round(float(differences.std(ddof=1) / np.sqrt(splits)), 4),
                                     "each": [round(float(d), 4) for d in differences]}}


def _arrays(data: Path, split: str, fmap):
    reader = InMemoryReader(data / split, fmap, 1 << 30, shuffle=False, drop_remainder=False)
    return reader.ids.numpy().astype(np.int64), reader.label.numpy()


def deepctr(data: Path) -> dict:
    import torch
    from deepctr_torch.inputs import SparseFeat
    from deepctr_torch.models import DeepFM

    fmap = PreprocessOutput.open(data).feature_map
    names = [f.name for f in fmap.categorical]
    columns = [SparseFeat(f.name, vocabulary_size=f.vocab_size, embedding_dim=EMBEDDING) for f in fmap.categorical]
    splits = {s: _arrays(data, s, fmap) for s in ("train", "valid", "test")}
    feed = {s: {n: ids[:, j] for j, n in enumerate(names)} for s, (ids, _) in splits.items()}
    torch.manual_seed(SEED)
    model = DeepFM(columns, columns, dnn_hidden_units=tuple(HIDDEN), seed=SEED, device="cpu")
    model.compile(torch.optim.Adam(model.parameters(), lr=LR), "binary_crossentropy")
    best, best_test, waited, epochs = -1.0, None, 0, 0
    for _ in range(EPOCHS):
        model.fit(feed["train"], splits["train"][1], batch_size=BATCH, epochs=1, verbose=0, shuffle=True)
        epochs += 1
        valid = binary_metrics(splits["valid"][1], model.predict(feed["valid"], batch_size=65536).ravel())
        if valid["auc"] > best:
            best, waited = valid["auc"], 0
            best_test = binary_metrics(splits["test"][1], model.predict(feed["test"], batch_size=65536).ravel())
        else:
            waited += 1
            if waited > PATIENCE:
                break
    return {**best_test, "epochs": epochs, "valid_auc_best": best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "out" / "criteo")
    parser.add_argument("--bf16-seeds", type=int, default=0,
                        help="train ours in fp32 and bf16 on this many seeds instead of comparing with DeepCTR-Torch")
    parser.add_argument("--splits", type=int, default=0,
                        help="train the defaults and plain Adam on this many re-splits of the sample instead")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="with --splits: a setting for the defaults' run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.splits:
        print(json.dumps({"machine": machine(), **defaults_over_splits(args.splits, args.set)}, indent=2))
        return
    if not (args.data / "_SUCCESS").exists():
        subprocess.run([sys.executable, "-m", "jobs.cli", "preprocess", "--set", f"preprocess.output={args.data}"],
                       cwd=ROOT, check=True)
    if args.bf16_seeds:
        print(json.dumps({"machine": machine(), **bf16_against_fp32(args.data, args.bf16_seeds)}, indent=2))
        return
    with tempfile.TemporaryDirectory() as tmp:
        mine = ours(args.data, Path(tmp) / "model")
    theirs = deepctr(args.data)
    print(json.dumps({"machine": machine(), "benchmark": "criteo_sample_quality", "embedding_dim": EMBEDDING,
                      "hidden": HIDDEN,
                      "ours": mine, "deepctr_torch_0.3.0": theirs,
                      "auc_difference": round(mine["auc"] - theirs["auc"], 4),
                      "at_least_as_good": mine["auc"] >= theirs["auc"]}, indent=2))


if __name__ == "__main__":
    main()
