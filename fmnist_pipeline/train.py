"""Retraining the best candidate on the whole training set."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dvclive import Live
from dvclive.keras import DVCLiveCallback

from fmnist_pipeline.config import check_candidate, load_params
from fmnist_pipeline.data import load_split
from fmnist_pipeline.errors import PipelineError
from fmnist_pipeline.io import atomic_directory, atomic_path, read_json, write_json
from fmnist_pipeline.model import (
    FashionMLPClassifier,
    TrainingDiverged,
    hold_out_start,
)
from fmnist_pipeline.plots import learning_curves_png

logger = logging.getLogger(__name__)


def make_final_estimator(
    best: Mapping[str, Any], config: Mapping[str, Any], callbacks: list | None = None
) -> FashionMLPClassifier:
    """The best candidate, set up to train with early stopping on a hold-out."""
    return FashionMLPClassifier(
        **best,
        epochs=config["max_epochs"],
        batch_size=config["batch_size"],
        label_smoothing=config["label_smoothing"],
        flip_augment=config["flip_augment"],
        shift_augment=config["shift_augment"],
        validation_split=config["validation_fraction"],
        patience=config["patience"],
        random_state=config["seed"],
        verbose=2,
        callbacks=callbacks,
    )


def run(
    params_path: str | Path,
    train_path: str | Path,
    best_params_path: str | Path,
    model_path: str | Path,
    history_path: str | Path,
    live_dir: str | Path,
    figure_path: str | Path,
) -> dict[str, Any]:
    """Train the searched best params on all training images and save the model.

    The last ``train.validation_fraction`` of the training images watch for early
    stopping; the weights of the best validation epoch are kept.
    """
    config = load_params(params_path)["train"]
    best = read_json(best_params_path)
    check_candidate(best, str(best_params_path))
    train = load_split(train_path)
    if hold_out_start(len(train.y), config["validation_fraction"]) == len(train.y):
        raise PipelineError(
            f"train.validation_fraction: {config['validation_fraction']} of "
            f"{len(train.y)} images holds out none; raise it in params.yaml"
        )
    logger.info("training %s on %d images", best, len(train.y))

    # Every output, DVCLive's per-epoch logs included, is written under a
    # temporary name and moved into place only once the training has finished.
    started = time.perf_counter()
    with atomic_directory(live_dir) as live_tmp:
        with Live(dir=str(live_tmp), save_dvc_exp=False, dvcyaml=None) as live:
            callbacks = [DVCLiveCallback(live=live)]
            estimator = make_final_estimator(best, config, callbacks)
            try:
                estimator.fit(train.x, train.y)
            except TrainingDiverged as error:
                raise PipelineError(
                    f"the final training diverged ({error}); rerun the search "
                    "with a narrower search.space.learning_rate"
                ) from error
            history = {
                key: [float(v) for v in values]
                for key, values in estimator.history_.items()
            }
            best_epoch = 1 + max(
                range(len(history["val_accuracy"])),
                key=history["val_accuracy"].__getitem__,
            )
            summary = {
                "epochs_run": len(history["loss"]),
                "best_epoch": best_epoch,
                "best_val_accuracy": history["val_accuracy"][best_epoch - 1],
                "train_time_s": round(time.perf_counter() - started, 1),
            }
            live.summary.update(summary)

        with atomic_path(model_path) as tmp:
            estimator.model_.save(tmp)
        write_json(history_path, {**summary, "history": history})
        learning_curves_png(history, figure_path)
    logger.info(
        "trained %d epochs in %.0fs; best validation accuracy %.4f at epoch %d",
        summary["epochs_run"],
        summary["train_time_s"],
        summary["best_val_accuracy"],
        best_epoch,
    )
    return summary
