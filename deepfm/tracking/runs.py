"""Experiment tracking with MLflow: one run per trained model version.

train     params (the resolved config, flattened: `train.lr`, `train.model.hidden`, ...), the whole
          config as `config.json`, per-epoch metrics (step = epoch, from 1), test metrics, the training
          curves, model.json and metrics.json, and the model as a pyfunc that scores a pandas frame
          of raw feature rows (deepfm/serving/pyfunc.py), with its signature
evaluate  the report (report.html, PNGs, metrics.json) and its overall metrics, into the run of
          the model version it evaluated (found by the version's directory; for predictions alone,
          by the hash of the weights that scored them, which score outputs carry)

The driver logs, after the work is committed: workers on Spark executors may not reach the
tracking store, and a model is never lost because tracking failed. A store that cannot be reached
is a warning naming it, and the job still exits 0.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfm import strict_json
from deepfm.config import Config, TrackingConfig
from deepfm.errors import first_line
from deepfm.storage.location import Location

if TYPE_CHECKING:
    from deepfm.training.launch import TrainedVersion

log = logging.getLogger(__name__)

MODEL_TAG, VERSION_TAG, RUN_DATE_TAG = "deepfm.model", "deepfm.version", "deepfm.run_date"
WEIGHTS_TAG = "deepfm.weights_hash"  # what a score output and an evaluate report name a model by
PROMOTION_TAG, WARM_START_TAG = "deepfm.promotion", "deepfm.warm_start"  # the gate's decision, the version started from
PYFUNC = "model"  # the logged model's name within the run
TUNE_TAG, TRIAL_TAG = "deepfm.tune", "deepfm.trial"  # a study's parent run (its tune.output), a trial's number
PENDING = ".tracking-pending"  # in a model root: versions whose tracking failed, to send later
# What the pyfunc needs where it is loaded; the deepfm code itself travels with the model.
_PYFUNC_REQUIREMENTS = ("torch", "pyarrow", "numpy", "pandas", "pydantic", "pyyaml")
_MODEL_SCRIPT = Path(__file__).parents[1] / "serving" / "pyfunc_model.py"  # "models from code": nothing pickled
_MAX_PARAM_CHARS = 6000  # MLflow's limit on a parameter's value


def log_training(cfg: Config, trained: TrainedVersion, run_date: str | None) -> str | None:
    """Log a trained (not an up-to-date) model version; the MLflow run id, or None when off or failed.

    Versions of the same root whose tracking failed before are sent first. A version whose tracking
    fails is recorded as pending in its root (`.tracking-pending/<version>.json`), to be sent by the
    next train into that root, up to date or not, or by `deepfm-pipeline track`.
    """
    tracking = cfg.tracking
    if not tracking.enabled:
        return None
    root = Location.of(trained.model).parent
    send_pending(cfg, root)
    if trained.up_to_date:
        return None
    try:
        with _http_limits(tracking):
            return _log_training(tracking, cfg, trained.model, run_date)
    except Exception as err:  # tracking must not fail the job that trained the model  # noqa: BLE001
        pending = root / PENDING / f"{trained.version}.json"
        pending.write_text(strict_json.dumps({"version": trained.version, "model": trained.model,
                                              "run_date": run_date, "config": cfg.model_dump(mode="json")}))
        log.warning("MLflow tracking at %s failed, the model version is committed all the same: %s; recorded in "
                    "%s, and sent by the next train into %s or by `deepfm-pipeline track`", tracking.destination()[0],
                    first_line(err), pending, root)
        return None


def send_pending(cfg: Config, root: Location) -> list[str]:
    """Log the versions of a model root whose tracking failed, oldest first, to the store `cfg`
    names; the run ids. What is sent is forgotten; the first failure leaves the rest pending."""
    from deepfm.training.model_versions import METRICS

    sent = []
    for pending in (root / PENDING).files(".json"):
        record = json.loads(pending.read_text())
        if not (Location.of(record["model"]) / METRICS).is_file():  # removed (or replaced, then tracked anew)
            pending.unlink()
            continue
        try:
            with _http_limits(cfg.tracking):
                run_id = _log_training(cfg.tracking, Config.model_validate(record["config"]), record["model"],
                                       record["run_date"])
        except Exception as err:  # noqa: BLE001 - still unreachable: it stays pending
            log.warning("MLflow tracking at %s failed again; model version %s stays pending (%s): %s",
                        cfg.tracking.destination()[0], record["version"], pending, first_line(err))
            break
        pending.unlink()
        sent.append(run_id)
        log.info("sent the tracking of model version %s, pending since its train: MLflow run %s", record["version"],
                 run_id)
    return sent


def pending_versions(root: Location) -> list[str]:
    return [file.name.removesuffix(".json") for file in (root / PENDING).files(".json")]


def log_report(cfg: Config, report: Location, metrics: dict[str, Any], model: Location | None = None,
               prefix: str = "eval_", artifacts: str = "report") -> str | None:
    """Add an evaluation report (the directory of `report`, its HTML page) to the run that logged
    the model version `model` (else the newest run of a model with the weights that scored the
    predictions: two versions can have equal weights); the run id, or None."""
    tracking = cfg.tracking
    weights = metrics.get("model_digest")
    if not tracking.enabled or not (model or weights):
        return None
    # By version first; by weights where no run names the version (one logged under another spelling of its path)
    keys = [(MODEL_TAG, str(model))] * (model is not None) + [(WEIGHTS_TAG, weights)] * bool(weights)
    try:
        with _http_limits(tracking):
            return _log_report(tracking, report, overall=metrics.get("overall", {}), keys=keys, prefix=prefix,
                               artifacts=artifacts)
    except Exception as err:  # noqa: BLE001
        log.warning("MLflow tracking at %s failed, the report is written all the same: %s",
                    tracking.destination()[0], first_line(err))
        return None


def _log_report(tracking: TrackingConfig, report: Location, overall: dict[str, Any],
                keys: list[tuple[str, str]], prefix: str, artifacts: str) -> str | None:
    import mlflow

    client = _client(tracking)
    experiment = client.get_experiment_by_name(tracking.experiment)
    runs = []
    for tag, value in keys if experiment else []:
        quoted = value.replace("\\", "\\\\").replace("'", "\\'")
        runs = client.search_runs([experiment.experiment_id], f"tags.`{tag}` = '{quoted}'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
        if runs:
            break
    if not runs:
        log.info("no MLflow run in experiment %s has %s: the report is not tracked", tracking.experiment,
                 " or ".join(f"{tag} {value}" for tag, value in keys))
        return None
    run_id = runs[0].info.run_id
    with _local_copy(report.parent) as local:
        client.log_artifacts(run_id, str(local), artifacts)
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(f"{prefix}{k}", float(v), _now_ms(), 0)
                                      for k, v in overall.items() if _is_number(v)])
    log.info("report logged to MLflow run %s", run_id)
    return run_id


def log_tuning(cfg: Config, output: Location) -> str | None:
    """Log a tuning study (its `trials.csv` and `best.yaml` in `output`) as one parent run with a
    child run per trial; the parent's run id, or None when off or failed. A rerun of the study adds
    the trials not logged yet to the same parent run."""
    tracking = cfg.tracking
    if not tracking.enabled or not (output / "trials.csv").is_file():
        return None
    try:
        with _http_limits(tracking):
            return _log_tuning(tracking, cfg, output)
    except Exception as err:  # noqa: BLE001 - the study is written and resumable all the same
        log.warning("MLflow tracking at %s failed, the tuning results are in %s all the same: %s",
                    tracking.destination()[0], output, first_line(err))
        return None


def _log_tuning(tracking: TrackingConfig, cfg: Config, output: Location) -> str:
    import csv
    import io

    import mlflow

    client = _client(tracking)
    experiment = client.get_experiment_by_name(tracking.experiment)
    where = f"tags.`{TUNE_TAG}` = '{output}'"
    parents = client.search_runs([experiment.experiment_id], where, max_results=1)
    parent = parents[0].info.run_id if parents else client.create_run(
        experiment.experiment_id, run_name=f"tune {output.name}", tags={TUNE_TAG: str(output)}).info.run_id
    if not parents:
        client.log_dict(parent, cfg.model_dump(mode="json", exclude={"spark"}), "config.json")
        client.log_param(parent, "tune.space", json.dumps({k: v.model_dump() for k, v in cfg.tune.space.items()}))
    logged = {run.data.tags.get(TRIAL_TAG) for run in client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")}
    trials = list(csv.DictReader(io.StringIO((output / "trials.csv").read_text())))
    for trial in trials:
        if trial["number"] in logged or trial["state"] not in ("complete", "pruned"):
            continue
        child = client.create_run(experiment.experiment_id, run_name=f"trial {trial['number']}", tags={
            "mlflow.parentRunId": parent, TRIAL_TAG: trial["number"], "deepfm.trial_state": trial["state"]})
        settings = {k: v for k, v in trial.items() if k not in ("number", "state", "valid_auc", "epochs", "seconds")}
        metrics = {k: float(trial[k]) for k in ("valid_auc", "epochs", "seconds") if trial[k]}
        client.log_batch(child.info.run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in settings.items()],
                         metrics=[mlflow.entities.Metric(k, v, _now_ms(), 0) for k, v in metrics.items()])
        client.set_terminated(child.info.run_id)
    values = [float(t["valid_auc"]) for t in trials if t["state"] == "complete" and t["valid_auc"]]
    if values:
        client.log_metric(parent, "best_valid_auc", max(values))
    with _local_copy(output, tuple(name for name in ("trials.csv", "best.yaml") if (output / name).is_file())) as local:
        client.log_artifacts(parent, str(local))
    client.set_terminated(parent)
    log.info("tuning logged to MLflow run %s (%d trials)", parent, len(trials))
    return parent


@contextmanager
def _http_limits(tracking: TrackingConfig) -> Iterator[None]:
    """MLflow's HTTP retries and timeout for the block: the configured ones, unless the environment
    sets them (MLflow reads them at every request)."""
    limits = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(tracking.http_retries),
              "MLFLOW_HTTP_REQUEST_TIMEOUT": str(tracking.http_timeout_s)}
    added = {name: value for name, value in limits.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _log_training(tracking: TrackingConfig, cfg: Config, version: str, run_date: str | None) -> str:
    import mlflow

    from deepfm.serving.pyfunc import MODEL_ARTIFACT, input_example, signature
    from deepfm.training.model_versions import CURVES, METRICS, MODEL_CONFIG, VOCABULARY, open_model_version

    start = time.perf_counter()
    _client(tracking)  # creates the experiment where the configuration says
    model = open_model_version(version)
    result = model.training_result()
    with mlflow.start_run(run_name=model.name, tags={
        MODEL_TAG: version, VERSION_TAG: model.name, RUN_DATE_TAG: run_date or "",
        "deepfm.data": cfg.train.data, WEIGHTS_TAG: model.weights_digest, **_lineage(model),
    }) as run:
        resolved = cfg.model_dump(mode="json", exclude={"spark"})
        # The training config the version records is the one that trained it, even on a resumed run.
        resolved["train"] = {**model.train_config, "output": resolved["train"]["output"]}
        mlflow.log_params(_flat_params({k: v for k, v in resolved.items() if k in ("train", "dataset")}))
        mlflow.log_dict(resolved, "config.json")
        for epoch in result.history:
            mlflow.log_metrics({k: float(v) for k, v in epoch.items() if k not in ("epoch", "step")},
                               step=int(epoch["epoch"]) + 1)  # epoch 1 is the first, as the log counts
        mlflow.log_metrics({f"test_{k}": float(v) for k, v in result.test.items() if _is_number(v)})
        mlflow.log_metric("valid_auc_best", float(result.valid_auc_best))
        record = model.record()
        for judged in (record.promotion or {}).get("judged", [])[:1] if record else []:  # on its own data's rows
            mlflow.log_metrics({f"gate_{who}_{k}": float(v) for who in ("candidate", "serving")
                                for k, v in judged[who].items() if _is_number(v)})
        with _local_copy(model.path, (METRICS, MODEL_CONFIG, CURVES)) as local:
            mlflow.log_artifacts(str(local), "training")
        if tracking.log_model:
            with _local_copy(model.path, (*(f.name for f in model.weight_files), MODEL_CONFIG, VOCABULARY)) as local:
                mlflow.pyfunc.log_model(
                    name=PYFUNC, python_model=str(_MODEL_SCRIPT), artifacts={MODEL_ARTIFACT: str(local)},
                    signature=signature(model.feature_map), input_example=input_example(model.feature_map, local),
                    code_paths=[str(Path(__file__).parents[1])],  # the deepfm package, whole
                    pip_requirements=[_pinned(name) for name in _PYFUNC_REQUIREMENTS])
        log.info("MLflow run %s (experiment %s at %s) logged in %.1fs", run.info.run_id, tracking.experiment,
                 tracking.destination()[0], time.perf_counter() - start)
        return run.info.run_id


def _lineage(model) -> dict[str, str]:
    """Tags that link a version to where it came from: the version it was warm-started from (its
    MLflow run, when tracked, becomes this run's parent) and the promotion gate's decision."""
    import mlflow

    record = model.record()
    tags: dict[str, str] = {}
    if record is not None and record.promotion:
        tags[PROMOTION_TAG] = record.promotion["decision"]
    if record is not None and record.warm_start:
        tags[WARM_START_TAG] = record.warm_start["version"]
        parents = mlflow.search_runs(filter_string=f"tags.`{WEIGHTS_TAG}` = '{record.warm_start['weights_digest']}'",
                                     max_results=1, output_format="list", search_all_experiments=True)
        if parents:
            tags["mlflow.parentRunId"] = parents[0].info.run_id
    return tags


def _client(tracking: TrackingConfig):
    """The client of the configured store, with the experiment created there if it is new."""
    import mlflow

    uri, artifact_root = tracking.destination()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(tracking.experiment)
    if experiment is None:
        client.create_experiment(tracking.experiment, artifact_location=artifact_root)
    mlflow.set_experiment(tracking.experiment)
    return client


def _flat_params(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flat_params(value, f"{name}."))
        else:
            text = json.dumps(value) if not isinstance(value, str) else value
            flat[name] = text if len(text) <= _MAX_PARAM_CHARS else text[: _MAX_PARAM_CHARS - 3] + "..."
    return flat


@contextmanager
def _local_copy(source: Location | str, names: tuple[str, ...] | None = None) -> Iterator[Path]:
    """A temporary local directory holding `names` (every file when None) of a directory that may be remote."""
    source = Location.of(source)
    with tempfile.TemporaryDirectory(prefix="deepfm-mlflow-") as tmp:
        for name in names if names is not None else source.tree():
            if (source / name).is_file():
                (source / name).copy_to(Location.of(str(Path(tmp, name))))
        yield Path(tmp)


def _pinned(name: str) -> str:
    try:
        return f"{name}=={metadata.version(name).split('+')[0]}"
    except metadata.PackageNotFoundError:
        return name


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _now_ms() -> int:
    return int(time.time() * 1000)

