"""Scoring the trained model on the held-out test images."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from dvclive import Live
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)

from fmnist_pipeline import CLASS_NAMES
from fmnist_pipeline.data import load_split
from fmnist_pipeline.model import load_model
from fmnist_pipeline.plots import confusion_matrix_png

logger = logging.getLogger(__name__)


def test_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro F1, log loss and per-class precision, recall and F1."""
    labels = list(range(len(CLASS_NAMES)))
    y_pred = proba.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(CLASS_NAMES)
    }
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "log_loss": float(log_loss(y_true, proba, labels=labels)),
        "per_class": per_class,
    }


def run(
    model_path: str | Path,
    test_path: str | Path,
    live_dir: str | Path,
    figure_path: str | Path,
) -> dict[str, Any]:
    """Score the model on the test split and log metrics and plots with DVCLive."""
    model = load_model(model_path)
    test = load_split(test_path)
    proba = model.predict(test.x, batch_size=1024, verbose=0)
    metrics = test_metrics(test.y, proba)
    y_pred = proba.argmax(axis=1)

    with Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None) as live:
        for name in ("accuracy", "macro_f1", "log_loss"):
            live.log_metric(name, metrics[name], plot=False)
        live.summary["per_class"] = metrics["per_class"]
        names = np.asarray(CLASS_NAMES)
        live.log_sklearn_plot(
            "confusion_matrix",
            names[test.y],
            names[y_pred],
            name="confusion_matrix.json",
            title="Test set confusion matrix",
        )
    confusion_matrix_png(test.y, y_pred, figure_path)
    logger.info(
        "test accuracy %.4f, macro F1 %.4f, log loss %.4f on %d images",
        metrics["accuracy"],
        metrics["macro_f1"],
        metrics["log_loss"],
        len(test.y),
    )
    return metrics
