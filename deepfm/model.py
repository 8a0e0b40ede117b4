"""DeepFM (Guo et al., IJCAI 2017): a factorization machine and a deep network over SHARED embeddings.

    logit = y_FM + y_DNN,          p = sigmoid(logit)
    y_FM  = b + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j
    y_DNN = MLP(concat(e_1, ..., e_F))

Each field f contributes one embedding e_f = v_f x_f: for a categorical field the row of its id
(x = 1), for a dense field the field's single vector scaled by its value (the paper's treatment of
continuous fields). The pairwise term uses the identity
    sum_{i<j} <e_i, e_j> = 1/2 * sum_d [ (sum_i e_id)^2 - sum_i e_id^2 ],
which costs O(F D) instead of O(F^2 D).

`field_pair_weights` weighs each pair of fields in the pairwise term by a learned scalar r_ij
(FwFM, Pan et al., WWW 2018): y_FM's pairwise part becomes sum_{i<j} r_ij <e_i, e_j> x_i x_j,
at O(F^2 D). The r_ij start at 1, the plain FM; the embeddings stay the ones the MLP reads.

Two options read each categorical value's training count (from the vocabulary, kept as buffers of
the model, so every scoring path applies them):
- `count_features`: the MLP also reads the value's frequency, log(1 + count) / log(1 + N) (a side
  input, not a cross): what tells a well-estimated row from a barely trained one.
- `mixed_dim_exponent` a > 0: frequency-based embedding sizes (mixed-dimension embeddings, Ginart
  et al. 2019). A value seen c times, in a field whose most frequent value is seen c_max times,
  uses the first ceil(D (c / c_max)^a) of the D dimensions; the rest of its vector is zero. Rare
  values get fewer parameters to memorise their few rows with.

Shapes: B = batch, Fc = categorical fields, Fd = dense fields, F = Fc + Fd, D = embedding dim.
`forward` returns logits; the loss (BCE on logits) lives with the training loop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from deepfm.training.precision import PRECISIONS, autocast

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


@dataclass(frozen=True)
class DeepFMConfig:
    vocab_sizes: tuple[int, ...]  # one per categorical field, in feature-map order
    num_dense: int = 0
    embedding_dim: int = 16
    hidden: tuple[int, ...] = (400, 400, 400)
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False
    use_fm: bool = True  # False: DNN only (ablation)
    use_deep: bool = True  # False: FM only (ablation)
    sparse_embeddings: bool = False  # sparse gradients: only the rows in the batch are touched
    precision: str = "fp32"  # "bf16": the MLP's products in bfloat16 (deepfm/training/precision.py)
    count_features: bool = False  # the MLP also reads each categorical value's log frequency
    mixed_dim_exponent: float = 0.0  # > 0: a value's vector has fewer dimensions the rarer it is
    field_pair_weights: bool = False  # the FM weighs each pair of fields by a learned scalar (FwFM)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.use_fm or self.use_deep):
            raise ValueError("model: at least one of use_fm and use_deep must be true")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"model.activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if not self.vocab_sizes and not self.num_dense:
            raise ValueError("model: no input fields")
        if self.precision not in PRECISIONS:
            raise ValueError(f"model.precision must be one of {list(PRECISIONS)}, got {self.precision!r}")

    @property
    def num_fields(self) -> int:
        return len(self.vocab_sizes) + self.num_dense

    @property
    def reads_value_counts(self) -> bool:
        return self.count_features or self.mixed_dim_exponent > 0

    @property
    def deep_inputs(self) -> int:
        return self.num_fields * self.embedding_dim + (len(self.vocab_sizes) if self.count_features else 0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DeepFMConfig:
        return cls(**{**data, "vocab_sizes": tuple(data["vocab_sizes"]), "hidden": tuple(data["hidden"])})


@torch.no_grad()
def init_table_(weight: torch.Tensor, generator: torch.Generator | None = None) -> None:
    """Small vectors, which keep the FM's pairwise sum near zero at the start, and zero first-order weights."""
    nn.init.normal_(weight, std=0.01, generator=generator)
    weight[:, -1] = 0.0


