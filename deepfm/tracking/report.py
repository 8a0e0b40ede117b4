"""Plots, and the evaluation report: metrics.json, PNGs and one HTML page that embeds them (readable offline).

Training writes `training_curves.png` with `plot_training_curves`; the evaluate job writes:

    metrics.json          overall metrics, calibration bins, per-slice metrics
    roc.png               ROC curve
    calibration.png       observed vs predicted CTR by bin of prediction
    training_curves.png   copied from the model directory, when there is one
    report.html           all of the above in one self-contained file (images inlined as base64)

Next-day evaluation (pipelines/next_day.py) writes, with `write_history`, a directory of the
serving models' next-day figures by date:

    history.json          per date: the version serving, rows, AUC, logloss, calibration
    history.png           AUC, logloss and calibration against date
    history.html          both in one page
"""

from __future__ import annotations

import base64
import html
import io
from contextlib import contextmanager
from typing import Any

import numpy as np

from deepfm import strict_json
from deepfm.storage import commit
from deepfm.storage.files import ARROW_FILES
from deepfm.storage.location import Location, Where

METRICS, HTML = "metrics.json", "report.html"
ROC, CALIBRATION, CURVES = "roc.png", "calibration.png", "training_curves.png"
DRIFT_FIGURES = ("missing_rate", "missing_rate_before", "psi", "oov_rate_vs_serving")  # pipelines/drift_checks.py's
HISTORY_JSON, HISTORY_PNG, HISTORY_HTML = "history.json", "history.png", "history.html"


def check_replaceable(out: Where) -> None:
    """The report directory may be written: nothing there, or a report this project wrote."""
    commit.check_replaceable(ARROW_FILES, str(Location.of(out)), "evaluate.output")


def write_report(out: Where, metrics: dict[str, Any], roc: tuple[np.ndarray, np.ndarray],
                 training_curves: Location | None = None) -> Location:
    """Write the report directory, committed whole (deepfm/storage/commit.py); its report.html."""
    files = {METRICS: strict_json.dumps(metrics, indent=2, sort_keys=True).encode(),
             ROC: _png(_plot_roc, *roc, metrics["overall"]["auc"]),
             CALIBRATION: _png(_plot_calibration, metrics["calibration"])}
    if training_curves is not None and training_curves.is_file():
        files[CURVES] = training_curves.read_bytes()
    files[HTML] = _html(metrics, {name: files[name] for name in (ROC, CALIBRATION, CURVES) if name in files}).encode()
    out = Location.of(out)
    with commit.committed_directory(ARROW_FILES, str(out), "evaluate", "evaluate.output") as tmp:
        for name, data in files.items():
            (Location.of(tmp) / name).write_bytes(data)
    return out / HTML


def write_history(out: Where, history: list[dict[str, Any]]) -> Location:
    """Write the next-day history directory, committed whole; its history.html."""
    png = _png(_plot_history, history)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>DeepFM next-day evaluation</title></head>
<body style="font-family: sans-serif; margin: 2em">
<h1>The serving model on each next day</h1>
<p>Each date's logs scored by the version serving before any model trained on them.</p>
<img alt="history" src="data:image/png;base64,{base64.b64encode(png).decode()}">
{_table(history, ["run_date", "model_version", "rows", "auc", "logloss", "calibration"])}
</body></html>
"""
    files = {HISTORY_JSON: strict_json.dumps(history, indent=2).encode(), HISTORY_PNG: png,
             HISTORY_HTML: page.encode()}
    out = Location.of(out)
    with commit.committed_directory(ARROW_FILES, str(out), "next-day", "next_day.output") as tmp:
        for name, data in files.items():
            (Location.of(tmp) / name).write_bytes(data)
    return out / HISTORY_HTML


def _plot_history(history: list[dict[str, Any]], out: io.BytesIO) -> None:
    dates = [h["run_date"] for h in history]
    with _figure(out, columns=3, size=(15, 4)) as axes:
        for ax, key, label in zip(axes, ("auc", "logloss", "calibration"),
                                  ("next-day AUC", "next-day logloss", "predicted / observed CTR"), strict=True):
            ax.plot(dates, [h[key] for h in history], marker="o")
            ax.set_ylabel(label)
            ax.tick_params(axis="x", labelrotation=60)
        axes[2].axhline(1.0, linestyle="--", color="grey")


def _png(plot, *args) -> bytes:
    buffer = io.BytesIO()
    plot(*args, buffer)
    return buffer.getvalue()


@contextmanager
def _figure(out: io.BytesIO, columns: int = 1, size: tuple[float, float] = (5, 5)):
    """Axes to draw on; on exit the figure is laid out, saved into `out` as a PNG, and closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, columns, figsize=size)
    try:
        yield axes
        fig.tight_layout()
        fig.savefig(out, format="png", dpi=100)
    finally:
        plt.close(fig)


