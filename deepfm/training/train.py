"""The training loop: one function that every backend and launcher runs on every worker.

Per epoch: train on this rank's share of the shards, evaluate exactly on the whole validation
split (predictions gathered from all ranks), decay the learning rate on a plateau, stop early
when validation AUC (the logloss where a one-class split has no AUC) stops improving. Rank 0
alone logs progress and writes files. With
`ema_decay`, the weights evaluated, kept and shipped are the moving average of the trained ones
(every rank holds the same average: the trained weights are identical on all ranks).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from deepfm import progress
from deepfm.config import TrainConfig
from deepfm.errors import UserError
from deepfm.features.feature_map import FeatureMap
from deepfm.features.preprocess_output import PreprocessOutput
from deepfm.features.vocabulary import row_counts
from deepfm.model import DeepFM, DeepFMConfig, init_table_
from deepfm.storage.location import Location, Where
from deepfm.tracking.report import plot_training_curves
from deepfm.training import checkpoint as ckpt
from deepfm.training.distributed import Backend
from deepfm.training.metrics import binary_metrics
from deepfm.training.model_versions import (
    ACCUMULATOR,
    ACCUMULATOR_STEM,
    CURVES,
    METRICS,
    WEIGHTS,
    TrainingResult,
    open_model_version,
    write_model_version,
)
from deepfm.training.optim import RowWiseAdagrad, make_optimizers
from deepfm.training.precision import check_precision
from deepfm.training.readers import Batch, Reader, evaluation_reader, make_reader
from deepfm.training.regularization import EmbeddingPrior
from deepfm.training.sharding import (
    TABLE_KEY,
    RowShardedTable,
    in_lockstep,
    is_sharded,
    replicated_parameters,
    stripe_file,
)
from deepfm.training.warm_start import WarmStartError, check_compatible, take_over

log = logging.getLogger(__name__)


class NonFiniteLossError(UserError, RuntimeError):
    """Training diverged: a lower learning rate or cleaner input is needed, not a retry."""


class ReplicaDivergenceError(RuntimeError):
    """The workers' copies of the model differ: the gradient exchange is broken (a bug, exit 1)."""


@dataclass
class TrainState:
    epoch: int = 0  # the epoch in progress (or next to start)
    step_in_epoch: int = 0  # batches of `epoch` already trained
    global_step: int = 0
    best_criterion: float = -math.inf  # the best validation AUC so far, or -logloss (see `monitor`)
    monitor: str = "auc"  # or "-logloss" where the validation split has one class and no AUC
    epochs_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    replica_fingerprints: list[list[float]] = field(default_factory=list)  # per rank, after the last epoch


def model_config(fmap: FeatureMap, cfg: TrainConfig, sparse: bool) -> DeepFMConfig:
    m = cfg.model
    return DeepFMConfig(
        vocab_sizes=tuple(int(f.vocab_size) for f in fmap.categorical),
        num_dense=len(fmap.dense),
        embedding_dim=m.embedding_dim,
        hidden=tuple(m.hidden),
        activation=m.activation,
        dropout=m.dropout,
        batch_norm=m.batch_norm,
        use_fm=m.use_fm,
        use_deep=m.use_deep,
        sparse_embeddings=sparse,
        precision=cfg.precision,
        count_features=m.count_features,
        mixed_dim_exponent=m.mixed_dim_exponent,
        field_pair_weights=m.field_pair_weights,
    )


@dataclass
class Run:
    """What one training run is made of, built once before the first step."""

    model: torch.nn.Module  # what the steps run: the model as the backend wrapped it (DDP, Horovod)
    raw_model: DeepFM  # the same weights, unwrapped
    evaluated: DeepFM  # validated, kept and shipped: raw_model, or the moving average of its weights
    averaged: AveragedModel | None
    optimizers: list[torch.optim.Optimizer]
    schedulers: list[torch.optim.lr_scheduler.ReduceLROnPlateau]
    prior: EmbeddingPrior | None
    regularization: dict[str, Any]  # the strengths as resolved for this data and batch, for metrics.json
    warm_start: dict[str, Any] | None  # what the model was initialised from (deepfm/training/warm_start.py)


