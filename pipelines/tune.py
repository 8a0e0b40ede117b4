"""The tune job: a search over `tune.space` on validation AUC, its trials run as Spark tasks.

Optuna (TPE sampler, median pruner) proposes the trials on the driver, `tune.parallel` at a time;
each runs in its own Spark task, training one process on the same shards with the proposed
settings, and reports its validation AUC after every epoch to the study, which may stop it there
(pruned). The study lives in `tune.output/study.journal` (or `tune.storage`): a killed or rerun
job continues it, counting the trials already finished towards `tune.trials`, and a rerun with
nothing left to do trains nothing. After every round the job rewrites

    trials.csv  one row per trial: number, state, validation AUC, epochs, seconds, settings
    best.yaml   the best trial's settings as a `train:` section: `--conf tune/best.yaml` uses them
"""

from __future__ import annotations

import logging
import socket
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import yaml
from pyspark.sql import SparkSession

from deepfm.config import Config, SearchRange, TrainConfig, TuneConfig, with_settings
from deepfm.errors import UserError, first_line, is_expected
from deepfm.storage.lease import held
from deepfm.storage.location import Location
from pipelines.steps import step

log = logging.getLogger(__name__)

STUDY = "deepfm"
JOURNAL = "study.journal"
TRIALS = "trials.csv"
BEST = "best.yaml"
INTERRUPTED = "interrupted"  # a trial a killed run left running: failed, and not counted
UNREACHED = "unreached"  # a trial's outcome where its executor does not see the study's journal


class StudyNotSharedError(UserError):
    """The executors cannot reach the study the driver keeps."""


@dataclass(frozen=True)
class TuneResult:
    output: str
    trials: int  # finished trials in the study, this run's and earlier runs'
    best_value: float | None
    best_settings: dict[str, Any]


def run_tune(spark: SparkSession, cfg: Config) -> TuneResult:
    import optuna

    tune: TuneConfig = cfg.require("tune")
    base = cfg.require("train").model_dump(mode="json")
    if tune.epochs is not None:
        base["epochs"] = tune.epochs
    base["threads"] = base["threads"] or 1  # each task is one process on one core
    out = Location.of(tune.output)
    out.mkdir()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with held(out, "tune", key="tune.output"):
        study = optuna.create_study(
            study_name=STUDY, storage=_storage(tune), direction="maximize", load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=tune.seed), pruner=_pruner(tune.prune_after_trials))
        _fail_interrupted(study)
        distributions = {key: _distribution(dimension) for key, dimension in tune.space.items()}
        while (done := len(_counted(study))) < tune.trials:
            asked = [study.ask(distributions) for _ in range(min(tune.parallel, tune.trials - done))]
            specs = [{"number": t.number, "trial_id": t._trial_id, "settings": t.params, "prune": tune.prune,
                      "prune_after_trials": tune.prune_after_trials, "storage": _storage_spec(tune),
                      "train": with_settings(base, _below_train(t.params))} for t in asked]
            first, last = asked[0].number, asked[-1].number
            with step(f"tune: trials {first}-{last} ({done} of {tune.trials} done)"):
                outcomes = spark.sparkContext.parallelize(specs, len(specs)).map(run_trial).collect()
            _check_study_reached(outcomes)
            for outcome in outcomes:
                _tell(study, outcome)
            _write_results(study, tune, out)
        best = _best(study)
        _write_results(study, tune, out)
    return TuneResult(str(out), len(_counted(study)),
                      best.value if best else None, best.params if best else {})


def run_trial(spec: dict[str, Any]) -> dict[str, Any]:
    """One trial, in a Spark task: train one process, reporting validation AUC after each epoch."""
    import optuna

    from deepfm.training.distributed import make_backend
    from deepfm.training.train import train

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    outcome = {"number": spec["number"], "settings": spec["settings"]}
    journal = _journal(spec["storage"])
    if journal is not None and not journal.local_path.is_file():  # the driver created it
        return {**outcome, "state": UNREACHED, "host": socket.gethostname(), "journal": str(journal)}
    # The pruner is not stored with the study: the task builds the driver's.
    study = optuna.load_study(study_name=STUDY, storage=_open_storage(spec["storage"]),
                              pruner=_pruner(spec["prune_after_trials"]))
    trial = optuna.Trial(study, spec["trial_id"])

    def report(epoch: int, valid: dict[str, float]) -> bool:
        trial.report(valid["auc"], epoch)
        return bool(spec["prune"] and trial.should_prune())

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="deepfm-trial-") as scratch:
        cfg = TrainConfig.model_validate({**spec["train"], "output": scratch})
        backend = make_backend("none", cfg.device)
        try:
            result = train(cfg, backend, stop_after_epoch=report)
        except Exception as err:  # noqa: BLE001 - a trial that fails (diverges, say) is a result, not the end
            if not is_expected(err):
                logging.getLogger(__name__).exception("trial %d failed", spec["number"])
            return {**outcome, "state": "fail", "reason": first_line(err), "seconds": time.perf_counter() - start}
        finally:
            backend.close()
    history = [h["valid_auc"] for h in result.history]
    return {**outcome, "state": "pruned" if result.stopped else "complete", "value": result.valid_auc_best,
            "valid_auc_per_epoch": history, "epochs": result.epochs, "seconds": time.perf_counter() - start}


