"""Data-parallel backends behind one small interface; the training loop never branches on which.

- `SingleProcess`: one worker, collectives are identities.
- `HorovodBackend`: hvd.DistributedOptimizer (sparse gradients allgathered, dense allreduced),
  parameters and optimizer state broadcast from rank 0.
- `TorchBackend`: DistributedDataParallel over gloo (CPU) or NCCL (GPU); DDP broadcasts the
  parameters from rank 0 when it wraps the model.
Rank and world size are read once, at construction.
"""

from __future__ import annotations

import gc
import os
from typing import Protocol

import torch
from torch import nn

from deepfm.errors import UserError
from deepfm.training.sharding import sharded_parameter_names


class Backend(Protocol):
    rank: int
    world: int
    device: torch.device

    def prepare(self, model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> tuple[nn.Module, list]: ...

    def allreduce_sum(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def allgather(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def barrier(self) -> None: ...

    def close(self) -> None: ...


def _device(kind: str, local_rank: int) -> torch.device:
    if kind == "cuda" or (kind == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("train.device is 'cuda' but no GPU is visible; set train.device=cpu")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


class SingleProcess:
    def __init__(self, device: str = "auto") -> None:
        self.rank, self.world = 0, 1
        self.device = _device(device, 0)

    def prepare(self, model, optimizers):
        return model.to(self.device), optimizers

    def allreduce_sum(self, tensor):
        return tensor

    def allgather(self, tensor):
        return tensor

    def barrier(self) -> None:
        pass

    def close(self) -> None:
        pass


class HorovodBackend:
    def __init__(self, device: str = "auto") -> None:
        import horovod.torch as hvd

        hvd.init()
        self.hvd = hvd
        self.rank, self.world = hvd.rank(), hvd.size()
        self.device = _device(device, hvd.local_rank())

    def prepare(self, model, optimizers):
        hvd = self.hvd
        model = model.to(self.device)
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        names = {id(p): n for n, p in model.named_parameters()}
        wrapped = []
        for opt in optimizers:
            hvd.broadcast_optimizer_state(opt, root_rank=0)
            params = [p for group in opt.param_groups for p in group["params"]]
            # sparse_as_dense=False: sparse embedding gradients travel as (indices, values).
            wrapped.append(hvd.DistributedOptimizer(
                opt, named_parameters=[(names[id(p)], p) for p in params], sparse_as_dense=False
            ))
        return model, wrapped

    def allreduce_sum(self, tensor):
        return self.hvd.allreduce(tensor, op=self.hvd.Sum)

    def allgather(self, tensor):
        return self.hvd.allgather(tensor)

    def barrier(self) -> None:
        self.hvd.allreduce(torch.zeros(1), name="barrier")

    def close(self) -> None:
        self.hvd.shutdown()


class TorchBackend:
    """torch.distributed, initialised from the env:// variables (torchrun, TorchDistributor, spawn)."""

    def __init__(self, device: str = "auto") -> None:
        import torch.distributed as dist

        self.dist = dist
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = _device(device, local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def prepare(self, model, optimizers):
        from torch.nn.parallel import DistributedDataParallel

        model = model.to(self.device)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # Batch-norm statistics are the only buffers that differ between ranks; the others (the
        # table offsets, count features' frequencies: a float per table row) need no copy each step.
        batch_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, sharded_parameter_names(model))
        return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=batch_norm), optimizers

    # NCCL collects CUDA tensors only (a CPU tensor fails with "No backend type associated with device
    # type cpu"): each collective runs on this rank's device and answers on the caller's.
    def allreduce_sum(self, tensor):
        reduced = tensor.to(self.device, copy=True)
        self.dist.all_reduce(reduced)
        return reduced.to(tensor.device)

    def allgather(self, tensor):
        """Concatenate 1-D tensors of different lengths from every rank, in rank order."""
        mine = tensor.to(self.device)
        size = torch.tensor([mine.shape[0]], device=self.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world)]
        self.dist.all_gather(sizes, size)
        longest = int(max(s.item() for s in sizes))
        padded = torch.zeros(longest, *mine.shape[1:], dtype=mine.dtype, device=self.device)
        padded[: mine.shape[0]] = mine
        parts = [torch.zeros_like(padded) for _ in range(self.world)]
        self.dist.all_gather(parts, padded)
        gathered = torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)])
        return gathered.to(tensor.device)

    def barrier(self) -> None:
        self.dist.barrier()

    def close(self) -> None:
        if self.dist.is_initialized():
            # DDP's reducer holds the group: free it first, so it is not destroyed at interpreter
            # exit after the group it talks through is gone.
            gc.collect()
            self.dist.destroy_process_group()


def make_backend(name: str, device: str = "auto") -> Backend:
    if name == "horovod":
        return HorovodBackend(device)
    if name == "torch":
        return TorchBackend(device)
    return SingleProcess(device)
