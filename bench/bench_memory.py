"""Bytes per embedding row a training worker holds, measured (peak RSS), for each table option.

Each case trains a DeepFM in a fresh process: one big categorical field of R rows beside three
small ones, embedding 16 (so 17 floats a row with the first-order weight), the real optimizers
(deepfm/training/optim.py) and `train_step`, for `--steps` steps of uniformly drawn ids, so that
every row's optimizer state exists by the end. The process's peak resident memory is read at the
end (getrusage). Run at two table sizes, the difference of the peaks over the difference of the
rows is what a row costs, free of the interpreter's, torch's and the MLP's fixed share:

    bytes_per_row = (peak(R_big) - peak(R_small)) / (R_big - R_small)

Cases (train.embedding_optimizer): `adam`, lazy Adam (two moment vectors a row); `rowwise_adagrad`,
one float a row. `ratio_to_adam` is Adam's bytes per row over the case's: how many more rows fit.
`bytes_per_row_estimated` is what the driver's memory check (deepfm/training/memory.py) assumes.

    python bench/bench_memory.py [--rows 1000000 8000000] [--steps 200] [--cases adam rowwise_adagrad]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CASES = ("adam", "rowwise_adagrad")
EMBEDDING_DIM = 16
SMALL_FIELDS = (1_000, 100, 10)


def peak_rss_after_training(case: str, rows: int, steps: int, batch_size: int) -> dict:
    """In this process (a child of main()): build, train `steps` steps, report the peak RSS."""
    import torch

    from deepfm.model import DeepFM, DeepFMConfig
    from deepfm.training.distributed import make_backend
    from deepfm.training.optim import make_optimizers
    from deepfm.training.readers import Batch
    from deepfm.training.train import train_step

    torch.manual_seed(0)
    torch.set_num_threads(1)
    vocab = (rows, *SMALL_FIELDS)
    raw = DeepFM(DeepFMConfig(vocab_sizes=vocab, embedding_dim=EMBEDDING_DIM, hidden=(64, 64), sparse_embeddings=True))
    backend = make_backend("none", "cpu")
    model, optimizers = backend.prepare(raw, make_optimizers(raw, 1e-3, 1e-2, case))
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        ids = torch.stack([torch.randint(0, size, (batch_size,), generator=generator) for size in vocab], 1)
        batch = Batch(ids.int(), torch.zeros(batch_size, 0), torch.randint(0, 2, (batch_size,)).float())
        train_step(model, raw, optimizers, batch, backend)
        for opt in optimizers:
            opt.step()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    return {"case": case, "rows": rows, "peak_rss_bytes": peak, "steps_per_s": round(steps / seconds, 2)}


def measure(case: str, rows: int, steps: int, batch_size: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", case, str(rows), str(steps), str(batch_size)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs=2, default=[1_000_000, 8_000_000], metavar=("SMALL", "BIG"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, rows, steps, batch_size = args.child
        print(json.dumps(peak_rss_after_training(case, int(rows), int(steps), int(batch_size))))
        return

    from machine import machine

    small, big = args.rows
    from deepfm.config import TrainConfig
    from deepfm.training.memory import bytes_per_row

    results = {}
    for case in args.cases:
        low, high = measure(case, small, args.steps, args.batch_size), measure(case, big, args.steps, args.batch_size)
        # What the driver's check (deepfm/training/memory.py) assumes for the same parts
        assumed = TrainConfig(data="-", output="-", embedding_optimizer=case, embedding_l2=0,
                              model={"embedding_dim": EMBEDDING_DIM})
        results[case] = {
            "bytes_per_row": round((high["peak_rss_bytes"] - low["peak_rss_bytes"]) / (big - small), 1),
            "bytes_per_row_estimated": sum(bytes_per_row(assumed, ema=False, centred_prior=False).values()),
            "peak_rss_gib": {str(small): round(low["peak_rss_bytes"] / 2**30, 3),
                             str(big): round(high["peak_rss_bytes"] / 2**30, 3)},
            "steps_per_s": high["steps_per_s"],
        }
    if "adam" in results:
        for figures in results.values():
            figures["ratio_to_adam"] = round(results["adam"]["bytes_per_row"] / figures["bytes_per_row"], 2)
    print(json.dumps({"benchmark": "bench_memory", "machine": machine(), "embedding_dim": EMBEDDING_DIM,
                      "rows": [small, big], "steps": args.steps, "batch_size": args.batch_size,
                      "cases": results}, indent=2))


if __name__ == "__main__":
    main()
