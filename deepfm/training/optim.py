"""The optimizers: Adam for the dense layers; for the embedding tables lazy (sparse) Adam, or
row-wise Adagrad where the tables' optimizer state must be small.

`RowSparseAdam` is torch's `SparseAdam`, the same algorithm, state and `state_dict`, with each
update applied to the gathered rows a batch touched. torch writes its three updates as
`dense.add_(sparse)` and reads the old moments with `sparse_mask`, which on a CPU cost about 12 ms
a step for 34k touched rows of a 1.4M-row table (a third of the time outside the MLP's matmuls);
gathering the rows, updating them in place and copying them back takes about 3 ms
(`bench/bench_step.py`). It subclasses `SparseAdam`, so a checkpoint of either loads into the other
and Horovod's `broadcast_optimizer_state` treats it as the sparse optimizer it is.

`RowWiseAdagrad` keeps one float per table row instead of Adam's two vectors (4 bytes a row against
8 x (embedding_dim + 1)): the optimizer of TorchRec's and FBGEMM's embedding tables
(`EXACT_ROWWISE_ADAGRAD`), written here for torch's sparse gradients, which neither serves.
"""

from __future__ import annotations

import math

import torch

from deepfm.model import DeepFM
from deepfm.training.precision import round_stochastically


class _RowUpdates:
    """`step` for an optimizer whose update is written per parameter (`_update`): torch's loop and closure."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss


class RowSparseAdam(_RowUpdates, torch.optim.SparseAdam):
    """Lazy Adam: only the rows with a gradient move, their moments decaying at the global step."""

    def _update(self, param: torch.Tensor, group: dict) -> None:
        if not param.grad.is_sparse:
            raise RuntimeError("SparseAdam does not support dense gradients, please consider Adam instead")
        state = self.state[param]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["step"] += 1
        _update_rows(param, param.grad, state, group)


def _update_rows(param: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
    """SparseAdam's update (`torch.optim._functional.sparse_adam`) on the gradient's rows."""
    rows, values = _touched_rows(grad)
    if values.numel() == 0:
        return
    if group.get("maximize", False):
        values = -values
    beta1, beta2 = group["betas"]
    exp_avg = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
    exp_avg_sq = state["exp_avg_sq"].index_select(0, rows).lerp_(values.square(), 1 - beta2)
    state["exp_avg"].index_copy_(0, rows, exp_avg)
    state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
    step = state["step"]
    step_size = float(group["lr"]) * math.sqrt(1 - beta2**step) / (1 - beta1**step)
    moved = exp_avg.div_(exp_avg_sq.sqrt_().add_(group["eps"])).mul_(-step_size)
    param.index_copy_(0, rows, param.index_select(0, rows).add_(moved))


class RowWiseAdagrad(_RowUpdates, torch.optim.Optimizer):
    """Adagrad with one accumulator per row: a touched row r with gradient g_r (its D entries) adds
    mean(g_r^2) to its sum and moves by -lr g_r / (sqrt(sum) + eps), FBGEMM's exact row-wise rule.

    A row without a gradient neither moves nor accumulates, so the update is the same whether the
    gradient comes sparse (only the batch's rows) or dense (NCCL's DDP, where every other row is 0).
    The sum starts at `initial_accumulator_value` (FBGEMM: 0; a small positive value keeps a row's
    first step from being lr in every coordinate whatever the gradient's size). A warm start sets
    the rows it takes over to a share of their sums in the earlier version (`accumulator`,
    train.warm_start_accumulator), so that a row learned over earlier days keeps smaller steps
    than a new one instead of being kicked by lr on its first.
    """

    def __init__(self, params, lr: float = 0.01, eps: float = 1e-8, initial_accumulator_value: float = 0.0) -> None:
        # Defaults for every argument: Horovod's DistributedOptimizer rebuilds the optimizer from
        # its param_groups alone.
        if lr <= 0 or eps <= 0 or initial_accumulator_value < 0:
            raise ValueError(f"RowWiseAdagrad: lr {lr} and eps {eps} must be > 0, "
                             f"initial_accumulator_value {initial_accumulator_value} >= 0")
        super().__init__(params, {"lr": lr, "eps": eps, "initial_accumulator_value": initial_accumulator_value})

    def accumulator(self, param: torch.Tensor) -> torch.Tensor:
        """Each row's sum of mean squared gradients: how far its steps have shrunk."""
        state = self.state[param]
        if not state:
            group = next(g for g in self.param_groups if any(p is param for p in g["params"]))
            state["sum"] = torch.full((param.shape[0],), float(group["initial_accumulator_value"]),
                                      dtype=torch.float32, device=param.device)
        return state["sum"]

    def _update(self, param: torch.Tensor, group: dict) -> None:
        accumulator = self.accumulator(param)
        rows, values = _touched_rows(param.grad)
        if values.numel() == 0:
            return
        total = accumulator.index_select(0, rows).add_(values.float().square().mean(dim=1))
        accumulator.index_copy_(0, rows, total)
        moved = values.float().div(total.sqrt_().add_(group["eps"]).unsqueeze(1)).mul_(-float(group["lr"]))
        # A bf16 table (train.table_precision) is updated in fp32 and rounded stochastically.
        updated = param.index_select(0, rows).float().add_(moved)
        param.index_copy_(0, rows, round_stochastically(updated, param.dtype))


def _touched_rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row indices, their gradient rows), each row once: the updates are non-linear in the gradient."""
    if grad.is_sparse:
        if grad.sparse_dim() != 1:  # indexed by element (Horovod's zero `dense.to_sparse()`), not by row
            grad = grad.to_dense().to_sparse(1)
        grad = grad.coalesce()
        return grad.indices()[0], grad.values()
    rows = grad.abs().sum(dim=1).nonzero().squeeze(1)
    return rows, grad.index_select(0, rows)


def make_optimizers(model: DeepFM, lr: float, embedding_lr: float,
                    embedding_optimizer: str = "adam") -> list[torch.optim.Optimizer]:
    """Sparse tables get RowSparseAdam (lazy: only the rows in the batch move) or RowWiseAdagrad;
    the rest Adam, fused (one kernel for all its tensors: 0.15 ms a step for the MLP on a CPU,
    against 0.6-1.0)."""
    tables = model.embedding_parameters()
    if tables and embedding_optimizer == "rowwise_adagrad":  # sparse or dense gradients alike
        return [torch.optim.Adam(model.dense_parameters(), lr=lr, fused=True), RowWiseAdagrad(tables, lr=embedding_lr)]
    if model.config.sparse_embeddings and tables:
        return [torch.optim.Adam(model.dense_parameters(), lr=lr, fused=True), RowSparseAdam(tables, lr=embedding_lr)]
    if embedding_lr == lr or not model.embedding_parameters():
        return [torch.optim.Adam(model.parameters(), lr=lr, fused=True)]
    return [torch.optim.Adam([{"params": model.dense_parameters()},
                              {"params": model.embedding_parameters(), "lr": embedding_lr}], lr=lr, fused=True)]
