"""The MLP and the scikit-learn estimator that wraps it for the search."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from scikeras.wrappers import KerasClassifier
from sklearn.utils import ClassifierTags

from fmnist_pipeline import CLASS_NAMES
from fmnist_pipeline.data import IMAGE_SHAPE
from fmnist_pipeline.errors import PipelineError

HIDDEN_LAYERS = 3


class TrainingDiverged(ArithmeticError):
    """The training loss became NaN or infinite."""


@keras.saving.register_keras_serializable(package="fmnist_pipeline")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels smoothed towards the uniform distribution.

    Keras smooths only one-hot targets; this one-hot encodes the integer labels
    first, so the estimator keeps scikit-learn's plain class labels.
    """

    def __init__(
        self,
        label_smoothing: float = 0.0,
        name: str = "smoothed_sparse_crossentropy",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        one_hot = keras.ops.one_hot(labels, keras.ops.shape(y_pred)[-1])
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, label_smoothing=self.label_smoothing
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def build_model(
    units: tuple[int, int, int] = (256, 128, 64),
    activations: tuple[str, str, str] = ("relu", "relu", "relu"),
    learning_rate: float = 1e-3,
    label_smoothing: float = 0.0,
) -> keras.Sequential:
    """Build and compile the MLP: Flatten, three hidden Dense layers, softmax output.

    Parameters
    ----------
    units, activations
        Width and activation of each hidden layer, input side first.
    learning_rate
        Adam's learning rate.
    label_smoothing
        Weight moved from the true class to a uniform target in the loss; 0 is
        plain cross-entropy.
    """
    if len(units) != HIDDEN_LAYERS or len(activations) != HIDDEN_LAYERS:
        raise ValueError(
            f"expected {HIDDEN_LAYERS} hidden layers, got units={units} "
            f"and activations={activations}"
        )
    model = keras.Sequential(name="fmnist_mlp")
    model.add(keras.Input(shape=IMAGE_SHAPE))
    model.add(keras.layers.Flatten())
    for index, (width, activation) in enumerate(
        zip(units, activations, strict=True), start=1
    ):
        model.add(
            keras.layers.Dense(
                int(width), activation=activation, name=f"hidden_{index}"
            )
        )
    model.add(keras.layers.Dense(len(CLASS_NAMES), activation="softmax", name="output"))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=(
            SmoothedSparseCrossentropy(label_smoothing)
            if label_smoothing
            else "sparse_categorical_crossentropy"
        ),
        metrics=["accuracy"],
    )
    return model


