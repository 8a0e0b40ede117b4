"""Real training runs on the Criteo sample: one process, 2 DDP and 2 Horovod processes, Spark."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from deepfm.config import TrainConfig
from deepfm.features.preprocess_output import PreprocessOutput
from deepfm.model import DeepFM, DeepFMConfig
from deepfm.training.checkpoint import load_torch
from deepfm.training.distributed import make_backend
from deepfm.training.launch import run_training
from deepfm.training.model_versions import ModelRoot
from deepfm.training.optim import make_optimizers
from deepfm.training.train import ROWWISE_ADAGRAD_LR, NonFiniteLossError, evaluate, train
from tests.conftest import REPO_ROOT, run_cli

SMALL_MODEL = {"embedding_dim": 8, "hidden": [64, 32]}


def _cfg(data, output, **kw):
    return TrainConfig.model_validate({"data": str(data), "output": str(output), "epochs": 2,
                                       "batch_size": 256, "model": SMALL_MODEL, "threads": 1, **kw})


def test_single_process_training_commits_a_complete_model_version(criteo_shards, tmp_path):
    trained = run_training(_cfg(criteo_shards, tmp_path / "model"))
    out = tmp_path / "model" / trained.version
    assert trained.model == str(out) and (tmp_path / "model" / "LATEST").read_text().strip() == trained.version
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted(["LATEST", trained.version])
    files = {p.name for p in out.iterdir()}
    assert {"model.pt", "model.json", "metrics.json", "training_curves.png", "version.json", "vocab",
            "table_accumulator.pt"} == files  # the last: row-wise Adagrad's sums, for a warm start
    assert 0.62 < trained.result.test["auc"] < 0.85  # the 10k sample is small; ~0.70 is typical
    assert trained.result.test["rows"] == json.loads((criteo_shards / "manifest.json").read_text())["rows"]["splits"][
        "test"]["rows"]
    meta = json.loads((out / "model.json").read_text())
    assert meta["vocab_fingerprint"] == json.loads((criteo_shards / "manifest.json").read_text())["vocab"][
        "fingerprint"]
    model = DeepFM(DeepFMConfig.from_dict(meta["model"]))
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    assert (out / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1]


def test_training_outside_a_terminal_logs_progress_lines_with_rate_and_time_left(criteo_shards, tmp_path,
                                                                                  monkeypatch, caplog):
    """pytest's captured stderr is not a terminal, as a log file is not: no bar, lines instead."""
    monkeypatch.setenv("DEEPFM_PROGRESS_S", "0")  # a line every step
    with caplog.at_level(logging.INFO, logger="deepfm.training.train"):
        run_training(_cfg(criteo_shards, tmp_path / "model", epochs=1))
    lines = [r.getMessage() for r in caplog.records if "steps (" in r.getMessage()]
    steps = int(lines[0].split("/")[1].split()[0])
    assert len(lines) == steps and lines[-1].startswith(f"epoch 1: {steps}/{steps} steps (100%)"), lines[-3:]
    assert all("samples/s" in line and "left" in line and "loss 0." in line for line in lines), lines[:3]


def test_early_stopping(criteo_shards, tmp_path):
    trained = run_training(_cfg(criteo_shards, tmp_path / "m", epochs=30, lr=0.01, early_stopping_patience=0))
    aucs = [h["valid_auc"] for h in trained.result.history]
    assert trained.result.epochs < 30  # stopped early
    assert aucs[-1] <= max(aucs[:-1])  # ...because the last epoch did not improve
    assert trained.result.valid_auc_best == max(aucs)


