"""What the embedding tables cost a training worker in memory, checked on the driver before any
worker starts: a table that cannot fit ends in one line naming the settings that shrink it, not in
a worker killed by the kernel's OOM killer an hour in (which a scheduler would retry).

Every worker holds every row (data-parallel training replicates the tables). A row is
embedding_dim + 1 floats (the first-order weight rides in the row), and beside it:
  - the tables' optimizer state: lazy Adam two vectors of the row's width, row-wise Adagrad one float;
  - the moving average of the weights (train.ema_decay): a second copy of the row;
  - each value's training frequency (train.model.count_features): one float;
  - the embedding prior (train.embedding_l2): one float, and a copy of the row when it is centred on
    a warm start's rows (train.warm_start_prior earlier).
bench/bench_memory.py measures these figures as peak RSS and prints them beside this estimate.
"""

from __future__ import annotations

import logging
from pathlib import Path

from deepfm.config import TrainConfig
from deepfm.config.base import parse_size
from deepfm.errors import UserError

FLOAT = 4
# The rest of a worker (interpreter, torch, the MLP, batches in flight) needs room too: warn when
# the tables alone take more than this share of a worker's memory.
WARN_SHARE = 0.7

log = logging.getLogger(__name__)


class TablesTooBigError(UserError):
    """The embedding tables cannot fit in a worker's memory."""


def bytes_per_row(cfg: TrainConfig, ema: bool, centred_prior: bool) -> dict[str, float]:
    """A table row's bytes in one worker, part by part. Sharded, a worker holds 1/workers of the
    rows, their optimizer state, average and prior centres; the per-row counts and prior strengths
    stay whole on each."""
    width = (cfg.model.embedding_dim + 1) * FLOAT
    share = 1 / cfg.workers if cfg.embeddings == "sharded" else 1
    stored = width // 2 if cfg.table_precision == "bf16" else width
    parts = {"table": stored * share,
             "optimizer_state": (FLOAT if cfg.embedding_optimizer == "rowwise_adagrad" else 2 * width) * share}
    if ema:
        parts["moving_average"] = width * share
    if cfg.model.count_features:
        parts["value_counts"] = FLOAT
    if cfg.embedding_l2:
        parts["prior"] = FLOAT + (width * share if centred_prior else 0)
    return parts


def available_per_worker(workers: int) -> int | None:
    """Memory each of `workers` processes on this machine may use: what the kernel reports free,
    or the container's limit where lower, shared out. None where neither can be read."""
    free = _meminfo_available()
    limit = _cgroup_limit()
    candidates = [m for m in (free, limit) if m]
    return min(candidates) // max(1, workers) if candidates else None


def check_tables_fit(cfg: TrainConfig, rows: int, ema: bool, centred_prior: bool) -> dict[str, float]:
    """Raise TablesTooBigError when `rows` table rows cannot fit in a worker; warn when they nearly
    fill it. Returns the figures for the log."""
    parts = bytes_per_row(cfg, ema, centred_prior)
    parts = {name: round(size, 1) for name, size in parts.items()}
    per_row = round(sum(parts.values()), 1)
    need = rows * per_row
    if cfg.worker_memory is not None:
        have, source = parse_size(cfg.worker_memory), "train.worker_memory"
    elif cfg.launcher == "local":
        have = available_per_worker(cfg.workers)
        source = f"the memory free on this machine / train.workers={cfg.workers}"
    else:  # Spark's executors: their size is the cluster's, not this machine's
        have, source = None, ""
    figures = {"table_rows": rows, "bytes_per_row": per_row, "tables_gib": round(need / 2**30, 3)}
    if have is None:
        return figures
    figures["worker_gib"] = round(have / 2**30, 3)
    if need > have:
        leaner = ("" if cfg.embedding_optimizer == "rowwise_adagrad" else
                  f"set train.embedding_optimizer=rowwise_adagrad ({per_row:g} -> "
                  f"{per_row - parts['optimizer_state'] + FLOAT:g} bytes a row), ")
        sharded = ("" if cfg.embeddings == "sharded" else
                   "set train.embeddings=sharded with backend torch to split the rows over train.workers, ")
        raise TablesTooBigError(
            f"the embedding tables need {need / 2**30:.2f} GiB in each training worker ({rows:,} rows x {per_row:g} "
            f"bytes: {', '.join(f'{k} {v:g}' for k, v in parts.items())}) but a worker has {have / 2**30:.2f} GiB "
            f"({source}): {leaner}{sharded}lower train.model.embedding_dim, or raise the vocabulary's min_count "
            "(preprocess) to keep fewer rows")
    if need > WARN_SHARE * have:
        log.warning("the embedding tables take %.2f of %.2f GiB a training worker has (%s): little room is left "
                    "for the rest of the worker", need / 2**30, have / 2**30, source)
    return figures


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # "max", or cgroup v1's "unlimited" sentinel
            return int(text)
    return None