class FashionMLPClassifier(KerasClassifier):
    """Scikit-learn classifier around :func:`build_model`.

    Every searched hyperparameter is a plain constructor argument, so
    ``RandomizedSearchCV`` can set it and ``clone`` can copy it.

    Parameters
    ----------
    units_1, units_2, units_3 : int
        Widths of the hidden layers.
    activation_1, activation_2, activation_3 : str
        Keras activation names of the hidden layers.
    learning_rate : float
        Adam's learning rate.
    label_smoothing : float
        See :func:`build_model`.
    flip_augment : bool
        Train on every image and its left-right mirror image (the hold-out of
        ``validation_split`` is not mirrored).
    epochs, batch_size : int
        Passed to ``keras.Model.fit``; ``epochs`` is the maximum when
        ``patience`` is set.
    validation_split : float
        Fraction of each fit's data (the last samples) held out to watch for
        early stopping; 0 trains on everything.
    patience : int or None
        Stop after this many epochs without a better validation accuracy and keep
        the best weights; halve the learning rate after half as many. ``None``
        trains for exactly ``epochs``.
    random_state : int or None
        Seeds weight initialisation and batch shuffling of each fit.
    verbose : int
        Keras' progress output of each fit.
    callbacks : list or None
        Extra Keras callbacks for every fit (DVCLive's, for instance).
    **kwargs
        Any other SciKeras setting, such as ``shuffle``.

    Attributes
    ----------
    model_ : keras.Model
        The fitted network.
    history_ : dict
        Per-epoch loss and accuracy (and their validation counterparts).
    classes_ : ndarray
        The labels seen in ``fit``.
    """

    def __init__(
        self,
        units_1: int = 256,
        units_2: int = 128,
        units_3: int = 64,
        activation_1: str = "relu",
        activation_2: str = "relu",
        activation_3: str = "relu",
        learning_rate: float = 1e-3,
        label_smoothing: float = 0.0,
        flip_augment: bool = False,
        epochs: int = 10,
        batch_size: int = 128,
        validation_split: float = 0.0,
        patience: int | None = None,
        random_state: int | None = None,
        verbose: int = 0,
        callbacks: list | None = None,
        **kwargs,
    ):
        # SciKeras keeps its own fit and compile settings as attributes too, and
        # clone() passes them back in through **kwargs.
        super().__init__(**kwargs)
        self.units_1 = units_1
        self.units_2 = units_2
        self.units_3 = units_3
        self.activation_1 = activation_1
        self.activation_2 = activation_2
        self.activation_3 = activation_3
        self.learning_rate = learning_rate
        self.label_smoothing = label_smoothing
        self.flip_augment = flip_augment
        self.epochs = epochs
        self.batch_size = batch_size
        self.validation_split = validation_split
        self.patience = patience
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks

    def __sklearn_tags__(self):
        # SciKeras 0.13 predates scikit-learn's tags API, so without this
        # is_classifier() is False and an integer cv silently becomes an
        # unstratified KFold.
        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier"
        tags.classifier_tags = ClassifierTags()
        return tags

    def _keras_build_fn(self) -> keras.Model:
        return build_model(
            units=(self.units_1, self.units_2, self.units_3),
            activations=(self.activation_1, self.activation_2, self.activation_3),
            learning_rate=self.learning_rate,
            label_smoothing=self.label_smoothing,
        )

    def _fit_keras_model(self, X, y, sample_weight, *args, **kwargs) -> None:
        if self.flip_augment:
            X, y, sample_weight, held_out = mirrored_training_set(
                X, y, sample_weight, self.validation_split
            )
            if held_out is not None:
                # The hold-out is split off here, before mirroring, exactly as
                # Keras would split it: the last samples.
                kwargs.update(validation_split=0.0, validation_data=held_out)
        super()._fit_keras_model(X, y, sample_weight, *args, **kwargs)

    def fit(self, X, y, sample_weight=None, **kwargs) -> FashionMLPClassifier:
        """Fit the network; raise :class:`TrainingDiverged` if the loss blew up."""
        super().fit(X, y, sample_weight=sample_weight, **kwargs)
        losses = np.asarray(self.history_.get("loss", []), dtype=float)
        if losses.size and not np.isfinite(losses).all():
            raise TrainingDiverged(
                f"loss became {losses[~np.isfinite(losses)][0]} by epoch "
                f"{len(losses)} with learning_rate={self.learning_rate:g}; "
                "lower the learning rate"
            )
        return self

    def _initialize_callbacks(self) -> None:
        super()._initialize_callbacks()
        # Stop a diverged fit at once instead of training on NaNs to the end.
        self._fit_callbacks = [keras.callbacks.TerminateOnNaN(), *self._fit_callbacks]
        if self.patience is None:
            return
        if not self.validation_split:
            raise ValueError("patience needs a validation_split > 0 to watch")
        self._fit_callbacks = [
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy",
                patience=self.patience,
                restore_best_weights=True,
            ),
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_accuracy",
                factor=0.5,
                patience=max(1, self.patience // 2),
                min_lr=1e-6,
            ),
            *self._fit_callbacks,
        ]


def mirrored_training_set(x, y, sample_weight, validation_split: float):
    """Add the left-right mirror of every training image, keeping any hold-out.

    Returns ``(x, y, sample_weight, held_out)`` where ``held_out`` is the
    ``(x, y)`` of the last ``validation_split`` of the samples, unmirrored, or
    ``None`` without a split.
    """
    if x.ndim != 3:
        raise ValueError(f"flip_augment needs images of shape (n, h, w), got {x.shape}")
    held_out = None
    if validation_split:
        # Keras' own rule for validation_split: the last samples, rounded down.
        split_at = int(np.floor(len(x) * (1.0 - validation_split)))
        held_out = (x[split_at:], y[split_at:])
        x, y = x[:split_at], y[:split_at]
        if sample_weight is not None:
            sample_weight = sample_weight[:split_at]
    x = np.concatenate([x, x[:, :, ::-1]])
    y = np.concatenate([y, y])
    if sample_weight is not None:
        sample_weight = np.concatenate([sample_weight, sample_weight])
    return x, y, sample_weight, held_out


def load_model(path) -> keras.Model:
    """Load a saved ``.keras`` model; safe mode refuses embedded Python code."""
    if not Path(path).is_file():
        raise PipelineError(
            f"{path} does not exist; run `dvc repro` (or `dvc pull`) to get the model"
        )
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except (OSError, ValueError) as error:
        raise PipelineError(
            f"{path} is not a loadable Keras model ({error})"
        ) from error
