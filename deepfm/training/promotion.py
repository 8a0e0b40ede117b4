"""The promotion gate: a new model version becomes LATEST only when it is not worse than the one serving.

The candidate and the serving model are scored on the same held-out rows, each encoding them with
its own feature map and vocabulary: the test rows of the candidate's data, which neither trained on
(preprocess writes them as parsed, `holdout/`), and the test rows of the serving model's data
(rows are assigned to splits by a seeded hash of the row, so a row held out of one day's or window's
data is held out of every other).

The candidate is turned down when, on its data's rows, its AUC falls more than
`promote.max_auc_drop` below the serving model's, or its calibration (mean prediction over observed
click rate) leaves `promote.calibration`; or when the serving model's AUC on the new rows falls more
than `promote.max_serving_auc_drop` below its AUC on its own data's rows. That last rule catches a
day whose labels are broken (shuffled, say): there both models look equally bad on the new rows,
and the candidate would pass the first. The candidate is not held to the serving model on the
serving model's own rows: there the serving model has the advantage of its own day, and each day of
drift widens it (bench/continual.py measured a sound candidate 0.006 below a day later, 0.010 two
days later), so a gate that asked it would lock the serving model in.

A turned-down candidate is still committed as a version, marked rejected with the figures and the
reasons; LATEST stays, and train exits 3 (errors.GATE_REJECTED). `--promote force` moves LATEST
whatever the figures say, and records them.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from sklearn.metrics import log_loss, roc_auc_score

from deepfm.config import PromoteConfig
from deepfm.errors import UserError
from deepfm.features.encode import vocabulary_to_bytes
from deepfm.features.preprocess_output import HOLDOUT, PreprocessOutput
from deepfm.serving.inference import ArrowScorer
from deepfm.storage.location import Location
from deepfm.training.model_versions import ModelVersion

log = logging.getLogger(__name__)

FIRST, PROMOTED, REJECTED, FORCED, BACKFILL = "first", "promoted", "rejected", "forced", "backfill"
SCORING_BATCH_ROWS = 65_536


class HoldoutMissingError(UserError, ValueError):
    """The candidate's data has no held-out rows to judge it on."""


@dataclass(frozen=True)
class RowsJudged:
    """Both models' figures on one set of held-out rows."""

    rows: str  # the preprocess output whose held-out rows these are
    count: int
    candidate: dict[str, float]  # auc, logloss, calibration
    serving: dict[str, float]


@dataclass(frozen=True)
class Promotion:
    decision: str  # FIRST, PROMOTED, REJECTED, FORCED or BACKFILL
    serving: str | None  # the version serving when the candidate was judged
    judged: list[RowsJudged] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # why it was (or, when forced, would have been) turned down

    @property
    def rejected(self) -> bool:
        return self.decision == REJECTED

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Promotion:
        """The verdict as version.json records it."""
        return cls(**{**record, "judged": [RowsJudged(**j) for j in record.get("judged", [])]})


def reasons_to_reject(cfg: PromoteConfig, judged: list[RowsJudged]) -> list[str]:
    """What is wrong with the candidate's figures (judged[0]: on its data's rows; judged[1], when
    there: on the serving model's data's rows); empty when it may serve."""
    reasons = []
    if not judged:
        return reasons
    new = judged[0]
    # Rounded: 0.8 - 0.795 is 0.005, not 0.0050000001. A NaN AUC (one class) compares False: no verdict.
    drop = round(new.serving["auc"] - new.candidate["auc"], 9)
    if drop > cfg.max_auc_drop:
        reasons.append(f"AUC {new.candidate['auc']:.4f} on the held-out rows of {new.rows} is {drop:.4f} below "
                       f"the serving model's {new.serving['auc']:.4f} (promote.max_auc_drop {cfg.max_auc_drop})")
    if len(judged) > 1:
        own = judged[1]
        fall = round(own.serving["auc"] - new.serving["auc"], 9)
        if fall > cfg.max_serving_auc_drop:
            reasons.append(f"the serving model's AUC on the held-out rows of {new.rows} is {new.serving['auc']:.4f}, "
                           f"{fall:.4f} below its {own.serving['auc']:.4f} on those of {own.rows}: the new data's "
                           f"labels look broken (promote.max_serving_auc_drop {cfg.max_serving_auc_drop})")
    calibration = new.candidate["calibration"]
    low, high = cfg.calibration
    if not low <= calibration <= high:
        reasons.append(f"calibration (mean prediction / observed click rate) {calibration:.3f} on the held-out "
                       f"rows of {new.rows} is outside promote.calibration [{low}, {high}]")
    return reasons


