"""Synthetic click logs at any scale, labelled by a hidden teacher whose click probability is known.

`criteo` mode writes Criteo-shaped TSV (label, I1-I13, C1-C26) plus a 41st column `p_true`, the
teacher's click probability, so that the best achievable AUC on any rows is known.
`joined` mode writes impressions, click events and an item side table that must be joined back
together to recover the label (clicks arrive late, twice, outside the window, or for no known
impression, as in real logs).

The teacher: logit = bias + per-value weights of every field's popular ("head") values
+ a smooth effect of every log-count + planted pairwise interactions: a factorization machine
over 20 of the categorical fields (every pair of them adds the dot product of its two values'
4-dim vectors). A planted structure that DeepFM's model class contains, so the gap between a
trained model and the teacher measures learning, not a mismatch of forms. Categorical values
follow a truncated Zipf law over cardinalities from a few to ~10M. Only a field's popular values
carry signal (at most its top 400, and only those in at least 1 row in 1,000); the long tail
carries none, as in real logs. So the planted signal can be learned from ~1M rows: the teacher's
own parametric form, fitted on 800k rows, comes within 0.004 AUC of the teacher (with every top-400
value carrying signal it stayed 0.009 short, too few rows per value).

The `long_tail` teacher (generate.teacher) is the harder case real logs pose: every value seen in
at least 2 rows in 100,000 (about 20 in 1M rows, up to 20,000 values a field) carries signal of the
same strength as a popular one, in fields of at most 1M values, so a model must learn thousands of
values per field from tens of rows each. Rows are made in seeded chunks: any chunk can be
regenerated alone, and 45M rows stream through in bounded memory.

A family of teachers (issue 26) builds on the long-tail one, each adding one structure real logs
have and the others lack, so that defaults are judged on more than one form of data:
- `field_pairs`: the pairwise term is field-pair specific (FFM-style): value x of field f meets
  field g with a vector of its own for g, <v(f, x, g), v(g, y, f)>, which shared embeddings hold
  only approximately;
- `heavy_tail`: flatter Zipf tails, and signal in values down to 1 row in 100,000 (about 10 in 1M
  rows), up to 50,000 values a field;
- `numeric_cross`: beside the shared effects, six categorical fields change the slope of a
  numeric field's effect per value (numeric x categorical);
- `triples`: three strong crosses of three small fields each, one effect per combination of their
  top 10 values, which no sum of pairs can express.
Every teacher's effects are functions of (field, rank); a value left out (rank -1) adds nothing.
So the "learnable" reference of issue 26, the teacher with the effects of values seen fewer than k
times in train zeroed, is `teacher.logit(ints, ranks with those values set to -1)`;
`decode_ranks` turns the logs' tokens back into ranks to count and mask them.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from deepfm.config import GenerateConfig
from deepfm.storage.commit import committed_directory
from deepfm.storage.files import ARROW_FILES

log = logging.getLogger(__name__)

# Cardinalities of the 26 categorical fields of the real Criteo Kaggle data.
CRITEO_CARDINALITIES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)
# Approximate missing rates of C1-C26 and I1-I13 in the real data.
CAT_MISSING = (0, 0, .03, .03, 0, .12, 0, 0, 0, .03, 0, .03, 0, 0, 0, .03, 0, 0, .44, .44, .03, .76, 0, .03, .44, .44)
INT_MISSING = (.45, 0, .21, .22, .03, .22, .04, 0, .04, .45, .04, .77, .22)
NUM_INT, NUM_CAT = 13, 26
HEAD = 400  # at most this many values of a field carry signal: its most popular ones
SIGNAL_MIN_SHARE = 1e-3  # ... and only those in at least this share of rows
# The long-tail teacher's: up to 20,000 values a field, down to ~20 rows in 1M, fields <= 1M values.
LONG_TAIL_HEAD, LONG_TAIL_MIN_SHARE, LONG_TAIL_MAX_CARDINALITY = 20_000, 2e-5, 1_000_000
INTERACTION_DIM = 4
INTERACTING = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 18, 19, 22, 24)
INTERACTION_SCALE = 0.26  # the interactions' logit spread is then ~1.6, like the first-order terms'
# heavy_tail: fields' Zipf exponents this much lower, and signal down to 1 row in 100,000.
HEAVY_TAIL_HEAD, HEAVY_TAIL_MIN_SHARE, HEAVY_TAIL_FLATTER = 50_000, 1e-5, 0.1
# numeric_cross: (categorical field, numeric field) pairs whose slope depends on the categorical value.
NUMERIC_CROSSES = ((0, 0), (2, 2), (7, 4), (10, 6), (13, 9), (15, 10))
NUMERIC_CROSS_SCALE = 0.5
# triples: three fields each of small cardinality (C6, C14, C17; C5, C22, C23; C9, C20, C25), crossed
# over their top TRIPLE_TOP values.
TRIPLES = ((5, 13, 16), (4, 21, 22), (8, 19, 24))
TRIPLE_TOP, TRIPLE_SCALE = 10, 0.6
TEACHER_FAMILY = ("long_tail", "field_pairs", "heavy_tail", "numeric_cross", "triples")
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)

INT_NAMES = tuple(f"I{i}" for i in range(1, NUM_INT + 1))
CAT_NAMES = tuple(f"C{i}" for i in range(1, NUM_CAT + 1))
CRITEO_COLUMNS = ("label", *INT_NAMES, *CAT_NAMES, "p_true")
ITEM_CATEGORIES, ITEM_BRANDS = 40, 600


@dataclass
class Teacher:
    """The hidden model that labels every row. Built from the seed alone."""

    cardinalities: np.ndarray
    zipf_cdfs: list[np.ndarray]
    signal_values: np.ndarray  # (NUM_CAT,) how many of each field's top values carry signal
    first_order: np.ndarray  # (NUM_CAT, head)
    vectors: np.ndarray  # (len(INTERACTING), head, INTERACTION_DIM)
    int_scale: np.ndarray
    int_center: np.ndarray
    int_mu: np.ndarray
    int_sigma: np.ndarray
    item_weights: tuple[np.ndarray, np.ndarray]
    spread: np.ndarray  # (NUM_CAT,) the standard deviation of each field's first-order weights
    bias: float = 0.0
    # field_pairs: (len(INTERACTING), head, len(INTERACTING), INTERACTION_DIM), replacing `vectors`
    pair_vectors: np.ndarray | None = None
    numeric_slopes: np.ndarray | None = None  # numeric_cross: (len(NUMERIC_CROSSES), head)
    triple_effects: np.ndarray | None = None  # triples: (len(TRIPLES), TRIPLE_TOP ** 3)

    @property
    def head(self) -> int:
        """The most values a field has that carry signal (the size of the weight tables)."""
        return self.first_order.shape[1]

    @classmethod
    def create(cls, cfg: GenerateConfig) -> Teacher:
        rng = np.random.default_rng([cfg.seed, 0xC0FFEE])
        cards = np.maximum(2, np.round(np.array(CRITEO_CARDINALITIES) * cfg.cardinality_scale)).astype(np.int64)
        head, min_share = HEAD, SIGNAL_MIN_SHARE
        if cfg.teacher != "head":
            head, min_share = LONG_TAIL_HEAD, LONG_TAIL_MIN_SHARE
            cards = np.minimum(cards, LONG_TAIL_MAX_CARDINALITY)
        if cfg.teacher == "heavy_tail":
            head, min_share = HEAVY_TAIL_HEAD, HEAVY_TAIL_MIN_SHARE
        # Big fields have long flat tails, small ones a few dominant values (as in the real data).
        exponents = np.clip(1.05 + 0.2 * np.maximum(0, 6 - np.log10(cards)), 1.05, 1.9)
        exponents += rng.uniform(-0.03, 0.03, NUM_CAT)
        if cfg.teacher == "heavy_tail":
            exponents = np.maximum(exponents - HEAVY_TAIL_FLATTER, 1.0)
        cdfs = [_zipf_cdf(int(k), float(s)) for k, s in zip(cards, exponents, strict=True)]
        spread = rng.uniform(0.15, 0.6, NUM_CAT)[:, None]
        teacher = cls(
            cardinalities=cards,
            zipf_cdfs=cdfs,
            signal_values=np.array([min(head, int((np.diff(cdf, prepend=0.0) >= min_share).sum()))
                                    for cdf in cdfs]),
            first_order=rng.standard_normal((NUM_CAT, head)) * spread,
            vectors=rng.standard_normal((len(INTERACTING), head, INTERACTION_DIM)) * INTERACTION_SCALE,
            int_scale=rng.uniform(0.1, 0.5, NUM_INT) * rng.choice([-1, 1], NUM_INT),
            int_center=rng.uniform(0.5, 3.0, NUM_INT),
            int_mu=rng.uniform(0.3, 3.5, NUM_INT),
            int_sigma=rng.uniform(0.6, 1.6, NUM_INT),
            item_weights=(rng.standard_normal(ITEM_CATEGORIES) * 0.4, rng.standard_normal(ITEM_BRANDS) * 0.2),
            spread=spread[:, 0],
        )
        # The family's structures come from a generator of their own: the base teacher's draws stay as they were.
        extra = np.random.default_rng([cfg.seed, 0xFA111])
        if cfg.teacher == "field_pairs":
            teacher.vectors = np.zeros_like(teacher.vectors)
            teacher.pair_vectors = (extra.standard_normal((len(INTERACTING), head, len(INTERACTING), INTERACTION_DIM),
                                                          dtype=np.float32) * INTERACTION_SCALE)
        elif cfg.teacher == "numeric_cross":
            teacher.numeric_slopes = extra.standard_normal((len(NUMERIC_CROSSES), head)) * NUMERIC_CROSS_SCALE
        elif cfg.teacher == "triples":
            teacher.triple_effects = extra.standard_normal((len(TRIPLES), TRIPLE_TOP ** 3)) * TRIPLE_SCALE
        teacher.bias = teacher.calibrate_bias(cfg.base_ctr, np.random.default_rng([cfg.seed, 0xB1A5]))
        return teacher

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ints (n,13) float with NaN missing, cat ranks (n,26) with -1 missing, logit (n,))."""
        ints = np.floor(np.exp(rng.normal(self.int_mu, self.int_sigma, (n, NUM_INT)))) - 1
        ints[:, 1] -= rng.integers(0, 3, n)  # I2 goes negative, as in the real data
        ints[rng.random((n, NUM_INT)) < np.array(INT_MISSING)] = np.nan
        ranks = np.empty((n, NUM_CAT), dtype=np.int64)
        for f in range(NUM_CAT):
            ranks[:, f] = np.searchsorted(self.zipf_cdfs[f], rng.random(n), side="right")
        ranks[rng.random((n, NUM_CAT)) < np.array(CAT_MISSING)] = -1
        return ints, ranks, self.logit(ints, ranks)

    def logit(self, ints: np.ndarray, ranks: np.ndarray) -> np.ndarray:
        head = (ranks >= 0) & (ranks < self.signal_values)
        idx = np.where(head, ranks, 0)
        out = np.full(len(ranks), self.bias)
        for f in range(NUM_CAT):
            out += np.where(head[:, f], self.first_order[f, idx[:, f]], 0.0)
        logs = np.log1p(np.maximum(np.nan_to_num(ints, nan=0.0), 0))
        effect = self.int_scale * np.tanh(logs - self.int_center)
        out += np.where(np.isnan(ints), 0.0, effect).sum(1)
        # sum over pairs <v_f, v_g> = ((sum_f v_f)^2 - sum_f v_f^2) / 2, absent or tail values adding 0
        total = np.zeros((len(ranks), INTERACTION_DIM))
        squares = np.zeros(len(ranks))
        for k, f in enumerate(INTERACTING):
            v = np.where(head[:, f, None], self.vectors[k][idx[:, f]], 0.0)
            total += v
            squares += (v ** 2).sum(1)
        out += 0.5 * ((total ** 2).sum(1) - squares)
        if self.pair_vectors is not None:
            for a, b in itertools.combinations(range(len(INTERACTING)), 2):
                f, g = INTERACTING[a], INTERACTING[b]
                both = head[:, f] & head[:, g]
                meet = (self.pair_vectors[a, idx[:, f], b] * self.pair_vectors[b, idx[:, g], a]).sum(1)
                out += np.where(both, meet, 0.0)
        if self.numeric_slopes is not None:
            for k, (f, i) in enumerate(NUMERIC_CROSSES):
                shape = np.tanh(np.log1p(np.maximum(np.nan_to_num(ints[:, i], nan=0.0), 0)) - self.int_center[i])
                out += np.where(head[:, f] & ~np.isnan(ints[:, i]), self.numeric_slopes[k, idx[:, f]] * shape, 0.0)
        if self.triple_effects is not None:
            cells = triple_cells(ranks)
            for k in range(len(TRIPLES)):
                top = cells[:, k] < TRIPLE_TOP ** 3
                out += np.where(top, self.triple_effects[k, np.where(top, cells[:, k], 0)], 0.0)
        return out

    def calibrate_bias(self, base_ctr: float, rng: np.random.Generator) -> float:
        """The bias at which the mean click probability equals base_ctr (bisection)."""
        self.bias = 0.0
        _, _, logit = self.sample(200_000, rng)
        lo, hi = -10.0, 10.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if sigmoid(logit + mid).mean() < base_ctr else (lo, mid)
        return (lo + hi) / 2


