"""Row-wise sharded tables (deepfm/training/sharding.py): two real gloo processes against one
replicated table trained on both processes' batches."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from deepfm.training.launch import free_port
from deepfm.training.optim import RowSparseAdam, RowWiseAdagrad
from deepfm.training.sharding import RowShardedTable

ROWS, WIDTH, BATCH, STEPS, WORLD = 503, 5, 16, 6, 2
OPTIMIZERS = {"rowwise_adagrad": lambda params: RowWiseAdagrad(params, lr=0.1),
              "adam": lambda params: RowSparseAdam(params, lr=0.05)}


def _batches(rank: int) -> list[torch.Tensor]:
    """Skewed ids, so that both workers ask for the same hot rows and a row's owner is often the other."""
    generator = torch.Generator().manual_seed(100 + rank)
    return [((torch.rand(BATCH, 3, generator=generator) ** 3) * ROWS).long() for _ in range(STEPS)]


def _start() -> torch.Tensor:
    return torch.randn(ROWS, WIDTH, generator=torch.Generator().manual_seed(0))


def _objective(rows: torch.Tensor) -> torch.Tensor:
    return (rows.sum(-1).sigmoid() * rows[..., 0]).sum() / BATCH


def _sharded_worker(rank: int, port: int, optimizer: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    dist.init_process_group("gloo")
    table = RowShardedTable(ROWS, WIDTH)
    table.load_full(_start())
    assert table.weight.shape == (len(range(rank, ROWS, WORLD)), WIDTH)  # a stripe, not the table
    opt = OPTIMIZERS[optimizer]([table.weight])
    looked_up = []
    for ids in _batches(rank):
        opt.zero_grad()
        rows = table(ids)
        looked_up.append(rows.detach().clone())
        _objective(rows).backward()
        opt.step()
    stripes = [None] * WORLD
    dist.all_gather_object(stripes, (table.owned_rows(), table.weight.detach()))
    if rank == 0:
        whole = torch.empty(ROWS, WIDTH)
        for rows, weight in stripes:
            whole[rows] = weight
        torch.save({"table": whole}, out)
    torch.save(looked_up, f"{out}.lookups{rank}")
    dist.destroy_process_group()


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_two_sharded_workers_take_the_steps_of_one_replicated_table(tmp_path, optimizer):
    out = str(tmp_path / "sharded.pt")
    mp.spawn(_sharded_worker, args=(free_port(), optimizer, out), nprocs=WORLD)
    sharded = torch.load(out, weights_only=True)["table"]

    # The replicated reference: one table, the mean of both workers' objectives per step (what
    # DistributedDataParallel's averaged gradients give every replica).
    embedding = torch.nn.Embedding(ROWS, WIDTH, sparse=True, _weight=_start())
    opt = OPTIMIZERS[optimizer]([embedding.weight])
    batches = [_batches(rank) for rank in range(WORLD)]
    for step in range(STEPS):
        opt.zero_grad()
        for rank in range(WORLD):  # each worker's lookups before the step equal the replicated rows
            lookups = torch.load(f"{out}.lookups{rank}", weights_only=True)
            torch.testing.assert_close(lookups[step], embedding(batches[rank][step]).detach(), rtol=0, atol=1e-6)
        (sum(_objective(embedding(batches[rank][step])) for rank in range(WORLD)) / WORLD).backward()
        opt.step()
    moved = (embedding.weight.detach() != _start()).any(1)
    assert 0 < int(moved.sum()) < ROWS
    torch.testing.assert_close(sharded, embedding.weight.detach(), rtol=0, atol=1e-6)
