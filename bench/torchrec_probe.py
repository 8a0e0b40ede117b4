"""Can TorchRec shard this project's tables here? Two CPU processes over gloo shard four tables
with TorchRec's planner and DistributedModelParallel (fused row-wise Adagrad), then train a few
steps; prints the plan and one JSON line.

TorchRec is not a dependency of the project (issue 28 weighs it); run this in a venv of its own:

    python -m venv /tmp/trec && /tmp/trec/bin/pip install torch==2.13.0 fbgemm-gpu-cpu==1.8.0 \\
        tensordict pyre-extensions torchmetrics iopath && /tmp/trec/bin/pip install --no-deps torchrec==1.8.0
    /tmp/trec/bin/python bench/torchrec_probe.py --sharding column_wise   # or table_wise, row_wise
"""

from __future__ import annotations

import argparse
import json
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# 16, not DeepFM's 17 (a row and its first-order weight): FBGEMM needs a multiple of 4 columns.
TABLES, ROWS, DIM, BATCH, STEPS = 4, 100_000, 16, 256, 5


def _probe(rank: int, world: int, port: int, sharding: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo")
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
    from torchrec.distributed.embedding_types import EmbeddingComputeKernel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.types import ParameterConstraints

    tables = [EmbeddingBagConfig(name=f"t{i}", embedding_dim=DIM, num_embeddings=ROWS, feature_names=[f"f{i}"])
              for i in range(TABLES)]
    collection = EmbeddingBagCollection(tables=tables, device=torch.device("meta"))
    sharder = EmbeddingBagCollectionSharder(fused_params={"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
                                                          "learning_rate": 0.01})
    constraints = {t.name: ParameterConstraints(sharding_types=[sharding],
                                                compute_kernels=[EmbeddingComputeKernel.FUSED.value]) for t in tables}
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=world, compute_device="cpu"),
                                       constraints=constraints)
    plan = planner.collective_plan(collection, [sharder], dist.group.WORLD)
    if rank == 0:
        print(plan)
    model = DistributedModelParallel(collection, device=torch.device("cpu"), plan=plan, sharders=[sharder])
    for _ in range(STEPS):
        ids = KeyedJaggedTensor.from_lengths_sync(keys=[f"f{i}" for i in range(TABLES)],
                                                  values=torch.randint(0, ROWS, (TABLES * BATCH,)),
                                                  lengths=torch.ones(TABLES * BATCH, dtype=torch.int32))
        pooled = model(ids)
        pooled.values().sum().backward()  # the fused optimizer steps inside backward
    if rank == 0:
        import torchrec

        print(json.dumps({"torchrec": torchrec.__version__, "torch": torch.__version__, "sharding": sharding,
                          "steps": STEPS, "output_shape": list(pooled.values().shape)}))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sharding", default="column_wise",
                        choices=["table_wise", "column_wise", "row_wise", "table_row_wise"])
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_probe, args=(2, port, args.sharding), nprocs=2)


if __name__ == "__main__":
    main()
