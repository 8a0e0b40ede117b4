"""Next-day evaluation, progressive validation: the model serving, judged on a new date's logs
before any model trains on them.

The version serving on date D was trained on data up to D-1; its figures on D's logs are what the
users got that day, and every version is judged on the day after its training data, so the
figures of a daily-retrained model read as one series. The daily DAG runs this first each date:

    <next_day.output>/scores/run_date=D/    the serving version's predictions on D (the score job)
                      reports/run_date=D/   the evaluate report of those predictions
                      history/              history.json, .png, .html: AUC, logloss and calibration by
                                            date, over the last next_day.history_dates dates
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession

from deepfm.config import Config, EvaluateConfig, NextDayConfig, ScoreConfig
from deepfm.storage.location import Location
from deepfm.tracking.report import METRICS, write_history
from deepfm.training.model_versions import ModelRoot
from pipelines.evaluate import run_evaluate
from pipelines.score import RUN_DATE, run_score

log = logging.getLogger(__name__)

SCORES, REPORTS, HISTORY = "scores", "reports", "history"
# What the date's scoring keeps of the score section: how to score, not what or where.
_SCORE_SETTINGS = ("batch_rows", "threads", "device", "max_reject_rate")


@dataclass(frozen=True)
class NextDayResult:
    run_date: str
    version: str  # the version that served on run_date
    model: Location  # its directory
    metrics: dict[str, Any]  # the report's: overall AUC, logloss, CTRs on that date's logs, calibration bins
    report: Location
    history: Location


def run_next_day(spark: SparkSession, cfg: Config, run_date: str) -> NextDayResult | None:
    """Score run_date's logs (the data set's input) with the version serving, report, and redraw
    the history. None when the model has no version serving yet (its first date)."""
    next_day: NextDayConfig = cfg.require("next_day")
    root = ModelRoot.of(next_day.model)
    serving = root.latest()
    if serving is None:
        log.info("%s has no version serving yet: nothing to judge on %s's logs", root.path, run_date)
        return None
    version = str(root.path / serving)
    out = Location.of(next_day.output)
    settings = cfg.score.model_dump(include=set(_SCORE_SETTINGS)) if cfg.score is not None else {}
    score = ScoreConfig.model_validate({**settings, "model": version, "output": str(out / SCORES)})
    run_score(spark, cfg.model_copy(update={"score": score}), run_date)
    evaluate = EvaluateConfig(output=str(out / REPORTS / f"{RUN_DATE}={run_date}"), model=version,
                              predictions=str(out / SCORES / f"{RUN_DATE}={run_date}"))
    evaluated = run_evaluate(spark, cfg.model_copy(update={"evaluate": evaluate}))
    history = write_history(out / HISTORY, _history(out / REPORTS, run_date, next_day.history_dates))
    overall = evaluated.metrics["overall"]
    log.info("version %s on %s's logs: AUC %.4f, logloss %.4f, calibration %.3f", serving, run_date, overall["auc"],
             overall["logloss"], _calibration(overall))
    return NextDayResult(run_date, serving, root.path / serving, evaluated.metrics, evaluated.report, history)


def _history(reports: Location, run_date: str, dates: int) -> list[dict[str, Any]]:
    """Per date up to run_date, the last `dates` of them: the next-day figures its report holds."""
    prefix = f"{RUN_DATE}="
    names = sorted(n for n in reports.subdirs() if n.startswith(prefix) and n.removeprefix(prefix) <= run_date)
    history = []
    for name in names[-dates:]:
        path = reports / name / METRICS
        if not path.is_file():  # a report cut short is no figure
            continue
        metrics = json.loads(path.read_text())
        overall = metrics["overall"]
        history.append({"run_date": name.removeprefix(prefix), "model_version": metrics.get("model_version"),
                        "rows": overall["rows"], "auc": overall["auc"], "logloss": overall["logloss"],
                        "calibration": round(_calibration(overall), 4)})
    return history


def _calibration(overall: dict[str, Any]) -> float:
    observed = overall["ctr_observed"]
    return overall["ctr_predicted"] / observed if observed else float("nan")
