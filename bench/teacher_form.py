"""The teacher's own form fitted on 800k of its rows: what these rows allow a model that knew the form.

A reference for the quality benchmark (issue 26). The fitted model has exactly the teacher's terms
(first-order weights, numeric curves, shared or field-pair interaction vectors, numeric x categorical
slopes, three-field crosses) and knows which values carry signal, so its gap to the true probability
is estimation alone: what no model can avoid on this many rows. With `prior`, each term's weights
carry the Gaussian prior the teacher drew them from (a MAP fit): the best plug-in estimate there is,
where plain maximum likelihood, early-stopped, overfits the values seen only tens of times.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.nn import functional as F

from deepfm.config import GenerateConfig
from pipelines import generate as gen

ROWS, TRAIN_ROWS, VALID_ROWS = 1_000_000, 800_000, 100_000
BATCH = 4096


class TeacherForm(torch.nn.Module):
    """The teacher's logit with every effect a parameter; index `head` of a table is "no signal", pinned at 0."""

    def __init__(self, teacher: gen.Teacher):
        super().__init__()
        head, interacting = teacher.head, len(gen.INTERACTING)
        self.head = head
        self.first = torch.nn.Parameter(torch.zeros(gen.NUM_CAT, head + 1))
        self.first_sd = torch.from_numpy(teacher.spread).float()[:, None]
        if teacher.pair_vectors is None:
            self.vectors = torch.nn.Parameter(0.01 * torch.randn(interacting, head + 1, gen.INTERACTION_DIM))
            self.pair_vectors = None
        else:
            self.vectors = None
            self.pair_vectors = torch.nn.Parameter(
                0.01 * torch.randn(interacting, head + 1, interacting, gen.INTERACTION_DIM))
        self.slopes = (None if teacher.numeric_slopes is None
                       else torch.nn.Parameter(torch.zeros(len(gen.NUMERIC_CROSSES), head + 1)))
        self.triples = (None if teacher.triple_effects is None
                        else torch.nn.Parameter(torch.zeros(len(gen.TRIPLES), gen.TRIPLE_TOP ** 3 + 1)))
        self.scale = torch.nn.Parameter(torch.zeros(gen.NUM_INT))
        self.center = torch.nn.Parameter(torch.ones(gen.NUM_INT))
        self.bias = torch.nn.Parameter(torch.zeros(1))
        pairs = list(itertools.combinations(range(interacting), 2))
        self.pair_a, self.pair_b = (torch.tensor(side) for side in zip(*pairs, strict=True))

    def forward(self, idx: torch.Tensor, logs: torch.Tensor, present: torch.Tensor,
                cells: torch.Tensor) -> torch.Tensor:
        signal = (idx < self.head).float()
        out = self.bias + (self.first.gather(1, idx.T).T * signal).sum(1)
        curve = torch.tanh(logs - self.center)
        out = out + (self.scale * curve * present).sum(1)
        inter = idx[:, gen.INTERACTING].T  # (fields, rows)
        on = signal[:, gen.INTERACTING].T[..., None]
        fields = torch.arange(len(gen.INTERACTING))[:, None]
        if self.vectors is not None:
            v = self.vectors[fields, inter] * on
            out = out + 0.5 * ((v.sum(0) ** 2).sum(1) - (v ** 2).sum((0, 2)))
        else:
            p = self.pair_vectors[fields, inter] * on[..., None]  # (f, rows, g, dim): value of f facing g
            meet = (p[self.pair_a, :, self.pair_b] * p[self.pair_b, :, self.pair_a]).sum(-1)
            out = out + meet.sum(0)
        if self.slopes is not None:
            for k, (f, i) in enumerate(gen.NUMERIC_CROSSES):
                out = out + self.slopes[k, idx[:, f]] * signal[:, f] * curve[:, i] * present[:, i]
        if self.triples is not None:
            out = out + self.triples.gather(1, cells.T).T.sum(1)
        return out

    def prior_penalty(self) -> torch.Tensor:
        """-log prior of the weights (up to a constant), each term at the scale the teacher drew it from."""
        penalty = (self.first[:, :-1] ** 2 / (2 * self.first_sd ** 2)).sum()
        if self.vectors is not None:
            penalty = penalty + (self.vectors ** 2).sum() / (2 * gen.INTERACTION_SCALE ** 2)
        if self.pair_vectors is not None:
            penalty = penalty + (self.pair_vectors ** 2).sum() / (2 * gen.INTERACTION_SCALE ** 2)
        if self.slopes is not None:
            penalty = penalty + (self.slopes ** 2).sum() / (2 * gen.NUMERIC_CROSS_SCALE ** 2)
        if self.triples is not None:
            penalty = penalty + (self.triples ** 2).sum() / (2 * gen.TRIPLE_SCALE ** 2)
        return penalty

    def pin_no_signal(self) -> None:
        with torch.no_grad():
            self.first[:, -1] = 0
            for table in (self.vectors, self.pair_vectors, self.slopes, self.triples):
                if table is not None:
                    table[:, -1] = 0