def triple_cells(ranks: np.ndarray) -> np.ndarray:
    """(n, len(TRIPLES)): each row's cell of every three-field cross, or TRIPLE_TOP ** 3 where one of
    its values is outside its field's top TRIPLE_TOP."""
    cells = np.full((len(ranks), len(TRIPLES)), TRIPLE_TOP ** 3)
    for k, fields in enumerate(TRIPLES):
        top = np.all([(ranks[:, f] >= 0) & (ranks[:, f] < TRIPLE_TOP) for f in fields], axis=0)
        cell = sum(np.maximum(ranks[:, f], 0) * TRIPLE_TOP ** j for j, f in enumerate(fields))
        cells[top, k] = cell[top]
    return cells


def generate(cfg: GenerateConfig) -> dict[str, object]:
    """Write the synthetic data set under cfg.output, atomically. Returns a summary."""
    start = time.perf_counter()
    teacher = Teacher.create(cfg)
    chunks = -(-cfg.rows // cfg.rows_per_file)
    dest = Path(cfg.output).absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    clicks = 0
    with committed_directory(ARROW_FILES, str(dest), "generate", "generate.output") as building:
        tmp = Path(building)
        for chunk in range(chunks):
            n = min(cfg.rows_per_file, cfg.rows - chunk * cfg.rows_per_file)
            rng = np.random.default_rng([cfg.seed, chunk])
            ints, ranks, logit = teacher.sample(n, rng)
            if cfg.mode == "joined":
                logit, items = _with_items(teacher, logit, rng)
            p_true = sigmoid(logit)
            label = (rng.random(n) < p_true).astype(np.int8)
            clicks += int(label.sum())
            name = f"part-{chunk:05d}.tsv" + (".gz" if cfg.gzip else "")
            if cfg.mode == "criteo":
                write_tsv(criteo_table(label, ints, ranks, p_true), tmp / name)
            else:
                _write_joined_chunk(tmp, name, chunk, n, label, ints, ranks, teacher, items, p_true, rng, cfg)
            log.info("generated %d / %d rows (%.0f rows/s)", chunk * cfg.rows_per_file + n, cfg.rows,
                     (chunk * cfg.rows_per_file + n) / (time.perf_counter() - start))
        if cfg.mode == "joined":
            write_tsv(_items_table(teacher), tmp / "items" / "items.tsv", header=True)
    return {"output": str(dest), "rows": cfg.rows, "files": chunks, "label_rate": clicks / cfg.rows,
            "seconds": round(time.perf_counter() - start, 2)}


# ----------------------------------------------------------------------------------------- columns
def criteo_table(label, ints, values, p_true) -> pa.Table:
    """The Criteo columns; `values` (n, 26) are the categorical values' ids (-1: missing), each
    written as its token."""
    columns = {"label": pa.array(label)}
    columns.update(_int_columns(ints))
    columns.update(_cat_columns(values, range(NUM_CAT)))
    columns["p_true"] = pa.array(p_true.astype(np.float32))
    return pa.table(columns)


def _int_columns(ints: np.ndarray, count: int = NUM_INT) -> dict[str, pa.Array]:
    return {
        name: pa.array(np.nan_to_num(ints[:, i]).astype(np.int64), mask=np.isnan(ints[:, i]))
        for i, name in enumerate(INT_NAMES[:count])
    }


def _cat_columns(ranks: np.ndarray, fields) -> dict[str, pa.Array]:
    return {CAT_NAMES[f]: _hex_tokens(ranks[:, f], salt=f) for f in fields}


_TOKEN_MULTIPLIER = 2654435761
_TOKEN_INVERSE = pow(_TOKEN_MULTIPLIER, -1, 1 << 32)  # the multiplier is odd: invertible modulo 2^32


def decode_ranks(tokens: pa.Array | pa.ChunkedArray, field: int) -> np.ndarray:
    """The ranks of a categorical field's tokens as the logs hold them (-1: missing): `_hex_tokens` undone."""
    text = pa.chunked_array([tokens]) if isinstance(tokens, pa.Array) else tokens
    missing = text.is_null().to_numpy(zero_copy_only=False)
    chars = np.frombuffer(text.fill_null("00000000").to_numpy(zero_copy_only=False).astype("S8").tobytes(),
                          np.uint8).reshape(-1, 8).astype(np.uint64)
    digits = np.where(chars <= ord("9"), chars - ord("0"), chars - ord("a") + 10)
    codes = (digits << np.arange(28, -1, -4, dtype=np.uint64)).sum(1, dtype=np.uint64)
    mixed = codes ^ np.uint64(((field + 1) * 0x9E3779B1) & 0xFFFFFFFF)
    ranks = ((mixed * np.uint64(_TOKEN_INVERSE)) & np.uint64(0xFFFFFFFF)).astype(np.int64) - 1
    return np.where(missing, -1, ranks)


def _hex_tokens(ranks: np.ndarray, salt: int) -> pa.Array:
    """8-hex-digit tokens, a bijection of (field, rank) like Criteo's hashed values."""
    mixed = (ranks.astype(np.uint64) + np.uint64(1)) * np.uint64(_TOKEN_MULTIPLIER)
    codes = (mixed ^ np.uint64((salt + 1) * 0x9E3779B1)) & np.uint64(0xFFFFFFFF)
    shifts = np.arange(28, -1, -4, dtype=np.uint64)
    digits = _HEX[((codes[:, None] >> shifts) & np.uint64(0xF)).astype(np.intp)]
    binary = pa.array(np.ascontiguousarray(digits).view("S8").ravel(), type=pa.binary(8), mask=ranks < 0)
    return binary.cast(pa.string())


# ------------------------------------------------------------------------------------- joined mode
def _with_items(teacher: Teacher, logit: np.ndarray, rng: np.random.Generator):
    items = np.searchsorted(_zipf_cdf(20_000, 1.1), rng.random(len(logit)), side="right")
    category, brand = _item_attributes(items)
    return logit + teacher.item_weights[0][category] + teacher.item_weights[1][brand], items


def _item_attributes(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (items * 7919) % ITEM_CATEGORIES, (items * 104729 + 17) % ITEM_BRANDS


def _items_table(teacher: Teacher) -> pa.Table:
    items = np.arange(20_000)
    category, brand = _item_attributes(items)
    price = np.round(np.exp(2 + (items % 97) / 30), 2)
    return pa.table({"item_id": items, "item_category": category, "item_brand": brand, "item_price": price})


def _write_joined_chunk(tmp, name, chunk, n, label, ints, ranks, teacher, items, p_true, rng, cfg):
    day = 86_400
    start = 1_767_225_600 + chunk * day  # 2026-01-01, one day per chunk
    ts = np.sort(start + rng.integers(0, day, n))
    imp_id = chunk * cfg.rows_per_file + np.arange(n)
    table = pa.table({
        "impression_id": imp_id,
        "ts": pa.array(ts.astype("datetime64[s]")),
        "item_id": items,
        **_int_columns(ints, 6),
        **_cat_columns(ranks, range(10)),
        "p_true": pa.array(p_true.astype(np.float32)),
    })
    write_tsv(table, tmp / "impressions" / name, header=True)
    write_tsv(_clicks_table(imp_id, ts, label, rng, cfg.rows), tmp / "clicks" / name, header=True)


def _clicks_table(imp_id, ts, label, rng, total_rows) -> pa.Table:
    """Clicks on clicked impressions (some twice), late clicks that must not count, and orphans."""
    clicked = np.flatnonzero(label == 1)
    lag = np.minimum(rng.exponential(300, len(clicked)).astype(np.int64), 3_600)
    dup = clicked[rng.random(len(clicked)) < 0.1]
    unclicked = np.flatnonzero(label == 0)
    late = unclicked[rng.random(len(unclicked)) < 0.02]
    orphans = rng.integers(total_rows, 2 * total_rows, max(1, len(clicked) // 50))
    ids = np.concatenate([imp_id[clicked], imp_id[dup], imp_id[late], orphans])
    times = np.concatenate([
        ts[clicked] + lag, ts[dup] + 5, ts[late] + rng.integers(3_601, 86_400, len(late)),
        np.full(len(orphans), ts[0]),
    ])
    order = rng.permutation(len(ids))
    return pa.table({"impression_id": ids[order], "click_ts": pa.array(times[order].astype("datetime64[s]"))})


# -------------------------------------------------------------------------------------------- files
def write_tsv(table: pa.Table, path: Path, header: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    options = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    with pa.output_stream(str(path), compression="gzip" if path.suffix == ".gz" else None) as out:
        if header:  # Arrow always quotes header names; logs carry them bare
            out.write(("\t".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, out, options)


def _zipf_cdf(cardinality: int, exponent: float) -> np.ndarray:
    weights = np.arange(1, cardinality + 1, dtype=np.float64) ** -exponent
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