def judge(cfg: PromoteConfig, candidate: ModelVersion, data: PreprocessOutput, serving: ModelVersion,
          serving_data: PreprocessOutput | None, force: bool) -> Promotion:
    """Score both models on the held-out rows of the candidate's data and of the serving model's."""
    if data.holdout is None:
        raise HoldoutMissingError(f"{data.location} has no {HOLDOUT}/ (held-out rows as parsed, which preprocess "
                                  "writes since continual training came in): rerun preprocess with --force, or train "
                                  "with --promote force")
    sets = [data]
    if serving_data is None or serving_data.holdout is None:
        log.warning("the serving version %s's data has no held-out rows to judge on (moved or deleted, or written "
                    "before %s/ was): judging on %s alone", serving.path, HOLDOUT, data.location)
    elif str(serving_data.location) != str(data.location):
        sets.append(serving_data)
    judged = []
    for output in sets:
        rows = _sample(output.holdout, cfg.max_rows)
        label = rows.column(candidate.feature_map.label).to_numpy(zero_copy_only=False).astype(np.float64)
        judged.append(RowsJudged(str(output.location), rows.num_rows, _figures(label, _scores(candidate, rows)),
                                 _figures(label, _scores(serving, rows))))
        log.info("promotion gate on %d held-out rows of %s: candidate AUC %.4f calibration %.3f, serving %s AUC "
                 "%.4f calibration %.3f", rows.num_rows, output.location, judged[-1].candidate["auc"],
                 judged[-1].candidate["calibration"], serving.name, judged[-1].serving["auc"],
                 judged[-1].serving["calibration"])
    reasons = reasons_to_reject(cfg, judged)
    decision = (FORCED if force else REJECTED) if reasons else PROMOTED
    return Promotion(decision, serving.name, judged, reasons)


def _sample(holdout: Location, max_rows: int) -> pa.Table:
    table = ds.dataset(holdout.path, filesystem=holdout.filesystem, format="parquet").to_table()
    if table.num_rows <= max_rows:
        return table
    return table.take(np.linspace(0, table.num_rows - 1, max_rows).astype(np.int64))  # an even sample


def _scores(version: ModelVersion, rows: pa.Table) -> np.ndarray:
    """The model's probabilities on raw rows, encoded with its own vocabulary: the score job's code."""
    fmap = version.feature_map
    # Mapped where the files are local: a sharded version's table is never put together.
    weights = ([str(f.local_path) for f in version.weight_files] if all(f.is_local for f in version.weight_files)
               else version.weights_bytes())
    with version.vocabulary.open() as f:
        vocabulary = vocabulary_to_bytes(pq.read_table(f))
    scorer = ArrowScorer(weights_digest=version.weights_digest, model_config=version.config.to_dict(),
                         categorical=tuple(f.name for f in fmap.categorical), dense=tuple(f.name for f in fmap.dense),
                         keep=(), weights=lambda: weights, threads=os.cpu_count() or 1, device="cpu",
                         feature_map=fmap.to_dict(), vocabulary=lambda: vocabulary)
    return np.concatenate([scorer.probabilities(batch) for batch in rows.to_batches(SCORING_BATCH_ROWS)]
                          or [np.zeros(0, np.float32)])


def _figures(label: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    one_class = len(np.unique(label)) < 2
    observed = float(label.mean()) if len(label) else math.nan
    return {"auc": math.nan if one_class else round(float(roc_auc_score(label, probability)), 5),
            "logloss": round(float(log_loss(label, np.clip(probability, 1e-7, 1 - 1e-7), labels=[0, 1])), 5),
            "calibration": round(float(probability.mean()) / observed, 4) if observed else math.nan}