def plot_training_curves(history: list[dict], where: Where) -> None:
    """Train loss and validation logloss, and validation AUC, against step (one point per epoch)."""
    Location.of(where).write_bytes(_png(_plot_training_curves, history))


def _plot_training_curves(history: list[dict], out: io.BytesIO) -> None:
    steps = [h["step"] for h in history]
    with _figure(out, columns=2, size=(10, 4)) as (left, right):
        left.plot(steps, [h["train_loss"] for h in history], marker="o", label="train loss")
        left.plot(steps, [h["valid_logloss"] for h in history], marker="o", label="valid logloss")
        left.set_xlabel("step")
        left.legend()
        right.plot(steps, [h["valid_auc"] for h in history], marker="o", color="C2")
        right.set_xlabel("step")
        right.set_ylabel("validation AUC")


def _plot_roc(fpr: np.ndarray, tpr: np.ndarray, auc: float, out: io.BytesIO) -> None:
    with _figure(out) as ax:
        ax.plot(fpr, tpr, label=f"model (AUC {auc:.4f})")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(loc="lower right")


def _plot_calibration(bins: list[dict], out: io.BytesIO) -> None:
    predicted = [b["ctr_predicted"] for b in bins]
    observed = [b["ctr_observed"] for b in bins]
    top = max([*predicted, *observed, 1e-3]) * 1.05
    with _figure(out) as ax:
        ax.plot([0, top], [0, top], linestyle="--", color="grey", label="perfect calibration")
        ax.plot(predicted, observed, marker="o", label="model, by bin of prediction")
        ax.set_xlabel("mean predicted CTR")
        ax.set_ylabel("observed CTR")
        ax.legend(loc="upper left")


def _html(metrics: dict[str, Any], images: dict[str, bytes]) -> str:
    overall = metrics["overall"]
    figures = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, png in images.items()
    )
    slices = metrics.get("slices")
    slice_table = ""
    if slices:
        slice_table = f"<h2>By {html.escape(slices['column'])}</h2>" + _table(
            slices["values"], ["value", "rows", "auc", "logloss", "ctr_observed", "ctr_predicted"])
    source = html.escape(str(metrics.get("source", "")))
    drift = metrics.get("drift")
    drift_table = ""
    if drift:
        references = ", ".join(f"{what} {html.escape(str(drift[key]))}" for key, what in
                               (("reference_data", "the data of"), ("reference_model", "the vocabulary of"))
                               if drift.get(key)) or "nothing (the first run)"
        drift_table = (f"<h2>Drift of the training data</h2><p>{html.escape(drift['data'])} against {references} "
                       "(drift checks before training: docs/stages.md)</p>" + _table(
                           [{"field": name, **figures} for name, figures in drift["fields"].items()],
                           ["field", *DRIFT_FIGURES]))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>DeepFM evaluation</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th {{ background: #f3f3f3; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }}
img {{ max-width: 520px; }}
</style></head><body>
<h1>DeepFM evaluation</h1>
<p>Predictions: {source}<br>Model version: {html.escape(str(metrics.get("model_version") or "unknown"))}
(weights {html.escape(str(metrics.get("model_digest") or "unknown"))})</p>
{_table([overall], ["rows", "auc", "logloss", "ctr_observed", "ctr_predicted"])}
<p>Rows without a label (left out): {metrics.get("rows_without_label", 0)}</p>
{figures}
<h2>Calibration by bin of prediction</h2>
{_table(metrics["calibration"], ["bin", "rows", "p_min", "p_max", "ctr_predicted", "ctr_observed"])}
{slice_table}
{drift_table}
</body></html>
"""


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if value is None:  # a figure not measured for this row
        return ""
    if isinstance(value, float):
        return f"{value:.5f}"
    return html.escape(str(value))
