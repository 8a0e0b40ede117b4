"""Launching the training function on N workers: local processes, or Spark tasks.

local + torch    N processes by torch.multiprocessing, rendezvous on a free loopback port
local + horovod  horovod.run (gloo), as horovodrun would
spark + torch    pyspark.ml.torch.distributor.TorchDistributor(local_mode=False)
spark + horovod  horovod.spark.run
The function shipped to workers takes plain values only (a config dict), never a SparkSession.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, Literal

from deepfm import logs
from deepfm.config import PromoteConfig, TrainConfig
from deepfm.errors import PromotionRejected
from deepfm.features.preprocess_output import PreprocessOutput
from deepfm.storage.lease import held
from deepfm.storage.location import Location
from deepfm.training.checkpoint import CHECKPOINT
from deepfm.training.model_versions import (
    BUILDING,
    ModelRoot,
    ModelVersion,
    TrainingResult,
    VersionRecord,
    open_model_version,
)
from deepfm.training.promotion import BACKFILL, FIRST, Promotion, judge
from deepfm.training.warm_start import check_compatible, source_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedVersion:
    """What `run_training` made: a committed model version and its training result."""

    version: str  # the version's name (its run date or start time)
    model: str  # its directory
    up_to_date: bool  # nothing was trained: the version was already built from this input and config
    result: TrainingResult
    promotion: Promotion | None = None  # the promotion gate's verdict (deepfm/training/promotion.py)


def run_training(cfg: TrainConfig, resume: bool | Literal["auto"] = False, run_date: str | None = None,
                 force: bool = False, promote: PromoteConfig | None = None,
                 force_promotion: bool = False) -> TrainedVersion:
    """Train a new version of the model under cfg.output with cfg.workers workers on cfg.backend,
    placed by cfg.launcher, and commit it (deepfm/training/model_versions.py).

    The version is named by `run_date`, else by the time. A run whose input and training config
    equal those of the version it would replace (the same date's, or without a date the latest)
    is up to date: nothing is trained unless `force`.

    `resume`: True continues the interrupted run of `run_date` (else the newest one) from its
    checkpoint. "auto" does so only when a run of the same input and config left one, and otherwise
    trains as without it: what a scheduler's retry of a killed run passes.

    `promote` with `gate` on: the new version becomes LATEST only when the promotion gate passes
    it (deepfm/training/promotion.py); a rejected one is committed, marked rejected, and
    `PromotionRejected` is raised. `force_promotion` moves LATEST whatever the gate says.

    What a user can get wrong is checked here, on the driver, before any worker starts: a worker's
    error reaches the driver as a generic failure of the launcher (exit 1, retried), not as one line.
    """
    root = ModelRoot.of(cfg.output)
    root.check_is_root()
    # One train at a time per model root: a second one exits 2 naming the first.
    with held(root.path, "train", key="train.output"):
        return _train_version(cfg, root, resume, run_date, force, promote or PromoteConfig(), force_promotion)


def _train_version(cfg: TrainConfig, root: ModelRoot, resume: bool | Literal["auto"], run_date: str | None,
                   force: bool, promote: PromoteConfig, force_promotion: bool) -> TrainedVersion:
    if resume is True:  # first: without a run to continue, nothing else about this one matters
        _interrupted_build(root, run_date)
    data = PreprocessOutput.open(cfg.data)  # readable, and encoded by this code's transforms
    cfg, source = _resolve_warm_start(cfg, root, run_date, data)
    _check_memory(cfg, data)
    if resume == "auto":
        interrupted = root.resumable_with(training_signature(data, cfg, source), run_date)
        if interrupted is None:
            log.info("no interrupted run of this input and config to continue (--resume auto): training as usual")
        else:
            log.info("continuing the interrupted run of model version %s: same input and config", interrupted)
        resume = interrupted is not None
    if resume:
        version = _interrupted_build(root, run_date)
    signature = training_signature(data, cfg, source)
    if not resume:
        version = root.new_version_name(run_date)
        current = run_date if run_date else root.latest()
        record = root.record(current) if current else None
        if record is not None and record.signature == signature and not force:
            return _up_to_date(root, current, record, force_promotion)
        root.start_build(version, signature)  # the build of a failed run of this version: start over
    build = root.building(version)
    log.info("training model version %s in %s", version, build)
    _launch(cfg.model_copy(update={"output": str(build)}), resume)
    # Rank 0 wrote the result into the build, whichever launcher ran it: one way back for all of them.
    result = TrainingResult.read(build)
    promotion = _promotion(promote, root, version, data, force_promotion)
    if promotion is not None and promotion.rejected and version == root.latest():
        build.delete_dir()  # committing it would replace the serving version with the one turned down
        raise PromotionRejected(f"the promotion gate turned down the retrained version {version}, which serves: "
                                f"{'; '.join(promotion.reasons)}; it is not committed and {version} serves as it was "
                                "(--promote force commits it)")
    model = root.commit(version, VersionRecord(
        version=version, run_date=run_date, signature=signature, data=cfg.data, test=result.test,
        committed_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        warm_start=None if result.warm_start is None else
        {k: v for k, v in result.warm_start.items() if k != "fields"},
        promotion=None if promotion is None else promotion.to_record()))
    trained = TrainedVersion(version, str(model), up_to_date=False, result=result, promotion=promotion)
    if promotion is not None and promotion.rejected:
        raise PromotionRejected(f"the promotion gate turned down version {version} ({'; '.join(promotion.reasons)}): "
                                f"it is kept as a rejected version in {model} and LATEST stays on {root.latest()} "
                                "(--promote force promotes it)", trained)
    return trained


def _up_to_date(root: ModelRoot, version: str, record: VersionRecord, force_promotion: bool) -> TrainedVersion:
    """A rerun of a version already built from this input and config trains nothing; it ends as the
    first run did: LATEST on the newest promoted version (a run killed after its commit may not have
    moved it), and a version the gate turned down still turned down, unless an operator forces it."""
    log.info("model version %s is up to date with its input and training config; nothing to train "
             "(--force retrains)", root.path / version)
    if record.rejected and force_promotion:
        record = root.force_promotion(version)
    root.point_latest()
    model = open_model_version(root.path / version)
    promotion = None if record.promotion is None else Promotion.from_record(record.promotion)
    trained = TrainedVersion(version, str(model.path), up_to_date=True, result=model.training_result(),
                             promotion=promotion)
    if record.rejected:
        raise PromotionRejected(f"version {version} was turned down by the promotion gate "
                                f"({'; '.join(promotion.reasons)}) and is up to date with its input and config: "
                                f"LATEST stays on {root.latest()} (--promote force promotes it)", trained)
    return trained


def _promotion(promote: PromoteConfig, root: ModelRoot, version: str, data: PreprocessOutput,
               force: bool) -> Promotion | None:
    """The gate's verdict on the trained build of `version`; None with the gate off."""
    if not promote.gate:
        return None
    serving = root.latest()
    if serving is None:
        return Promotion(FIRST, None)
    if version < serving:
        return Promotion(BACKFILL, serving)  # LATEST stays on the newer version whatever this one is
    serving_version = open_model_version(root.path / serving)
    record = root.record(serving)
    serving_data = None
    if record is not None:
        try:
            serving_data = PreprocessOutput.open(record.data)
        except (OSError, ValueError) as err:
            log.warning("the serving version's data %s cannot be read (%s)", record.data, err)
    return judge(promote, root.open_build(version), data, serving_version, serving_data, force)


def _interrupted_build(root: ModelRoot, run_date: str | None) -> str:
    """The version whose interrupted run --resume continues: run_date's, else the newest."""
    version = run_date or root.resumable()
    checkpoint = root.building(version) / CHECKPOINT if version else None
    if checkpoint is None or not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint or root.path} holds no interrupted run to --resume (no "
                                f"{BUILDING}*/{CHECKPOINT}); run without --resume to train from scratch")
    root.check_replaceable(version)
    return version


