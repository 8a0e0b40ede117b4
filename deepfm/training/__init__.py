"""Training a model version on one worker or many, and the version it leaves.

train           the loop every worker runs: epochs, exact validation, early stopping, the result
launch          N workers: local processes or Spark tasks, torch.distributed or Horovod; commits the version
distributed     the backends' collectives (allreduce, allgather, barrier) behind one interface
readers         Parquet shards into batches: the native pyarrow reader and Petastorm
optim           Adam for the dense weights, lazy (row-sparse) Adam for the embedding tables
regularization  the embedding prior
precision       bf16 autocast, where the hardware has it
checkpoint      resumable checkpoints and weights, loaded without unpickling code
metrics         AUC, logloss and calibration figures
model_versions  the model version (weights, config, metrics, lineage) and the model root of versions
"""
