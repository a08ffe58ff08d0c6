"""PNG figures for the README and the report (matplotlib, no display needed)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from fmnist_pipeline import CLASS_NAMES  # noqa: E402
from fmnist_pipeline.io import atomic_path  # noqa: E402


def _save(figure: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)


def confusion_matrix_png(
    y_true: np.ndarray, y_pred: np.ndarray, path: str | Path
) -> None:
    """Counts of true against predicted classes on the test set."""
    figure, axes = plt.subplots(figsize=(8, 7))
    ConfusionMatrixDisplay.from_predictions(
        y_true,
        y_pred,
        labels=range(len(CLASS_NAMES)),
        display_labels=CLASS_NAMES,
        xticks_rotation=45,
        colorbar=False,
        ax=axes,
    )
    axes.set_title("Test set confusion matrix")
    _save(figure, path)


def learning_curves_png(history: Mapping[str, Sequence[float]], path: str | Path):
    """Loss and accuracy per epoch, training against validation."""
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.plot(epochs, history[metric], label="train")
        if f"val_{metric}" in history:
            axes.plot(epochs, history[f"val_{metric}"], label="validation")
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle("Final training")
    _save(figure, path)


def cv_scores_png(
    rows: Sequence[Mapping[str, Any]],
    searched: Sequence[str],
    scoring: str,
    path: str | Path,
) -> None:
    """Mean CV score of every candidate against each searched hyperparameter."""
    columns = 4
    figure, grid = plt.subplots(
        math.ceil(len(searched) / columns), columns, figsize=(14, 6), squeeze=False
    )
    scores = np.array([row["mean_test_score"] for row in rows], dtype=float)
    for axes, name in zip(grid.flat, searched, strict=False):
        values = [row[f"param_{name}"] for row in rows]
        if all(isinstance(value, str) for value in values):
            categories = sorted(set(values))
            positions = [categories.index(value) for value in values]
            axes.set_xticks(range(len(categories)), categories, rotation=30)
            axes.scatter(positions, scores, alpha=0.7)
        else:
            axes.scatter(values, scores, alpha=0.7)
            if name == "learning_rate":
                axes.set_xscale("log")
                # A range within one decade gets crowded labels on minor ticks.
                axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel(name)
        axes.set_ylabel(f"mean CV {scoring}")
        axes.grid(alpha=0.3)
    for axes in list(grid.flat)[len(searched) :]:
        axes.set_visible(False)
    figure.suptitle("Search candidates")
    figure.tight_layout()
    _save(figure, path)


def misclassified_png(
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    count: int,
    path: str | Path,
) -> None:
    """A grid of the first ``count`` misclassified test images, true vs predicted."""
    wrong = np.flatnonzero(y_true != y_pred)[:count]
    columns = 5
    rows = max(1, math.ceil(len(wrong) / columns))
    figure, grid = plt.subplots(
        rows, columns, figsize=(2.2 * columns, 2.5 * rows), squeeze=False
    )
    for axes in grid.flat:
        axes.axis("off")
    for axes, index in zip(grid.flat, wrong, strict=False):
        axes.imshow(images[index], cmap="gray", vmin=0, vmax=1)
        axes.set_title(
            f"true: {CLASS_NAMES[y_true[index]]}\npred: {CLASS_NAMES[y_pred[index]]}",
            fontsize=8,
        )
    figure.suptitle(f"Misclassified test images (first {len(wrong)})")
    figure.tight_layout()
    _save(figure, path)