def training_signature(data: PreprocessOutput, cfg: TrainConfig, warm_start: ModelVersion | None = None) -> str:
    """What a trained model is a function of: the preprocess output it read (its manifest changes
    with every rebuild), the training config, wherever the model is written, and the weights it
    was warm-started from."""
    config = json.dumps(cfg.model_dump(mode="json", exclude={"output"}), sort_keys=True).encode()
    weights = b"\0" + warm_start.weights_digest.encode() if warm_start is not None else b""
    return hashlib.sha256(data.manifest_bytes + b"\0" + config + weights).hexdigest()


def _resolve_warm_start(cfg: TrainConfig, root: ModelRoot, run_date: str | None,
                        data: PreprocessOutput) -> tuple[TrainConfig, ModelVersion | None]:
    """train.warm_start as the workers get it (a version's directory, or none), checked here: a
    worker's error would reach the driver as a generic failure of the launcher."""
    from deepfm.training.train import model_config

    source = source_version(cfg.warm_start, root, run_date)
    if source is not None:
        check_compatible(source, model_config(data.feature_map, cfg, cfg.model.sparse_embeddings), data.feature_map)
    return cfg.model_copy(update={"warm_start": str(source.path) if source is not None else "none"}), source


def _check_memory(cfg: TrainConfig, data: PreprocessOutput) -> None:
    from deepfm.training.memory import check_tables_fit
    from deepfm.training.train import resolve_regularization

    ema = resolve_regularization(cfg, data.rows("train"), cfg.workers)["ema_decay"] > 0
    centred = cfg.warm_start != "none" and cfg.warm_start_prior == "earlier"
    figures = check_tables_fit(cfg, sum(data.feature_map.vocab_sizes.values()), ema, centred)
    log.info("embedding tables: %s rows x %g bytes = %.3f GiB per worker%s", f"{figures['table_rows']:,}",
             figures["bytes_per_row"], figures["tables_gib"],
             f" (of {figures['worker_gib']:.2f} GiB)" if "worker_gib" in figures else "")


