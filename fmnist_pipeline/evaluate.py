"""Scoring the trained model on the held-out test images."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
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
from fmnist_pipeline.config import load_params
from fmnist_pipeline.data import load_split
from fmnist_pipeline.io import atomic_directory, atomic_path, read_json
from fmnist_pipeline.model import load_model
from fmnist_pipeline.plots import confusion_matrix_png, misclassified_png

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


def render_report(
    metrics: Mapping[str, Any],
    best: Mapping[str, Any],
    search: Mapping[str, Any],
    figures: Mapping[str, str],
) -> str:
    """The Markdown report: best params, test metrics, per-class table, figures."""
    lines = ["# Fashion-MNIST classifier report", "", "## Best hyperparameters", ""]
    lines += ["| hyperparameter | value |", "| --- | --- |"]
    lines += [
        f"| {name} | {value:.3g} |"
        if isinstance(value, float)
        else f"| {name} | {value} |"
        for name, value in best.items()
    ]
    lines += [
        "",
        f"Chosen among {search['candidates']} candidates by mean cross-validated "
        f"{search['scoring']}: {search['best_mean_cv_score']:.4f} "
        f"(std {search['best_std_cv_score']:.4f}).",
        "",
        f"## Test metrics ({sum(c['support'] for c in metrics['per_class'].values())}"
        " images)",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| accuracy | {metrics['accuracy']:.4f} |",
        f"| macro F1 | {metrics['macro_f1']:.4f} |",
        f"| log loss | {metrics['log_loss']:.4f} |",
        "",
        "## Per class",
        "",
        "| class | precision | recall | F1 | support |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} "
        f"| {row['support']} |"
        for name, row in metrics["per_class"].items()
    ]
    lines += ["", "## Figures", ""]
    for title, path in figures.items():
        lines += [f"### {title}", "", f"![{title}]({path})", ""]
    return "\n".join(lines)


def run(
    params_path: str | Path,
    model_path: str | Path,
    test_path: str | Path,
    best_params_path: str | Path,
    search_metrics_path: str | Path,
    live_dir: str | Path,
    figures_dir: str | Path,
    report_path: str | Path,
) -> dict[str, Any]:
    """Score the model on the test split; log metrics and plots; write the report.

    ``figures_dir`` must already hold the search's and the training's figures; this
    stage adds the confusion matrix and the misclassified examples.
    """
    config = load_params(params_path)["evaluate"]
    # Everything is read before anything is written.
    best = read_json(best_params_path)
    search_metrics = read_json(search_metrics_path)
    model = load_model(model_path)
    test = load_split(test_path)
    proba = model.predict(test.x, batch_size=1024, verbose=0)
    metrics = test_metrics(test.y, proba)
    y_pred = proba.argmax(axis=1)

    with (
        atomic_directory(live_dir) as live_tmp,
        Live(dir=str(live_tmp), save_dvc_exp=False, dvcyaml=None) as live,
    ):
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

    figures_dir = Path(figures_dir)
    confusion_matrix_png(test.y, y_pred, figures_dir / "confusion_matrix.png")
    misclassified_png(
        test.x,
        test.y,
        y_pred,
        config["misclassified"],
        figures_dir / "misclassified.png",
    )
    report_path = Path(report_path)
    relative = os.path.relpath(figures_dir, report_path.parent)
    figures = {
        "Confusion matrix": "confusion_matrix.png",
        "Learning curves": "learning_curves.png",
        "CV score against each searched hyperparameter": "cv_scores.png",
        "Misclassified test images": "misclassified.png",
    }
    report = render_report(
        metrics,
        best,
        search_metrics,
        {title: f"{relative}/{name}" for title, name in figures.items()},
    )
    with atomic_path(report_path) as tmp:
        tmp.write_text(report + "\n", encoding="utf-8")
    logger.info(
        "test accuracy %.4f, macro F1 %.4f, log loss %.4f on %d images; report in %s",
        metrics["accuracy"],
        metrics["macro_f1"],
        metrics["log_loss"],
        len(test.y),
        report_path,
    )
    return metrics