def _check_study_reached(outcomes: list[dict[str, Any]]) -> None:
    """Stop the job, rather than fail every trial, where the executors do not see the driver's journal."""
    unreached = next((o for o in outcomes if o["state"] == UNREACHED), None)
    if unreached is not None:
        raise StudyNotSharedError(
            f"tune.output: the study journal {unreached['journal']} is not on executor host {unreached['host']}: "
            "put tune.output on a file system that the driver and every executor share, or set tune.storage "
            "to a database URL they all reach")


def _tell(study, outcome: dict[str, Any]) -> None:
    from optuna.trial import TrialState

    number = outcome["number"]
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    for key in ("valid_auc_per_epoch", "epochs", "seconds", "reason"):
        if key in outcome:
            study._storage.set_trial_user_attr(trial_id, key, outcome[key])
    if outcome["state"] == "complete":
        study.tell(number, outcome["value"])
        log.info("trial %d: validation AUC %.4f after %d epochs, %.0fs (%s)", number, outcome["value"],
                 outcome["epochs"], outcome["seconds"], _describe(outcome["settings"]))
    elif outcome["state"] == "pruned":
        study.tell(number, state=TrialState.PRUNED)
        log.info("trial %d: pruned after %d epochs, validation AUC %s (%s)", number, outcome["epochs"],
                 [round(a, 4) for a in outcome["valid_auc_per_epoch"]], _describe(outcome["settings"]))
    else:
        study.tell(number, state=TrialState.FAIL)
        log.warning("trial %d failed: %s (%s)", number, outcome["reason"], _describe(outcome["settings"]))


def _fail_interrupted(study) -> None:
    """Trials a killed run left running are failed and marked, so that they are not counted."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        log.info("trial %d was left running by an earlier run: marked failed, it will be run again", trial.number)


def _counted(study) -> list:
    from optuna.trial import TrialState

    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [t for t in study.get_trials(deepcopy=False, states=finished) if not t.user_attrs.get(INTERRUPTED)]


def _best(study):
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: t.value) if complete else None


def _write_results(study, tune: TuneConfig, out: Location) -> None:
    rows = ["number,state,valid_auc,epochs,seconds," + ",".join(tune.space)]
    for t in sorted(_counted(study), key=lambda t: t.number):
        value = "" if t.value is None else f"{t.value:.6f}"
        seconds = t.user_attrs.get("seconds")
        rows.append(",".join([str(t.number), t.state.name.lower(), value, str(t.user_attrs.get("epochs", "")),
                              "" if seconds is None else f"{seconds:.1f}",
                              *(str(t.params.get(key, "")) for key in tune.space)]))
    (out / TRIALS).write_text("\n".join(rows) + "\n")
    best = _best(study)
    if best is None:
        return
    train = with_settings({}, _below_train(best.params))
    header = (f"# The best of {len(_counted(study))} tuning trials (trial {best.number}): validation AUC "
              f"{best.value:.4f}.\n# Use it after the other configuration files: --conf {out / BEST}\n")
    (out / BEST).write_text(header + yaml.safe_dump({"train": train}, sort_keys=True))


def _below_train(settings: dict[str, Any]) -> dict[str, Any]:
    """`train.lr` -> `lr`: the keys within the train section."""
    return {key.removeprefix("train."): value for key, value in settings.items()}


def _pruner(after_trials: int):
    """Stop a trial whose validation AUC after an epoch is below the median of the finished trials'
    at that epoch, once `after_trials` have finished."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=after_trials)


def _distribution(dimension: SearchRange):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if dimension.choices is not None:
        return CategoricalDistribution(dimension.choices)
    if dimension.integer:
        return IntDistribution(int(dimension.low), int(dimension.high), log=dimension.log)
    return FloatDistribution(dimension.low, dimension.high, log=dimension.log)


def _storage_spec(tune: TuneConfig) -> str:
    return tune.storage or f"journal:{Location.of(tune.output) / JOURNAL}"


def _storage(tune: TuneConfig):
    return _open_storage(_storage_spec(tune))


def _open_storage(spec: str):
    """A journal file (journal:PATH; file locks make it safe for concurrent tasks on one machine or a
    shared file system), or any storage URL Optuna opens."""
    journal = _journal(spec)
    if journal is None:
        return spec
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(journal.local_path)))


def _journal(spec: str) -> Location | None:
    """The journal file of a `journal:PATH` storage spec; None for a storage URL."""
    return Location.of(spec.removeprefix("journal:")) if spec.startswith("journal:") else None


def _describe(settings: dict[str, Any]) -> str:
    return ", ".join(f"{key.removeprefix('train.')}={_short(value)}" for key, value in settings.items())


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
