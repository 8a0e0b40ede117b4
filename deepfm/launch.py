"""Launching the training function on N workers: local processes, or Spark tasks.

local + torch    N processes by torch.multiprocessing, rendezvous on a free loopback port
local + horovod  horovod.run (gloo), as horovodrun would
spark + torch    pyspark.ml.torch.distributor.TorchDistributor(local_mode=False)
spark + horovod  horovod.spark.run
The function shipped to workers takes plain values only (a config dict), never a SparkSession.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any

from deepfm import logs
from deepfm.config import TrainConfig
from deepfm.fs import Location

log = logging.getLogger(__name__)


def run_training(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train with cfg.workers workers on cfg.backend, placed by cfg.launcher; rank 0's result.

    What a user can get wrong is checked here, on the driver, before any worker starts: a worker's
    error reaches the driver as a generic failure of the launcher (exit 1, retried), not as one line.
    """
    from deepfm.train import check_inputs

    check_inputs(cfg, resume)
    plain = cfg.model_dump(mode="json")
    if cfg.backend == "none":
        return worker(plain, resume)
    if cfg.launcher == "spark":
        return _on_spark(cfg, plain, resume)
    if cfg.backend == "horovod":
        import horovod

        results = horovod.run(worker, args=(plain, resume), num_proc=cfg.workers, use_gloo=True,
                              hosts=f"localhost:{cfg.workers}")
        return results[0]
    return _spawn_torch(cfg, plain, resume)


def worker(plain: dict[str, Any], resume: bool) -> dict[str, Any]:
    """Runs in every worker process: build the backend, train, shut down."""
    from deepfm.distributed import make_backend
    from deepfm.train import train

    logs.configure(logging.INFO)
    cfg = TrainConfig.model_validate(plain)
    backend = make_backend(cfg.backend, cfg.device)
    try:
        result = train(cfg, backend, resume=resume)
        # No rank may tear its process group down while a peer is still in a collective with it:
        # gloo aborts the process ("terminate called without an active exception") when it does.
        backend.barrier()
        return result
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


def _spawn_torch(cfg: TrainConfig, plain: dict[str, Any], resume: bool) -> dict[str, Any]:
    import json

    import torch.multiprocessing as mp

    mp.spawn(_spawned, args=(cfg.workers, free_port(), plain, resume), nprocs=cfg.workers, join=True)
    return json.loads((Location.of(cfg.output) / "metrics.json").read_text())


def _on_spark(cfg: TrainConfig, plain: dict[str, Any], resume: bool) -> dict[str, Any]:
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is None:
        raise RuntimeError("train.launcher=spark needs a SparkSession (run through `deepfm-pipeline train`)")
    if cfg.backend == "horovod":
        import horovod.spark

        # Horovod starts each worker process with this interpreter; the driver's own path may not
        # exist on the executors (a shipped environment is ./env/bin/python there).
        executable = spark.conf.get("spark.pyspark.python", None) or os.environ.get("PYSPARK_PYTHON") or sys.executable
        # stdout/stderr: the workers' output streams back to the driver, so rank 0's progress is in
        # the driver log (and the Airflow task log), not only in the executors'.
        return horovod.spark.run(worker, args=(plain, resume), num_proc=cfg.workers, use_gloo=True,
                                 verbose=1, executable=executable, stdout=sys.stdout, stderr=sys.stderr)[0]
    from pyspark.ml.torch.distributor import TorchDistributor

    distributor = TorchDistributor(num_processes=cfg.workers, local_mode=False, use_gpu=cfg.device == "cuda")
    return distributor.run(worker, plain, resume)
