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

from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from deepfm.model import init_table_

# The state-dict key of the table in a DeepFM model (deepfm/model.py).
TABLE_KEY = "embeddings.table.weight"


class _SharedGroup:
    """The process group, held by reference through a deepcopy: the moving average of the weights
    (AveragedModel, a deep copy of the model) exchanges its rows through the same group."""

    def __init__(self, group: dist.ProcessGroup) -> None:
        self.group = group

    def __deepcopy__(self, memo: dict) -> _SharedGroup:
        return self


class RowShardedTable(nn.Module):
    """`rows` x `width` table, this worker's stripe of it in `weight` ([local rows, width]).

    `group` defaults to a new group of the default backend (gloo on CPUs, NCCL on GPUs); every
    worker must construct its table at the same point, as with any collective.
    """

    def __init__(self, rows: int, width: int, group: dist.ProcessGroup | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self._group = _SharedGroup(group if group is not None else dist.new_group())
        self.world, self.rank = dist.get_world_size(self.group), dist.get_rank(self.group)
        self.rows, self.width = rows, width
        self.weight = nn.Parameter(torch.empty(len(range(self.rank, rows, self.world)), width, dtype=dtype))

    @property
    def group(self) -> dist.ProcessGroup:
        return self._group.group

    @torch.no_grad()
    def initialize(self, seed: int) -> None:
        """DeepFM's initialisation of a table, drawn for this stripe alone from a generator of its
        own: the whole table is never built, not even to be cut."""
        init_table_(self.weight, torch.Generator().manual_seed(seed * 1_000_003 + self.rank))

    def holding(self, stripe: torch.Tensor) -> RowShardedTable:
        """A table of the same rows and workers whose stripe is `stripe`, not trained: a lookup by
        global id of other values kept per row (the prior's centres, deepfm/training/regularization.py)."""
        other = RowShardedTable(self.rows, stripe.shape[1], self.group)
        other.weight = nn.Parameter(stripe, requires_grad=False)
        return other

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
        owner, _ = place(unique, world)
        order = torch.argsort(owner, stable=True)
        send = torch.bincount(owner, minlength=world)
        receive = torch.empty_like(send)
        dist.all_to_all_single(receive, send, group=group)
        send_counts, receive_counts = send.tolist(), receive.tolist()
        requested = unique.new_empty(sum(receive_counts))
        dist.all_to_all_single(requested, unique[order], receive_counts, send_counts, group=group)
        _, local = place(requested, world)
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


class StripedTable(nn.Module):
    """A trained table read where it lies, for inference: global row r is row r // N of stripe
    r % N (`stripes` in rank order; a table saved whole is one stripe). The stripes are not
    parameters and are never copied: memory-mapped files (deepfm/training/model_versions.py) stay
    on disk but for the rows a batch looks up. Lookups run on the CPU; rows go to the ids' device."""

    def __init__(self, stripes: list[torch.Tensor]) -> None:
        super().__init__()
        self.stripes = list(stripes)
        self.rows = sum(len(s) for s in self.stripes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = ids.long().cpu()
        if len(self.stripes) == 1:
            return self.stripes[0][rows].to(ids.device)
        owner, local = place(rows, len(self.stripes))
        looked_up = self.stripes[0].new_empty(*rows.shape, self.stripes[0].shape[1])
        for index, stripe in enumerate(self.stripes):
            here = owner == index
            looked_up[here] = stripe[local[here]]
        return looked_up.to(ids.device)


def place(rows: torch.Tensor, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the worker that owns each global row, its index in that worker's stripe)."""
    return rows % world, rows // world


def is_sharded(model: nn.Module) -> bool:
    return any(isinstance(m, RowShardedTable) for m in model.modules())


def replicated_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters every worker holds whole (all of them but the sharded tables' stripes)."""
    striped = {id(m.weight) for m in model.modules() if isinstance(m, RowShardedTable)}
    return [p for p in model.parameters() if id(p) not in striped]


def sharded_parameter_names(model: nn.Module) -> list[str]:
    """What DistributedDataParallel must leave alone: each worker's stripe is its own."""
    return [f"{name}.weight" for name, m in model.named_modules() if isinstance(m, RowShardedTable)]


def stripe_file(rank: int, world: int, stem: str = "model.table") -> str:
    """Where worker `rank` of `world` keeps its stripe of the table (or of the table's `stem`, such
    as its optimizer's accumulator) in a model directory."""
    return f"{stem}-{rank:04d}-of-{world:04d}.pt"


def assemble(stripes: list[torch.Tensor]) -> torch.Tensor:
    """The whole table from every worker's stripe, in rank order (for the readers of a version)."""
    world = len(stripes)
    table = stripes[0].new_empty(sum(len(s) for s in stripes), stripes[0].shape[1])
    for rank, stripe in enumerate(stripes):
        table[rank::world] = stripe
    return table


def in_lockstep(batches: Iterable, empty, allreduce_sum) -> Iterator:
    """`batches`, then `empty` until every worker has run out: every lookup of a sharded table is
    a collective, so every worker must make as many, and evaluation splits rows unevenly."""
    remaining = iter(batches)
    while True:
        batch = next(remaining, None)
        if float(allreduce_sum(torch.tensor([0.0 if batch is None else 1.0]))[0]) == 0:
            return
        yield empty if batch is None else batch