class FieldEmbeddings(nn.Module):
    """The shared embeddings: e [B, F, D] and first-order weights w [B, F] for every field.

    All categorical fields live in one table (each field at its own offset), so a batch is one
    lookup rather than one per field.
    """

    def __init__(self, cfg: DeepFMConfig, table: nn.Module | None = None) -> None:
        super().__init__()
        total = sum(cfg.vocab_sizes)
        offsets = torch.tensor([0, *cfg.vocab_sizes[:-1]], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        # Every parameter must take part in each forward pass (DDP requires it), so a model
        # without dense fields has no dense parameters at all, and vice versa.
        # One table holds each value's vector v (D columns) and its first-order weight w (the last
        # column): one lookup and one sparse update per step instead of two.
        # A given table (a worker's stripe of a sharded one, deepfm/training/sharding.py) comes initialised.
        if table is None and total:
            table = nn.Embedding(total, cfg.embedding_dim + 1, sparse=cfg.sparse_embeddings)
            init_table_(table.weight)
        self.table = table
        self.dense_vectors = nn.Parameter(torch.empty(cfg.num_dense, cfg.embedding_dim)) if cfg.num_dense else None
        self.dense_weights = nn.Parameter(torch.zeros(cfg.num_dense)) if cfg.num_dense else None
        if cfg.num_dense:
            nn.init.normal_(self.dense_vectors, std=0.01)
        # mixed dimensions: how many leading dimensions each table row uses (set_row_dims)
        mixed = cfg.mixed_dim_exponent > 0 and total
        self.register_buffer("row_dims", torch.full((total,), cfg.embedding_dim, dtype=torch.int16) if mixed else None)
        self.register_buffer("dim_index", torch.arange(cfg.embedding_dim, dtype=torch.int16) if mixed else None,
                             persistent=False)

    def forward(self, ids: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [B, Fc] (int), dense [B, Fd] (float) -> (e [B, F, D], w [B, F])."""
        parts_e, parts_w = [], []
        if self.table is not None:
            rows = ids.long() + self.offsets
            if self.training and getattr(self.table, "sparse", False):
                # Look each distinct row up once: the sparse gradient then holds every row once,
                # which makes the optimizer's coalescing (a sort) far cheaper on Zipf-skewed ids.
                # index_select, not [inverse]: its backward is an index_add, on a CPU 2x faster
                # than the accumulating index_put of advanced indexing.
                # .float(): a table kept in bf16 (train.table_precision) computes in fp32 from here on.
                unique, inverse = torch.unique(rows, return_inverse=True)
                looked_up = self.table(unique).float().index_select(0, inverse.flatten()).view(*rows.shape, -1)
            else:
                looked_up = self.table(rows).float()
            # split, not two slices: its backward writes the [B, F, D+1] gradient once (a cat),
            # where each slice's would fill a zero tensor of that size and add them up.
            vectors, weights = looked_up.split([looked_up.shape[-1] - 1, 1], dim=-1)
            if self.row_dims is not None:
                vectors = vectors * (self.dim_index < self.row_dims[rows].unsqueeze(-1))
            parts_e.append(vectors)
            parts_w.append(weights.squeeze(-1))
        if self.dense_vectors is not None:
            parts_e.append(self.dense_vectors * dense.unsqueeze(-1))
            parts_w.append(self.dense_weights * dense)
        return torch.cat(parts_e, 1), torch.cat(parts_w, 1)

    @torch.no_grad()
    def set_row_dims(self, counts: torch.Tensor, vocab_sizes: tuple[int, ...], exponent: float) -> None:
        """Each row's dimensions from its count relative to its field's most frequent value (an
        uncounted row keeps them all); the dimensions a row does not use are zeroed, so the prior
        has nothing there to pull on."""
        dims = self.dim_index.numel()
        start = 0
        for size in vocab_sizes:
            field = counts[start:start + size]
            top = torch.nan_to_num(field, nan=0.0).max()
            if top > 0:
                share = torch.nan_to_num(field / top, nan=1.0).clamp(min=0.0)
                self.row_dims[start:start + size] = (dims * share.pow(exponent)).ceil().clamp(1, dims).to(torch.int16)
            start += size
        unused = self.dim_index.long() >= self.row_dims.long().unsqueeze(-1)
        self.table.weight[:, :-1].masked_fill_(unused, 0.0)


class FactorizationMachine(nn.Module):
    """y_FM = b + sum_f w_f + 1/2 sum_d [(sum_f e_fd)^2 - sum_f e_fd^2]  ->  [B];
    with `fields` (field_pair_weights): b + sum_f w_f + sum_{f<g} r_fg <e_f, e_g>."""

    def __init__(self, fields: int | None = None) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))
        # Only the entries above the diagonal are used: r_fg for f < g.
        self.pair_weights = nn.Parameter(torch.ones(fields, fields)) if fields else None

    def forward(self, e: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.pair_weights is not None:
            products = e @ e.transpose(1, 2)  # [B, F, F]: <e_f, e_g>
            pairwise = (products * self.pair_weights.triu(1)).sum((1, 2))
        else:
            square_of_sum = e.sum(1).pow(2)  # [B, D]
            sum_of_squares = e.pow(2).sum(1)  # [B, D]
            pairwise = 0.5 * (square_of_sum - sum_of_squares).sum(1)  # [B]
        return self.bias + w.sum(1) + pairwise


class DeepNetwork(nn.Module):
    """y_DNN = MLP(e.flatten() [, frequencies]) -> [B], in fp32 or, with precision bf16, autocast to bfloat16."""

    def __init__(self, cfg: DeepFMConfig) -> None:
        super().__init__()
        self.precision = cfg.precision
        layers: list[nn.Module] = []
        width = cfg.deep_inputs
        for size in cfg.hidden:
            layers.append(nn.Linear(width, size))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(ACTIVATIONS[cfg.activation]())
            if cfg.dropout:
                layers.append(nn.Dropout(cfg.dropout))
            width = size
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, e: torch.Tensor, frequencies: torch.Tensor | None = None) -> torch.Tensor:
        inputs = e.flatten(1) if frequencies is None else torch.cat([e.flatten(1), frequencies], 1)
        with autocast(self.precision, e.device.type):
            out = self.mlp(inputs)
        return out.float().squeeze(-1)


class DeepFM(nn.Module):
    def __init__(self, cfg: DeepFMConfig, table: nn.Module | None = None) -> None:
        """`table`: the embedding table to use instead of a whole one (a sharded table's stripe)."""
        super().__init__()
        self.config = cfg
        self.embeddings = FieldEmbeddings(cfg, table)
        self.fm = (FactorizationMachine(cfg.num_fields if cfg.field_pair_weights else None) if cfg.use_fm
                   else None)
        self.deep = DeepNetwork(cfg) if cfg.use_deep else None
        if cfg.count_features:
            # per row of the embedding table; filled from the vocabulary before training (set_value_counts)
            self.register_buffer("log_frequencies", torch.zeros(sum(cfg.vocab_sizes)))

    def forward(self, ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """ids [B, Fc], dense [B, Fd] -> logits [B]."""
        e, w = self.embeddings(ids, dense)
        logit = torch.zeros(e.shape[0], device=e.device, dtype=e.dtype)
        if self.fm is not None:
            logit = logit + self.fm(e, w)
        if self.deep is not None:
            frequencies = (self.log_frequencies[ids.long() + self.embeddings.offsets]
                           if self.config.count_features else None)
            logit = logit + self.deep(e, frequencies)
        return logit

    @torch.no_grad()
    def set_value_counts(self, counts: torch.Tensor, train_rows: int) -> None:
        """`counts` [table rows]: each value's training count, NaN where not counted: the count
        features' frequencies (an uncounted row reads as never seen) and the rows' dimensions."""
        if self.config.count_features:
            self.log_frequencies.copy_(torch.nan_to_num(counts, nan=0.0).log1p() / math.log1p(max(train_rows, 1)))
        if self.embeddings.row_dims is not None:
            self.embeddings.set_row_dims(counts, self.config.vocab_sizes, self.config.mixed_dim_exponent)

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The tables that receive sparse gradients when sparse_embeddings is on."""
        return [] if self.embeddings.table is None else [self.embeddings.table.weight]

    def dense_parameters(self) -> list[nn.Parameter]:
        sparse = {id(p) for p in self.embedding_parameters()}
        return [p for p in self.parameters() if id(p) not in sparse]

    def train_flops_per_sample(self) -> int:
        """Floating-point operations to train on one sample: forward + backward (~2x forward)."""
        return 3 * self.forward_flops_per_sample()

    def forward_flops_per_sample(self) -> int:
        """Multiply-adds x 2 of one forward pass of the MLP and FM (lookups are memory, not math)."""
        cfg = self.config
        widths = [cfg.deep_inputs, *cfg.hidden, 1] if cfg.use_deep else []
        mlp = sum(2 * a * b for a, b in zip(widths, widths[1:], strict=False))
        fm = 4 * cfg.num_fields * cfg.embedding_dim if cfg.use_fm else 0
        if cfg.use_fm and cfg.field_pair_weights:
            fm = 2 * cfg.num_fields ** 2 * (cfg.embedding_dim + 1)
        return mlp + fm
