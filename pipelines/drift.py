"""A dated stream of click logs that drifts from day to day, its true click probability known.

`generate.days` N writes N partitions `dt=YYYY-MM-DD/`, each labelled by the teacher of
pipelines/generate.py, changed day by day as logs change (generate.drift):

- Values come and go. A field's values are ranked by popularity (the Zipf law samples a rank), and
  each rank holds a value. Each day a share of the ranks gets a value never seen before, and the
  value it held is gone for good: new tokens take a few % of every field's traffic a day (a value
  with over a tenth of its field's traffic stays).
- Popularity shifts along the long tail. Each value's log-rank takes a normal step a day, so a
  tail value drifts by tens of ranks while the head keeps its order.
- Effects drift slowly. A value's effect belongs to the value, wherever its rank moves:
  w_d(v) = s_f (g(v) cos(a d) + h(v) sin(a d)), with g and h standard normals drawn from the value's
  id, so its effects a day apart correlate cos(a). The teacher's interaction vectors likewise.
  As in the static teacher, a value carries signal while it is among its field's popular ranks.
- One day may be broken, as upstream faults break them: its labels shuffled among its rows, or one
  field missing in every row. `p_true` stays the truth of the row as it was.

A day's rows are seeded by (seed, day, chunk), and its values by the days before it: the same
configuration writes the same stream.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfm.config import DriftConfig, GenerateConfig
from deepfm.storage.commit import committed_directory
from deepfm.storage.files import ARROW_FILES
from pipelines.generate import (
    CAT_NAMES,
    INT_NAMES,
    INTERACTING,
    INTERACTION_DIM,
    INTERACTION_SCALE,
    Teacher,
    criteo_table,
    sigmoid,
    write_tsv,
)

log = logging.getLogger(__name__)
PARTITION = "dt"  # the stream's partition column: output/dt=YYYY-MM-DD/
DOMINANT_SHARE = 0.1


@dataclass
class Day:
    """One day of the stream: the teacher of that day, and which value each rank holds."""

    index: int
    date: str
    teacher: Teacher  # first_order and vectors are this day's, by rank
    # per field: the value id at each rank; the stream's live state, which the next day changes
    values_by_rank: list[np.ndarray]
    first_new_value: np.ndarray  # (NUM_CAT,) per field: ids from here on appeared this day

    def values(self, ranks: np.ndarray) -> np.ndarray:
        """Value ids (-1: missing) of sampled ranks (n, NUM_CAT)."""
        out = np.full(ranks.shape, -1, dtype=np.int64)
        for f, order in enumerate(self.values_by_rank):
            present = ranks[:, f] >= 0
            out[present, f] = order[ranks[present, f]]
        return out


def days(cfg: GenerateConfig) -> Iterator[Day]:
    """The stream's days in order; each is built from the one before it."""
    teacher = Teacher.create(cfg)
    rng = np.random.default_rng([cfg.seed, 0xD21F7])
    orders = [np.arange(card, dtype=np.int64) for card in teacher.cardinalities]
    next_ids = teacher.cardinalities.astype(np.int64)
    # A value with more than a tenth of its field's traffic is not replaced: the day's new traffic
    # then stays near new_value_share, instead of leaping when a field of three values loses one.
    churning = [np.diff(cdf, prepend=0.0) <= DOMINANT_SHARE for cdf in teacher.zipf_cdfs]
    for index, date in enumerate(cfg.day_names()):
        first_new = next_ids.copy()
        if index:
            _move(orders, next_ids, cfg.drift, rng, churning)
        today = _teacher_of_day(teacher, orders, index, cfg)
        # Each day's mean click probability is base_ctr: what changes is which rows click.
        today.bias = today.calibrate_bias(cfg.base_ctr, np.random.default_rng([cfg.seed, 0xB1A5, index]))
        yield Day(index, date, today, orders, first_new)


def generate_stream(cfg: GenerateConfig) -> dict[str, object]:
    """Write the dated stream under cfg.output, atomically. Returns a summary with each day's figures."""
    start = time.perf_counter()
    dest = Path(cfg.output).absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    summary: list[dict[str, object]] = []
    with committed_directory(ARROW_FILES, str(dest), "generate", "generate.output") as building:
        for day in days(cfg):
            summary.append(_write_day(cfg, day, Path(building) / f"{PARTITION}={day.date}"))
            log.info("generated %s: %d rows, CTR %.4f, %.1f%% of values new that day%s", day.date, cfg.rows,
                     summary[-1]["label_rate"], 100 * summary[-1]["new_value_traffic"],
                     f" (broken: {summary[-1]['broken']})" if summary[-1]["broken"] else "")
    return {"output": str(dest), "days": summary, "rows": cfg.rows * len(summary),
            "seconds": round(time.perf_counter() - start, 2)}


