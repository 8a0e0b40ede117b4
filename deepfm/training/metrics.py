"""Exact evaluation metrics over ALL predictions (gathered from every rank), never batch averages."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score, roc_curve


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


# Aggregated form: one row per distinct predicted probability, with its row and click counts.
# Spark reduces any number of predictions to this table; the metrics below are exact on it.
def _weighted(probability: np.ndarray, rows: np.ndarray, clicks: np.ndarray):
    p = np.clip(np.concatenate([probability, probability]).astype(np.float64), 1e-7, 1 - 1e-7)
    y = np.concatenate([np.ones(len(probability)), np.zeros(len(probability))])
    w = np.concatenate([clicks, rows - clicks]).astype(np.float64)
    keep = w > 0
    return y[keep], p[keep], w[keep]


def grouped_metrics(probability: np.ndarray, rows: np.ndarray, clicks: np.ndarray) -> dict[str, float]:
    """AUC, logloss, observed and predicted CTR from (distinct probability, rows, clicks)."""
    total, positives = float(rows.sum()), float(clicks.sum())
    y, p, w = _weighted(probability, rows, clicks)
    has_both = 0 < positives < total
    return {
        "auc": float(roc_auc_score(y, p, sample_weight=w)) if has_both else float("nan"),
        "logloss": float(log_loss(y, p, sample_weight=w, labels=[0, 1])) if total else float("nan"),
        "ctr_observed": positives / total if total else float("nan"),
        "ctr_predicted": float((probability * rows).sum() / total) if total else float("nan"),
        "rows": int(total),
    }


def roc_points(probability: np.ndarray, rows: np.ndarray, clicks: np.ndarray,
               max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates, thinned to at most `max_points` for plotting."""
    y, p, w = _weighted(probability, rows, clicks)
    fpr, tpr, _ = roc_curve(y, p, sample_weight=w)
    if len(fpr) > max_points:
        pick = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[pick], tpr[pick]
    return fpr, tpr


def calibration(probability: np.ndarray, rows: np.ndarray, clicks: np.ndarray, bins: int = 10) -> list[dict]:
    """Observed vs predicted CTR by quantile bin of the prediction (deciles for bins=10).

    Rows with equal predictions always share a bin, so with heavy ties a bin can hold more than
    1/bins of the rows.
    """
    order = np.argsort(probability, kind="stable")
    p, n, c = probability[order].astype(np.float64), rows[order].astype(np.float64), clicks[order].astype(np.float64)
    total = n.sum()
    if not total:
        return []
    midpoint = np.cumsum(n) - n / 2  # where each distinct value's rows sit in the sorted order
    which = np.minimum((midpoint / total * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        if not sel.any():
            continue
        count = n[sel].sum()
        out.append({"bin": b + 1, "rows": int(count), "p_min": float(p[sel].min()), "p_max": float(p[sel].max()),
                    "ctr_predicted": float((p[sel] * n[sel]).sum() / count),
                    "ctr_observed": float(c[sel].sum() / count)})
    return out
