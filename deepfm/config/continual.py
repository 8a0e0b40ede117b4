"""The settings of continual training: drift checks before training, the promotion gate after it,
and the next-day evaluation of the model serving."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from deepfm.config.base import PathStr, SettingError, _Strict


class DriftChecksConfig(_Strict):
    """Checks of a run's data before training, against the previous run's data and the model serving
    (pipelines/drift_checks.py): past a threshold, preprocess stops with exit 2 naming the field."""

    # The previous run's preprocess output (say out/daily/criteo/run_date={run_date-1d}): each field's
    # missing rate and each bucketized numeric field's PSI are checked against it. Missing: no check.
    reference_data: PathStr | None = None
    # The model serving (its root, or a version): each categorical field's OOV rate against its vocabulary.
    reference_model: PathStr | None = None
    # A field's share of missing values may rise by at most this much (a field suddenly empty).
    max_missing_rate_increase: Annotated[float, Field(ge=0, le=1)] = 0.3
    # The population stability index of a numeric field's log buckets; above 0.25 is the usual "shifted".
    max_psi: Annotated[float, Field(ge=0)] = 0.25
    # The share of a field's counted values the serving vocabulary lacks (off: a long tail is OOV by nature).
    max_oov_rate: Annotated[float, Field(ge=0, le=1)] | None = None


class PromoteConfig(_Strict):
    """The promotion gate: whether a new model version becomes LATEST, the one serving
    (deepfm/training/promotion.py). The candidate and the serving model are scored on the same
    held-out rows: those of the candidate's data, and those of the serving model's."""

    # Judge every new version before it becomes LATEST (conf/schedule/*.yaml turn it on); off, LATEST
    # moves to every new version, as for one-off training.
    gate: bool = False
    # The candidate's AUC may fall at most this far below the serving model's, on the new data's rows.
    max_auc_drop: Annotated[float, Field(ge=0)] = 0.005
    # The serving model's AUC on the new data's rows may fall at most this far below its AUC on its own
    # data's rows; further, the new labels look broken (shuffled, say) and no model trained on them serves.
    max_serving_auc_drop: Annotated[float, Field(ge=0)] = 0.05
    # Its mean prediction over the observed click rate, on the held-out rows of its own data.
    calibration: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] = (0.8, 1.25)
    max_rows: Annotated[int, Field(ge=1)] = 1_000_000  # held-out rows scored per set (an even sample beyond)

    @model_validator(mode="after")
    def _check(self) -> PromoteConfig:
        if self.calibration[0] >= 1 or self.calibration[1] <= 1:
            raise SettingError(("calibration",), f"give [low, high] around 1, got {list(self.calibration)}")
        return self


class NextDayConfig(_Strict):
    """Next-day evaluation, progressive validation (pipelines/next_day.py): the model serving, scored
    on a new date's logs (the data set's input) before any model trains on them."""

    model: PathStr  # the model root: the version its LATEST names is judged
    output: PathStr  # scores/run_date=D/, reports/run_date=D/, and history.json, history.png, history.html
    history_dates: Annotated[int, Field(ge=1)] = 30  # the dates the history shows, up to the run date