def test_a_validation_split_of_one_class_early_stops_on_logloss(criteo_shards, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(criteo_shards, data)
    for f in (data / "valid").glob("*.parquet"):  # no clicks in valid: its AUC is undefined
        table = pq.read_table(f)
        pq.write_table(table.set_column(table.column_names.index("label"), "label",
                                        pa.array(np.zeros(table.num_rows, np.float32))), f)
    trained = run_training(_cfg(data, tmp_path / "m", epochs=3))
    assert trained.result.early_stopping_on == "-logloss" and np.isnan(trained.result.valid_auc_best)
    assert all(np.isnan(h["valid_auc"]) for h in trained.result.history)
    assert (Path(trained.model) / "model.pt").is_file()  # the best weights by logloss were kept
    assert 0.62 < trained.result.test["auc"] < 0.85


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(criteo_shards, tmp_path):
    data = tmp_path / "data"
    for sub in ("valid", "test", "vocab"):
        (data / sub).mkdir(parents=True)
        for f in (criteo_shards / sub).iterdir():
            (data / sub / f.name).write_bytes(f.read_bytes())
    (data / "manifest.json").write_text((criteo_shards / "manifest.json").read_text())
    (data / "train").mkdir()
    files = sorted((criteo_shards / "train").glob("*.parquet"))
    table = pq.read_table(files[0])
    for _i, f in enumerate(files[1:]):
        (data / "train" / f.name).write_bytes(f.read_bytes())
    labels = table.column("label").to_numpy().copy()
    labels[len(labels) // 2] = np.nan  # one bad row, somewhere in the middle of an epoch
    poisoned = table.set_column(0, "label", pa.array(labels))
    pq.write_table(poisoned, data / "train" / files[0].name, row_group_size=table.num_rows)
    cfg = _cfg(data, tmp_path / "m", checkpoint_every_steps=1, shuffle_buffer_rows=0, batch_size=64)
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        run_training(cfg)
    root = ModelRoot.of(tmp_path / "m")
    assert root.latest() is None and root.versions() == []  # no version was committed
    saved = load_torch(root.building(root.resumable()) / "checkpoint.pt")
    assert all(torch.isfinite(t).all() for t in saved["model"].values())
    assert json.loads(saved["state"])["global_step"] > 0


def test_auto_averaging_follows_the_steps_per_epoch_and_is_recorded_in_metrics(criteo_shards, tmp_path):
    train_rows = json.loads((criteo_shards / "manifest.json").read_text())["rows"]["splits"]["train"]["rows"]
    trained = run_training(_cfg(criteo_shards, tmp_path / "m", epochs=1, batch_size=256))
    recorded = json.loads((tmp_path / "m" / trained.version / "metrics.json").read_text())["regularization"]
    steps = train_rows // 256
    assert recorded["steps_per_epoch"] == steps and recorded["ema_setting"] == "auto"
    assert recorded["ema_decay"] == pytest.approx(1 - 2 / steps, abs=1e-6)  # half an epoch of steps
    assert recorded["embedding_lr"] == ROWWISE_ADAGRAD_LR  # the default tables' optimizer's own rate
    prior = recorded["prior_rows"]  # the rarer the value, the tighter its prior
    assert prior["value_seen_10_times"] > prior["value_in_1_percent_of_rows"] > prior["value_seen_1000_times"] > 0
    # A batch so large an epoch is a few steps: no averaging, rather than one spanning epochs.
    few = run_training(_cfg(criteo_shards, tmp_path / "big", epochs=1, batch_size=4096))
    assert json.loads((tmp_path / "big" / few.version / "metrics.json").read_text())["regularization"][
        "ema_decay"] == 0.0


def test_the_moving_average_of_the_weights_is_evaluated_and_shipped(criteo_shards, tmp_path):
    # The training loop itself, which leaves its checkpoint (a committed version drops it).
    result = train(_cfg(criteo_shards, tmp_path / "m", epochs=1, ema_decay=0.9), make_backend("none"))
    saved = load_torch(tmp_path / "m" / "checkpoint.pt")
    shipped = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    averaged = {k.removeprefix("module."): v for k, v in saved["averaged"].items() if k.startswith("module.")}
    assert int(saved["averaged"]["n_averaged"]) == result.steps > 1  # updated after every step
    assert shipped.keys() == averaged.keys() == saved["model"].keys()
    assert all(torch.equal(shipped[k], averaged[k]) for k in shipped)
    trained = saved["model"]["embeddings.table.weight"]
    assert not torch.allclose(shipped["embeddings.table.weight"], trained)  # the average, not the last step
    # and the test metrics are those of the shipped weights
    model = DeepFM(DeepFMConfig.from_dict(json.loads((tmp_path / "m" / "model.json").read_text())["model"]))
    model.load_state_dict(shipped)
    assert result.test["auc"] == pytest.approx(_test_auc(model, criteo_shards), abs=1e-6)


def _test_auc(model, data) -> float:
    return evaluate(model, data / "test", PreprocessOutput.open(data).feature_map, 4096, make_backend("none"))["auc"]


def _kill_when_checkpointed(cmd, checkpoint: Path, also: Path | None = None) -> dict:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    written = [checkpoint] + ([also] if also else [])
    while not all(p.exists() for p in written) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return json.loads(load_torch(checkpoint)["state"])


@pytest.mark.stack_neutral
def test_resume_after_kill_matches_uninterrupted_run(criteo_shards, tmp_path):
    common = ["--set", f"train.data={criteo_shards}", "--set", "train.epochs=2", "--set", "train.batch_size=32",
              "--set", "train.threads=1", "--set", "train.model.embedding_dim=8",
              "--set", "train.model.hidden=[64, 32]", "--set", "train.checkpoint_every_steps=40",
              "--set", "train.ema_decay=0.9"]  # the moving average is restored too
    cli = [sys.executable, "-m", "jobs.cli", "train", "--run-date", "2026-11-27", *common]
    full = subprocess.run([*cli, "--set", f"train.output={tmp_path / 'full'}"], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert full.returncode == 0, full.stderr[-2000:]
    state = _kill_when_checkpointed([*cli, "--set", f"train.output={tmp_path / 'cut'}"], tmp_path / "cut" /
                                    ".building-2026-11-27" / "checkpoint.pt")
    assert state["epoch"] == 0 and state["step_in_epoch"] > 0  # killed in the middle of the first epoch
    assert not (tmp_path / "cut" / "LATEST").exists() and not (tmp_path / "cut" / "2026-11-27").exists()
    # As a build checkpointed by the code before `best_criterion` was named so: it resumes all the same.
    checkpoint = tmp_path / "cut" / ".building-2026-11-27" / "checkpoint.pt"
    saved = load_torch(checkpoint)
    state["best_auc"] = state.pop("best_criterion")
    torch.save({**saved, "state": json.dumps(state)}, checkpoint)
    # `--resume auto`, as the DAG's retries pass it: the killed run had the same input and config
    resumed = subprocess.run([*cli, "--set", f"train.output={tmp_path / 'cut'}", "--resume", "auto"], cwd=REPO_ROOT,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "continuing the interrupted run of model version 2026-11-27" in resumed.stderr
    assert (tmp_path / "cut" / "LATEST").read_text().strip() == "2026-11-27"
    auc_full = json.loads(full.stdout.strip().splitlines()[-1])["test"]["auc"]
    auc_resumed = json.loads(resumed.stdout.strip().splitlines()[-1])["test"]["auc"]
    assert abs(auc_full - auc_resumed) < 0.001
    # Each committed version is one MLflow run (the tests' store, MLFLOW_TRACKING_URI); the killed run logged none.
    import mlflow

    for run, output in ((full, "full"), (resumed, "cut")):
        logged = mlflow.MlflowClient().get_run(json.loads(run.stdout.strip().splitlines()[-1])["mlflow_run"])
        assert logged.data.tags["deepfm.model"] == str(tmp_path / output / "2026-11-27")
        assert logged.data.params["train.checkpoint_every_steps"] == "40"


@pytest.mark.parametrize("backend", ["torch", "horovod"])
@pytest.mark.parametrize("embedding_optimizer", ["adam", "rowwise_adagrad"])
def test_two_process_training_keeps_bit_identical_replicas(criteo_shards, tmp_path, backend, embedding_optimizer):
    # with the embedding prior and the tables' own learning rate: their gradients cross ranks too;
    # with count features, whose frequencies each rank reads from the vocabulary itself
    trained = run_training(_cfg(criteo_shards, tmp_path / backend, backend=backend, workers=2,
                               embedding_l2=10.0, embedding_lr=3e-3 if embedding_optimizer == "adam" else 3e-2,
                               embedding_optimizer=embedding_optimizer,
                               model={**SMALL_MODEL, "count_features": True}))
    assert trained.result.workers == 2
    assert 0.6 < trained.result.test["auc"] < 0.85  # learned something (the 989 test rows make AUC noisy)
    assert json.loads((Path(trained.model) / "metrics.json").read_text())["workers"] == 2
    # The row-wise optimizer's sums, kept for a warm start, written through the backend's optimizer.
    sums = Path(trained.model) / "table_accumulator.pt"
    assert sums.is_file() == (embedding_optimizer == "rowwise_adagrad")
    if sums.is_file():
        assert float(torch.load(sums, weights_only=True).max()) > 0
    # The replicas hold bit-identical weights after every epoch (each rank trained on other rows:
    # without a working gradient exchange they would differ, and training would have stopped).
    first, second = trained.result.replica_fingerprints
    assert first == second and first[1] > 0
    shipped = torch.load(Path(trained.model) / "model.pt", weights_only=True)["log_frequencies"]
    counts = pq.read_table(criteo_shards / "vocab" / "vocabulary.parquet").column("count").to_numpy()
    train_rows = json.loads((criteo_shards / "manifest.json").read_text())["rows"]["splits"]["train"]["rows"]
    assert int((shipped > 0).sum()) == len(counts)  # one frequency per counted value
    assert float(shipped.max()) == pytest.approx(np.log1p(counts.max()) / np.log1p(train_rows), rel=1e-6)


def test_training_launched_through_spark(spark, criteo_shards, tmp_path):
    trained = run_training(_cfg(criteo_shards, tmp_path / "spark", backend="torch", workers=2, launcher="spark"))
    assert trained.result.workers == 2 and 0.6 < trained.result.test["auc"] < 0.85


def test_spark_submit_trains_through_torch_distributor_and_returns(criteo_shards, tmp_path):
    """The user's command: spark-submit places 2 DDP workers, trains, and then actually exits
    (Spark 3.5 barrier tasks leave a non-daemon JVM thread that would keep spark-submit waiting)."""
    out = tmp_path / "submitted"
    result = run_cli(
        [str(REPO_ROOT / "spark-submit.sh"), "train", "--set", f"train.data={criteo_shards}",
         "--set", f"train.output={out}", "--set", "train.launcher=spark", "--set", "train.backend=torch",
         "--set", "train.workers=2", "--set", "train.epochs=1", "--set", "train.batch_size=256",
         "--set", "train.model.hidden=[64,32]", "--set", "spark.conf.spark.ui.showConsoleProgress=false"])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(next(line for line in result.stdout.splitlines() if line.startswith('{"model"')))
    assert summary["workers"] == 2
    assert (out / summary["version"] / "model.pt").is_file() and (out / "LATEST").is_file()


@pytest.mark.slow
def test_horovod_training_launched_through_spark(spark, criteo_shards, tmp_path):
    trained = run_training(_cfg(criteo_shards, tmp_path / "hvd-spark", backend="horovod", workers=2,
                               launcher="spark", epochs=1))
    assert trained.result.workers == 2 and 0.6 < trained.result.test["auc"] < 0.85


@pytest.mark.parametrize("sparse", [True, False])
def test_embedding_tables_step_at_their_own_learning_rate(sparse):
    torch.manual_seed(0)
    model = DeepFM(DeepFMConfig(vocab_sizes=(50, 30), num_dense=1, embedding_dim=4, hidden=(8,),
                                sparse_embeddings=sparse))
    table, first_layer = model.embeddings.table.weight, model.deep.mlp[0].weight
    before = table.detach().clone(), first_layer.detach().clone()
    optimizers = make_optimizers(model, lr=1e-3, embedding_lr=2e-2)
    ids, dense = torch.randint(0, 30, (64, 2)), torch.rand(64, 1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(ids, dense), torch.rand(64).round())
    loss.backward()
    for opt in optimizers:
        opt.step()
    # Adam's first step moves every parameter with a gradient by about its learning rate
    assert (table.detach() - before[0]).abs().max().item() == pytest.approx(2e-2, rel=1e-3)
    assert (first_layer.detach() - before[1]).abs().max().item() == pytest.approx(1e-3, rel=1e-3)


@pytest.mark.stack_neutral
def test_tables_bigger_than_a_workers_memory_exit_2_before_training_naming_the_settings(criteo_shards, tmp_path):
    cli = [sys.executable, "-m", "jobs.cli", "train", "--set", f"train.data={criteo_shards}",
           "--set", f"train.output={tmp_path / 'models'}", "--set", "train.backend=torch", "--set", "train.workers=2",
           "--set", "train.batch_size=64"]  # steps enough for the moving average (train.ema_decay auto)
    fields = json.loads((criteo_shards / "manifest.json").read_text())["feature_map"]["fields"]
    rows = sum(f["vocab_size"] for f in fields if f["kind"] == "categorical")
    # Adam, the moving average and the prior at dim 16: 17 x 4 x (1 + 2 + 1) + 4 bytes a row
    too_small = f"{(rows * 276 - 1) / 2**20:.3f}m"
    refused = subprocess.run([*cli, "--set", f"train.worker_memory={too_small}",
                              "--set", "train.embedding_optimizer=adam"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert refused.returncode == 2, refused.stderr[-3000:]
    errors = [line for line in refused.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "train.worker_memory" in errors[0], refused.stderr[-3000:]
    assert f"{rows:,} rows x 276 bytes" in errors[0]
    assert "train.embedding_optimizer=rowwise_adagrad (276 -> 144" in errors[0]
    assert "Traceback" not in refused.stderr and not (tmp_path / "models" / "LATEST").exists()
    # The default row-wise optimizer's 144 bytes a row fit the same memory.
    leaner = subprocess.run([*cli, "--set", f"train.worker_memory={too_small}", "--set", "train.epochs=1",
                             "--set", "train.threads=1"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert leaner.returncode == 0, leaner.stderr[-3000:]
    assert f"embedding tables: {rows:,} rows x 144 bytes" in leaner.stderr
    # ... and a memory below them is refused without a hint to the optimizer it already has.
    smaller = subprocess.run([*cli, "--set", f"train.worker_memory={rows * 144 // 2**10 - 1}k"],
                             cwd=REPO_ROOT, capture_output=True, text=True)
    assert smaller.returncode == 2, smaller.stderr[-3000:]
    errors = [line for line in smaller.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"{rows:,} rows x 144 bytes" in errors[0] and "embedding_optimizer" not in errors[0]


def test_a_worker_memory_that_is_not_a_size_exits_2_naming_it(tmp_path):
    refused = subprocess.run([sys.executable, "-m", "jobs.cli", "train", "--set", f"train.data={tmp_path}",
                              "--set", f"train.output={tmp_path / 'models'}", "--set", "train.worker_memory=lots"],
                             cwd=REPO_ROOT, capture_output=True, text=True)
    assert refused.returncode == 2
    assert ("train.worker_memory (set in --set train.worker_memory=lots): 'lots' is not a size (e.g. 512m, 8g)"
            in refused.stderr), refused.stderr[-3000:]