def _write_day(cfg: GenerateConfig, day: Day, folder: Path) -> dict[str, object]:
    broken = cfg.drift.broken if cfg.drift.broken_day == day.date else None
    clicks, new_values, present = 0, 0, 0
    chunks = -(-cfg.rows // cfg.rows_per_file)
    for chunk in range(chunks):
        n = min(cfg.rows_per_file, cfg.rows - chunk * cfg.rows_per_file)
        rng = np.random.default_rng([cfg.seed, 0xDA7, day.index, chunk])
        ints, ranks, logit = day.teacher.sample(n, rng)
        p_true = sigmoid(logit)
        label = (rng.random(n) < p_true).astype(np.int8)
        values = day.values(ranks)
        new_values += int((values >= day.first_new_value).sum())
        present += int((values >= 0).sum())
        if broken == "shuffled_labels":
            label = rng.permutation(label)
        elif broken == "empty_field":
            field = cfg.drift.broken_field
            if field in CAT_NAMES:
                values[:, CAT_NAMES.index(field)] = -1
            else:
                ints[:, INT_NAMES.index(field)] = np.nan
        clicks += int(label.sum())
        name = f"part-{chunk:05d}.tsv" + (".gz" if cfg.gzip else "")
        write_tsv(criteo_table(label, ints, values, p_true), folder / name)
    return {"date": day.date, "rows": cfg.rows, "label_rate": clicks / cfg.rows,
            "new_value_traffic": new_values / max(present, 1),
            "broken": f"{broken} ({cfg.drift.broken_field})" if broken == "empty_field" else broken}


def _move(orders: list[np.ndarray], next_ids: np.ndarray, drift: DriftConfig, rng: np.random.Generator,
          churning: list[np.ndarray]) -> None:
    """One day's change of which value holds each rank, in place."""
    for f, order in enumerate(orders):
        n = len(order)
        if drift.popularity_shift:
            steps = np.log1p(np.arange(n)) + rng.normal(0.0, drift.popularity_shift, n)
            order[:] = order[np.argsort(steps, kind="stable")]
        replaced = np.flatnonzero((rng.random(n) < drift.new_value_share) & churning[f])
        order[replaced] = next_ids[f] + np.arange(len(replaced))
        next_ids[f] += len(replaced)


def _teacher_of_day(teacher: Teacher, orders: list[np.ndarray], index: int, cfg: GenerateConfig) -> Teacher:
    """The teacher with each rank's weight and vector those of the value it holds that day."""
    angle = cfg.drift.effect_drift * index
    cos, sin = np.cos(angle), np.sin(angle)
    head = teacher.head
    first_order = np.zeros_like(teacher.first_order)
    vectors = np.zeros_like(teacher.vectors)
    for f, order in enumerate(orders):
        ids = order[:head]
        effect = cos * _normals(cfg.seed, f, ids, 0) + sin * _normals(cfg.seed, f, ids, 1)
        first_order[f, :len(ids)] = teacher.spread[f] * effect
    for k, f in enumerate(INTERACTING):
        ids = orders[f][:head]
        for d in range(INTERACTION_DIM):
            rotated = cos * _normals(cfg.seed, f, ids, 2 + 2 * d) + sin * _normals(cfg.seed, f, ids, 3 + 2 * d)
            vectors[k, :len(ids), d] = INTERACTION_SCALE * rotated
    return dataclasses.replace(teacher, first_order=first_order, vectors=vectors)


def _normals(seed: int, field: int, ids: np.ndarray, component: int) -> np.ndarray:
    """Standard normals that are a function of (seed, field, value id, component) alone (Box-Muller
    over two splitmix64 hashes), so a value keeps its effect whichever rank it holds."""
    key = np.uint64((seed * 1_000_003 + field * 1_009 + component) & 0xFFFFFFFFFFFFFFFF)
    base = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ key
    u1 = (_splitmix64(base) >> np.uint64(11)).astype(np.float64) / 2.0**53
    u2 = (_splitmix64(base ^ np.uint64(0x5851F42D4C957F2D)) >> np.uint64(11)).astype(np.float64) / 2.0**53
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))