def _launch(cfg: TrainConfig, resume: bool) -> None:
    plain = cfg.model_dump(mode="json")
    if cfg.backend == "none":
        worker(plain, resume)
    elif cfg.launcher == "spark":
        _on_spark(cfg, plain, resume)
    elif cfg.backend == "horovod":
        import horovod

        horovod.run(worker, args=(plain, resume), num_proc=cfg.workers, use_gloo=True, hosts=f"localhost:{cfg.workers}")
    else:
        import torch.multiprocessing as mp

        mp.spawn(_spawned, args=(cfg.workers, free_port(), plain, resume), nprocs=cfg.workers, join=True)


def worker(plain: dict[str, Any], resume: bool) -> None:
    """Runs in every worker process: build the backend, train, shut down."""
    import faulthandler

    from deepfm.training.distributed import make_backend
    from deepfm.training.train import train

    # A crash in native code (gloo, pyarrow, a kernel) then leaves every thread's Python stack in
    # the worker's stderr, not only the launcher's "terminated with signal SIGSEGV".
    faulthandler.enable()

    logs.configure(logging.INFO)
    cfg = TrainConfig.model_validate(plain)
    backend = make_backend(cfg.backend, cfg.device)
    try:
        train(cfg, backend, resume=resume)
        # No rank may tear its process group down while a peer is still in a collective with it:
        # gloo aborts the process ("terminate called without an active exception") when it does.
        backend.barrier()
    finally:
        backend.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_local_rendezvous(rank: int, world: int, port: int) -> None:
    """The env:// variables torch.distributed reads, for a worker spawned on this machine."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})


def _spawned(rank: int, world: int, port: int, plain: dict[str, Any], resume: bool) -> None:
    set_local_rendezvous(rank, world, port)
    worker(plain, resume)
    # The work is done and written; skip the interpreter's teardown. Static C++ objects of the
    # communication stack are destroyed there in no fixed order and, about once in fifty runs,
    # one aborts the process (SIGABRT, "terminate called without an active exception").
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _on_spark(cfg: TrainConfig, plain: dict[str, Any], resume: bool) -> None:
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is None:
        raise RuntimeError("train.launcher=spark needs a SparkSession (run through `deepfm-pipeline train`)")
    # The Spark UI then names the barrier job by what it does, not by the line that launched it.
    spark.sparkContext.setJobDescription(f"train model version {Location.of(cfg.output).name.removeprefix(BUILDING)} "
                                         f"on {cfg.workers} workers ({cfg.backend})")
    if cfg.backend == "horovod":
        import horovod.spark

        # Horovod starts each worker process with this interpreter; the driver's own path may not
        # exist on the executors (a shipped environment is ./env/bin/python there).
        executable = spark.conf.get("spark.pyspark.python", None) or os.environ.get("PYSPARK_PYTHON") or sys.executable
        # stdout/stderr: the workers' output streams back to the driver, so rank 0's progress is in
        # the driver log (and the Airflow task log), not only in the executors'.
        horovod.spark.run(worker, args=(plain, resume), num_proc=cfg.workers, use_gloo=True,
                          verbose=1, executable=executable, stdout=sys.stdout, stderr=sys.stderr)
        return
    from pyspark.ml.torch.distributor import TorchDistributor

    distributor = TorchDistributor(num_processes=cfg.workers, local_mode=False, use_gpu=cfg.device == "cuda")
    distributor.run(worker, plain, resume)
