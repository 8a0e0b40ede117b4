"""An embedding table whose rows are spread over the training workers (row-wise sharding).

Worker r of N stores the global rows r, r + N, r + 2N, ... (its local row i is global row
i N + r) and their optimizer state: each worker holds 1/N of the table instead of all of it. A
lookup sends each distinct id of the batch to the worker that owns it and the rows back
(`all_to_all_single`, uneven splits); the backward pass sends each looked-up row's gradient to its
owner, which updates its rows with the tables' optimizer (deepfm/training/optim.py) from a sparse
gradient. Gradients are divided by N, the mean DistributedDataParallel takes of replicated
parameters, so that sharded training takes the steps replicated training takes.

Striped rather than contiguous ranges: a field's frequent values sit at its low ids (vocabularies
are ordered by count), so contiguous ranges would send the hot rows of every field to a few workers.

TorchRec was weighed first (bench/RESULTS.md, issue 28): on CPU it shards table- or column-wise only,
and not a 17-wide row. The exchange runs on a process group of its own, so that its collectives,
issued inside the backward pass, never interleave with DistributedDataParallel's on the default one.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class RowShardedTable(nn.Module):
    """`rows` x `width` table, this worker's stripe of it in `weight` ([local rows, width])."""

    def __init__(self, rows: int, width: int, group: dist.ProcessGroup | None = None) -> None:
        super().__init__()
        self.group = group if group is not None else dist.new_group(backend="gloo")
        self.world, self.rank = dist.get_world_size(self.group), dist.get_rank(self.group)
        self.rows, self.width = rows, width
        self.weight = nn.Parameter(torch.empty(len(range(self.rank, rows, self.world)), width))

    def owned_rows(self) -> torch.Tensor:
        """The global ids of this worker's rows, in the order of `weight`."""
        return torch.arange(self.rank, self.rows, self.world)

    @torch.no_grad()
    def load_full(self, table: torch.Tensor) -> None:
        """Take this worker's stripe of a whole [rows, width] table."""
        self.weight.copy_(table[self.rank::self.world])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """The rows of global `ids` (any shape), [*ids.shape, width]."""
        unique, inverse = torch.unique(ids.long(), return_inverse=True)
        return _Exchange.apply(self.weight, unique, self.world, self.group)[inverse]


class _Exchange(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: torch.Tensor, unique: torch.Tensor, world: int, group) -> torch.Tensor:
        owner = unique % world
        order = torch.argsort(owner, stable=True)
        send = torch.bincount(owner, minlength=world)
        receive = torch.empty_like(send)
        dist.all_to_all_single(receive, send, group=group)
        send_counts, receive_counts = send.tolist(), receive.tolist()
        requested = unique.new_empty(sum(receive_counts))
        dist.all_to_all_single(requested, unique[order], receive_counts, send_counts, group=group)
        local = requested // world
        rows_sorted = weight.new_empty(len(unique), weight.shape[1])
        dist.all_to_all_single(rows_sorted, weight.index_select(0, local), send_counts, receive_counts, group=group)
        rows = torch.empty_like(rows_sorted)
        rows[order] = rows_sorted
        ctx.save_for_backward(order, local)
        ctx.counts, ctx.world, ctx.group, ctx.shape = (send_counts, receive_counts), world, group, weight.shape
        return rows

    @staticmethod
    def backward(ctx, grad_rows: torch.Tensor):
        order, local = ctx.saved_tensors
        send_counts, receive_counts = ctx.counts
        received = grad_rows.new_empty(len(local), grad_rows.shape[1])
        dist.all_to_all_single(received, grad_rows[order].contiguous(), receive_counts, send_counts, group=ctx.group)
        # A row asked for by several workers appears once per worker: the optimizer coalesces.
        grad = torch.sparse_coo_tensor(local.unsqueeze(0), received / ctx.world, ctx.shape, check_invariants=False)
        return grad, None, None, None
