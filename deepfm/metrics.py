"""Exact evaluation metrics over ALL predictions (gathered from every rank), never batch averages."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """AUC, logloss, observed and predicted CTR."""
    labels = labels.astype(np.float64)
    probabilities = np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7)
    has_both = 0 < labels.sum() < len(labels)
    return {
        "auc": float(roc_auc_score(labels, probabilities)) if has_both else float("nan"),
        "logloss": float(log_loss(labels, probabilities, labels=[0, 1])),
        "ctr_observed": float(labels.mean()),
        "ctr_predicted": float(probabilities.mean()),
        "rows": int(len(labels)),
    }