def fit_teacher_form(kind: str = "head", prior: bool = False, seed: int = 7) -> dict:
    """The teacher's own form fitted by Adam on 800k of its rows, early-stopped on 100k, tested on 100k."""
    teacher = gen.Teacher.create(GenerateConfig(output="unused", seed=seed, teacher=kind))
    rng = np.random.default_rng([seed, 0])
    ints, ranks, logit = teacher.sample(ROWS, rng)
    p_true = 1 / (1 + np.exp(-logit))
    label = torch.from_numpy((rng.random(ROWS) < p_true).astype(np.float32))
    idx = torch.from_numpy(np.where((ranks >= 0) & (ranks < teacher.signal_values), ranks, teacher.head))
    logs = torch.from_numpy(np.log1p(np.maximum(np.nan_to_num(ints, nan=0.0), 0))).float()
    present = torch.from_numpy(~np.isnan(ints)).float()
    cells = torch.from_numpy(gen.triple_cells(ranks))
    order = np.random.default_rng(1).permutation(ROWS)
    train_rows, valid_rows, test_rows = (torch.from_numpy(a) for a in np.split(order, [TRAIN_ROWS,
                                                                                      TRAIN_ROWS + VALID_ROWS]))
    torch.manual_seed(0)
    form = TeacherForm(teacher)

    def predict(rows: torch.Tensor) -> torch.Tensor:
        return form(idx[rows], logs[rows], present[rows], cells[rows])

    def auc(rows: torch.Tensor) -> float:
        with torch.no_grad():
            return float(roc_auc_score(label[rows].numpy(), torch.cat([predict(b) for b in rows.split(65536)])))

    optimizer = torch.optim.Adam(form.parameters(), lr=0.01)
    best_valid, best_test, stale, epochs = 0.0, 0.0, 0, 0
    for epoch in range(30):
        shuffled = train_rows[torch.from_numpy(np.random.default_rng(epoch).permutation(len(train_rows)))]
        for batch in shuffled.split(BATCH):
            loss = F.binary_cross_entropy_with_logits(predict(batch), label[batch])
            if prior:
                loss = loss + form.prior_penalty() / TRAIN_ROWS
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            form.pin_no_signal()
        valid, epochs = auc(valid_rows), epoch + 1
        if valid > best_valid:
            best_valid, best_test, stale = valid, auc(test_rows), 0
        elif (stale := stale + 1) >= 2:
            break
    test_true = float(roc_auc_score(label[test_rows].numpy(), p_true[test_rows.numpy()]))
    return {"prior": prior, "true_probability_test_auc": round(test_true, 4), "fitted_test_auc": round(best_test, 4),
            "gap": round(test_true - best_test, 4), "epochs": epochs}


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", nargs="+", choices=["head", *gen.TEACHER_FAMILY], default=["long_tail"])
    parser.add_argument("--prior", action="store_true", help="a MAP fit under the teacher's own priors")
    args = parser.parse_args()
    for kind in args.teachers:
        print(json.dumps({kind: fit_teacher_form(kind, args.prior)}), flush=True)