# The embedding tables' storage (train.table_precision): they compute in fp32 whatever they are kept in.
TABLE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

# The moving average spans half an epoch: long enough to smooth Adam's last steps, short enough
# that the weights it ships are this epoch's. Below this many steps per epoch it is left off.
EMA_EPOCH_FRACTION, EMA_MIN_STEPS_PER_EPOCH = 0.5, 8


# Row-wise Adagrad's own step size (its steps shrink by themselves as a row's gradients add up):
# measured on the long-tail teacher, where 0.1 diverged (bench/RESULTS.md, issue 28).
ROWWISE_ADAGRAD_LR = 0.03


def resolve_regularization(cfg: TrainConfig, train_rows: int, world: int) -> dict[str, Any]:
    """The learning-rate split, prior and averaging that this run uses, with `auto` worked out
    from the training rows and the global batch."""
    steps_per_epoch = max(1, train_rows // (cfg.batch_size * world))
    if cfg.ema_decay == "auto":
        horizon = EMA_EPOCH_FRACTION * steps_per_epoch
        # An average of bf16 rows would round each step's small share away (train.table_precision).
        averages = steps_per_epoch >= EMA_MIN_STEPS_PER_EPOCH and cfg.table_precision == "fp32"
        ema_decay = 1.0 - 1.0 / horizon if averages else 0.0
    else:
        ema_decay = float(cfg.ema_decay)
    if cfg.embedding_lr is not None:
        embedding_lr = cfg.embedding_lr
    elif cfg.embedding_optimizer == "rowwise_adagrad":
        embedding_lr = ROWWISE_ADAGRAD_LR
    else:
        embedding_lr = float(f"{10 * cfg.lr:.6g}")
    return {"lr": cfg.lr, "embedding_lr": embedding_lr, "train_rows": train_rows,
            "steps_per_epoch": steps_per_epoch, "ema_decay": round(ema_decay, 6), "ema_setting": cfg.ema_decay,
            "ema_horizon_steps": round(1 / (1 - ema_decay), 1) if ema_decay else 0,
            "embedding_l2": cfg.embedding_l2, "embedding_l2_rarity_exponent": cfg.embedding_l2_rarity_exponent}


def embedding_table(cfg: TrainConfig, config: DeepFMConfig) -> torch.nn.Module | None:
    """The table train.embeddings and train.table_precision ask for, initialised; None where the
    model's own (a whole fp32 table) is it. A sharded table needs torch.distributed initialised."""
    rows, width, dtype = sum(config.vocab_sizes), config.embedding_dim + 1, TABLE_DTYPES[cfg.table_precision]
    if rows and cfg.embeddings == "sharded":
        table = RowShardedTable(rows, width, dtype=dtype)
        table.initialize(cfg.seed)
        return table
    if rows and dtype != torch.float32:
        table = torch.nn.Embedding(rows, width, sparse=config.sparse_embeddings, dtype=dtype)
        init_table_(table.weight)
        return table
    return None


def build_run(cfg: TrainConfig, backend: Backend, data: PreprocessOutput) -> Run:
    # NCCL has no sparse allreduce: on GPUs under DDP replicated tables use dense gradients. A
    # sharded table's gradient never goes through DDP: it comes sparse, to the rows' owners.
    sparse = cfg.embeddings == "sharded" or (cfg.model.sparse_embeddings
                                             and not (cfg.backend == "torch" and backend.device.type == "cuda"))
    torch.manual_seed(cfg.seed)
    fmap = data.feature_map
    config = model_config(fmap, cfg, sparse)
    table = embedding_table(cfg, config)
    raw_model = DeepFM(config, table)
    train_rows = data.rows("train")
    vocabulary = data.vocabulary
    taken = center = None
    if cfg.warm_start != "none":  # before the value counts: they decide anew what the vocabulary decides
        if cfg.warm_start == "latest":
            raise WarmStartError("train.warm_start=latest names a version of train.output's model root, which "
                                 "`deepfm-pipeline train` resolves; here give a version's directory, or none")
        source = open_model_version(cfg.warm_start)
        check_compatible(source, raw_model.config, fmap)
        taken = take_over(raw_model, fmap, vocabulary, source)
        center = taken.center if table is None else table.holding(taken.center)
    if raw_model.config.reads_value_counts:  # before the backend syncs the ranks' models
        raw_model.set_value_counts(torch.from_numpy(row_counts(vocabulary, fmap)).float(), train_rows)
    settings = resolve_regularization(cfg, train_rows, backend.world)
    model, optimizers = backend.prepare(raw_model, make_optimizers(raw_model, cfg.lr, settings["embedding_lr"],
                                                                     cfg.embedding_optimizer))
    if taken is not None:
        taken.seed_optimizers(raw_model, optimizers, cfg.warm_start_accumulator)
    prior = None
    if cfg.embedding_l2 and raw_model.embedding_parameters():
        prior = EmbeddingPrior.from_vocabulary(vocabulary, fmap, train_rows, cfg.embedding_l2, backend.device,
                                               cfg.embedding_l2_rarity_exponent,
                                               center if cfg.warm_start_prior == "earlier" else None)
        settings["prior_rows"] = prior.describe(train_rows)
    # Buffers (batch-norm statistics) are copied from the trained model rather than averaged.
    averaged = (AveragedModel(raw_model, multi_avg_fn=get_ema_multi_avg_fn(settings["ema_decay"]))
                if settings["ema_decay"] else None)
    schedulers = [torch.optim.lr_scheduler.ReduceLROnPlateau(o, mode="max", factor=cfg.lr_decay,
                                                             patience=cfg.lr_patience) for o in optimizers]
    return Run(model, raw_model, raw_model if averaged is None else averaged.module, averaged, optimizers,
               schedulers, prior, settings, taken.summary if taken is not None else None)


def train(cfg: TrainConfig, backend: Backend, resume: bool = False,
          stop_after_epoch: Callable[[int, dict[str, float]], bool] | None = None) -> TrainingResult:
    """Train, evaluate on test with the best weights, and (rank 0) write the model directory.

    `stop_after_epoch(epoch, validation metrics)` (one process only: the tuner's pruning) ends
    training early when it returns True; the result then says `stopped`.
    """
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // max(1, backend.world)))
    data, out = PreprocessOutput.open(cfg.data), Location.of(cfg.output)
    fmap = data.feature_map
    check_precision(cfg.precision, backend.device)
    run = build_run(cfg, backend, data)
    state = TrainState()
    if resume and _checkpoint_to_resume(out, run, backend):
        state = _restore(out, run, backend)
    elif backend.rank == 0:
        _fresh_output(out, backend.world)
    backend.barrier()

    reader = make_reader(cfg.reader, data.split("train"), fmap, cfg.batch_size, rank=backend.rank, world=backend.world,
                         seed=cfg.seed, shuffle_buffer_rows=cfg.shuffle_buffer_rows)
    stopped = False
    while (state.epoch < cfg.epochs and state.epochs_without_improvement <= cfg.early_stopping_patience
           and not stopped):
        reader.set_epoch(state.epoch)
        train_loss, seconds, samples = _train_epoch(cfg, run, reader, backend, state)
        state.replica_fingerprints = check_replicas_identical(run.raw_model, backend, state.epoch)
        valid = evaluate(run.evaluated, data.split("valid"), fmap, cfg.eval_batch_size, backend)
        improved = _end_of_epoch(run, state, valid)
        state.history.append({"epoch": state.epoch, "step": state.global_step, "train_loss": train_loss,
                              "valid_auc": valid["auc"], "valid_logloss": valid["logloss"],
                              "samples_per_s": samples / seconds if seconds else 0.0,
                              "lr": run.optimizers[0].param_groups[0]["lr"]})
        state.epoch, state.step_in_epoch = state.epoch + 1, 0
        if backend.rank == 0:
            log.info("epoch %d: train loss %.4f, valid AUC %.4f logloss %.4f, %.0f samples/s%s",
                     state.epoch, train_loss, valid["auc"], valid["logloss"], samples / max(seconds, 1e-9),
                     " (best)" if improved else "")
        if improved:
            _save_weights(run.evaluated, out, backend)
        _save_checkpoint(out, run, state, backend)
        backend.barrier()
        stopped = stop_after_epoch is not None and bool(stop_after_epoch(state.epoch - 1, valid))

    _load_weights(run.raw_model, out, backend)
    _save_accumulator(run, out, backend)
    test = evaluate(run.raw_model, data.split("test"), fmap, cfg.eval_batch_size, backend)
    result = TrainingResult(
        valid_auc_best=state.best_criterion if state.monitor == "auc" else math.nan,
        early_stopping_on=state.monitor, stopped=stopped, test=test, epochs=state.epoch, steps=state.global_step,
        history=state.history, workers=backend.world, regularization=run.regularization,
        replica_fingerprints=state.replica_fingerprints, warm_start=run.warm_start)
    if backend.rank == 0:
        write_model_version(out, run.raw_model, data, cfg.model_dump(mode="json"), result,
                            table_stripes=backend.world if is_sharded(run.raw_model) else 0)
        plot_training_curves(result.history, out / CURVES)
        log.info("test AUC %.4f logloss %.4f; model in %s", test["auc"], test["logloss"], out)
    elif is_sharded(run.raw_model):  # rank 0's checkpoint goes when the version is committed
        (out / _checkpoint_file(backend.rank)).unlink()
    return result


def _end_of_epoch(run: Run, state: TrainState, valid: dict[str, float]) -> bool:
    """Step the learning-rate schedule and the early-stopping count on validation; True when this
    epoch's weights are the best so far.

    The criterion is AUC, or minus the logloss when AUC is undefined (a validation split of one
    class): a NaN criterion would never improve, so no weights would ever be kept.
    """
    if state.epoch == 0:  # whether the split has both classes does not change from epoch to epoch
        state.monitor = "auc" if math.isfinite(valid["auc"]) else "-logloss"
        if state.monitor != "auc":
            log.warning("validation AUC is undefined (%d rows, CTR %.4f: one class); early stopping and the "
                        "learning-rate schedule follow the validation logloss", valid["rows"], valid["ctr_observed"])
    criterion = valid["auc"] if state.monitor == "auc" else -valid["logloss"]
    if not math.isfinite(criterion):
        raise UserError(f"the validation split of {valid['rows']} rows gives no finite AUC or logloss: "
                        "check train.data's valid/ split")
    for scheduler in run.schedulers:
        scheduler.step(criterion)
    improved = criterion > state.best_criterion
    state.best_criterion = max(state.best_criterion, criterion)
    state.epochs_without_improvement = 0 if improved else state.epochs_without_improvement + 1
    return improved


def _train_epoch(cfg: TrainConfig, run: Run, reader: Reader, backend: Backend,
                 state: TrainState) -> tuple[float, float, int]:
    run.model.train()
    progress = _progress(len(reader), state.epoch, backend.rank == 0)
    loss_sum, rows, start = 0.0, 0, time.perf_counter()
    for step, batch in enumerate(reader):
        if step < state.step_in_epoch:  # resuming mid-epoch: the order is the same, skip what was done
            continue
        totals = train_step(run.model, run.raw_model, run.optimizers, batch, backend, run.prior)
        if not torch.isfinite(totals[0]):
            saved = Location.of(cfg.output) / ckpt.CHECKPOINT
            kept = f"The last good checkpoint is {saved}." if saved.is_file() else "No checkpoint was written yet."
            raise NonFiniteLossError(
                f"non-finite loss at epoch {state.epoch} step {step}; training stopped before the update. "
                f"{kept} Lower train.lr, or check the input for NaN or infinite values."
            )
        for opt in run.optimizers:
            opt.step()
        if run.averaged is not None:
            run.averaged.update_parameters(run.raw_model)
        loss_sum += float(totals[0])
        rows += int(totals[1])
        state.step_in_epoch = step + 1
        state.global_step += 1
        progress.update(float(totals[0] / totals[1]), int(totals[1]))
        if cfg.checkpoint_every_steps and state.global_step % cfg.checkpoint_every_steps == 0:
            _save_checkpoint(Location.of(cfg.output), run, state, backend)
    progress.close()
    return loss_sum / max(rows, 1), time.perf_counter() - start, rows


@torch.no_grad()
def check_replicas_identical(model: DeepFM, backend: Backend, epoch: int) -> list[list[float]]:
    """Every rank's (sum, sum of squares) of the trained weights, in float64, which data-parallel
    training keeps bit-identical: the ranks see different rows, so without a working gradient
    exchange they would differ after the first step. Raises when they do. A sharded table's
    stripes differ by design and are left out."""
    weights = [p.detach().double() for p in replicated_parameters(model)]
    mine = torch.stack([sum(w.sum() for w in weights), sum((w * w).sum() for w in weights)])
    every = backend.allgather(mine).cpu().reshape(backend.world, 2)
    if not bool((every == every[0]).all()):
        raise ReplicaDivergenceError(f"after epoch {epoch + 1} the workers' weights differ (sum, sum of squares per "
                                     f"rank: {every.tolist()}): the gradient exchange of train.backend is broken")
    return every.tolist()


def train_step(model, raw_model: DeepFM, optimizers, batch, backend: Backend,
               prior: EmbeddingPrior | None = None) -> torch.Tensor:
    """Forward and backward of one batch (gradients averaged across ranks by the backend).

    Returns [loss x rows, rows] summed over all ranks, so that every rank learns of a
    non-finite loss at the same step and all stop together, before any optimizer step.
    """
    batch = batch.to(backend.device)
    logits = model(batch.ids, batch.dense)
    loss = F.binary_cross_entropy_with_logits(logits, batch.label)
    objective = loss if prior is None else loss + prior.penalty(raw_model, batch.ids)
    for opt in optimizers:
        opt.zero_grad()  # Horovod's wrapper takes no arguments; torch defaults to set_to_none
    objective.backward()
    rows = torch.tensor(float(len(batch)), device=loss.device)
    return backend.allreduce_sum(torch.stack([loss.detach() * len(batch), rows]))


@torch.no_grad()
def predict(model: DeepFM, reader) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    device = next(model.parameters()).device
    labels, probs = [], []
    for batch in reader:
        batch = batch.to(device)
        probs.append(torch.sigmoid(model(batch.ids, batch.dense)).cpu())
        labels.append(batch.label.cpu())
    if not labels:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return torch.cat(labels).numpy(), torch.cat(probs).numpy()


def evaluate(model: DeepFM, split_dir: Where, fmap: FeatureMap, batch_size: int, backend: Backend) -> dict:
    """Exact metrics over every row of the split: each rank predicts its share, all gather."""
    batches = evaluation_reader(split_dir, fmap, batch_size, backend.rank, backend.world)
    if is_sharded(model):
        nothing = Batch(torch.zeros(0, len(fmap.categorical), dtype=torch.int32), torch.zeros(0, len(fmap.dense)),
                        torch.zeros(0))
        batches = in_lockstep(batches, nothing, backend.allreduce_sum)
    labels, probs = predict(model, batches)
    labels = backend.allgather(torch.from_numpy(labels)).numpy()
    probs = backend.allgather(torch.from_numpy(probs)).numpy()
    return binary_metrics(labels, probs)


# ------------------------------------------------------------------------------------ checkpoints
# Replicated, rank 0 writes the weights and the checkpoint for all. Sharded, every rank holds rows
# no other has: each writes its stripe of the weights and a checkpoint of its own, and rank 0's
# weights file holds everything but the table.
def _checkpoint_file(rank: int) -> str:
    return ckpt.CHECKPOINT if rank == 0 else f"checkpoint.rank{rank}.pt"


def _my_checkpoint(out: Location, run: Run, backend: Backend) -> Location:
    """The checkpoint this rank reads: its own when sharded, rank 0's for all when replicated."""
    return out / (_checkpoint_file(backend.rank) if is_sharded(run.raw_model) else ckpt.CHECKPOINT)


def _fresh_output(out: Location, world: int) -> None:
    stale = [name for rank in range(world)
             for name in (_checkpoint_file(rank), stripe_file(rank, world), stripe_file(rank, world, ACCUMULATOR_STEM))]
    for name in (*stale, WEIGHTS, METRICS, ACCUMULATOR):
        (out / name).unlink()
    out.mkdir()


def _save_weights(model: DeepFM, out: Location, backend: Backend) -> None:
    state = model.state_dict()
    if is_sharded(model):
        ckpt.save_torch(state.pop(TABLE_KEY), out / stripe_file(backend.rank, backend.world))
    if backend.rank == 0:
        ckpt.save_torch(state, out / WEIGHTS)


def _save_accumulator(run: Run, out: Location, backend: Backend) -> None:
    """The row-wise optimizer's sum for each table row, for a later warm start to take over
    (model_versions.ACCUMULATOR): the sums at the end of training, a little past the best epoch's
    weights, as the sums only grow."""
    tables = run.raw_model.embedding_parameters()
    adagrad = [o for o in run.optimizers if isinstance(o, RowWiseAdagrad)]
    if not tables or not adagrad:
        return
    sums = adagrad[0].accumulator(tables[0]).cpu()
    if is_sharded(run.raw_model):
        ckpt.save_torch(sums, out / stripe_file(backend.rank, backend.world, ACCUMULATOR_STEM))
    elif backend.rank == 0:
        ckpt.save_torch(sums, out / ACCUMULATOR)


def _load_weights(model: DeepFM, out: Location, backend: Backend) -> None:
    state = ckpt.load_torch(out / WEIGHTS, backend.device)
    if is_sharded(model):
        state[TABLE_KEY] = ckpt.load_torch(out / stripe_file(backend.rank, backend.world), backend.device)
    model.load_state_dict(state)


def _save_checkpoint(out: Location, run: Run, state: TrainState, backend: Backend) -> None:
    if backend.rank == 0 or is_sharded(run.raw_model):
        ckpt.save_checkpoint(out / _checkpoint_file(backend.rank), run.raw_model, run.optimizers, run.schedulers,
                             state.__dict__, run.averaged)


def _checkpoint_to_resume(out: Location, run: Run, backend: Backend) -> bool:
    """Whether there is a checkpoint to resume from; sharded, every rank must have its own."""
    mine = _my_checkpoint(out, run, backend).is_file()
    if not is_sharded(run.raw_model):
        return mine
    ranks_with_one = int(backend.allreduce_sum(torch.tensor([float(mine)]))[0])
    if 0 < ranks_with_one < backend.world:
        raise UserError(f"{out} holds the checkpoints of {ranks_with_one} of the {backend.world} workers of a sharded "
                        "run (train.workers changed, or a run was killed while writing them): run without --resume "
                        "to train from scratch")
    return ranks_with_one == backend.world


def _restore(out: Location, run: Run, backend: Backend) -> TrainState:
    path = _my_checkpoint(out, run, backend)
    saved = ckpt.restore_checkpoint(path, run.raw_model, run.optimizers, run.schedulers, run.averaged, backend.device)
    if "best_auc" in saved:  # a checkpoint written before the name said what it holds
        saved["best_criterion"] = saved.pop("best_auc")
    state = TrainState(**saved)
    steps = backend.allgather(torch.tensor([float(state.global_step)]))
    if not bool((steps == steps[0]).all()):
        raise UserError(f"the workers' checkpoints in {out} are from different steps ({steps.int().tolist()}): a run "
                        "was killed while writing them; run without --resume to train from scratch")
    if backend.rank == 0:
        log.info("resumed from %s at epoch %d step %d", path, state.epoch, state.step_in_epoch)
    return state


class _progress:
    """Rank 0's progress: a tqdm bar with loss and samples/s in a terminal, and elsewhere (a log
    file, Spark's executors) a line every so often (deepfm/progress.py); nothing on other ranks."""

    def __init__(self, total: int, epoch: int, enabled: bool) -> None:
        self.bar, self.lines = None, None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=f"epoch {epoch + 1}", unit="step", leave=False,
                            mininterval=2.0, disable=None)  # None: off when stderr is not a terminal
            if self.bar.disable:
                self.lines = progress.Periodic(log, f"epoch {epoch + 1}", total, "steps")
        self.start, self.samples, self.steps = time.perf_counter(), 0, 0

    def update(self, loss: float, samples: int) -> None:
        self.samples += samples
        self.steps += 1
        if not math.isfinite(loss):
            return
        rate = self.samples / max(time.perf_counter() - self.start, 1e-9)
        if self.lines is not None:
            self.lines.update(self.steps, f"loss {loss:.4f}, {rate:,.0f} samples/s")
        elif self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{rate:,.0f}", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
