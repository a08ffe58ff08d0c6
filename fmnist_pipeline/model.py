"""The MLP and the scikit-learn estimator that wraps it for the search."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
from scikeras.wrappers import KerasClassifier
from sklearn.utils import ClassifierTags

from fmnist_pipeline import CLASS_NAMES
from fmnist_pipeline.config import describe_candidate
from fmnist_pipeline.data import IMAGE_SHAPE
from fmnist_pipeline.errors import PipelineError

HIDDEN_LAYERS = 3


# A uniform guess over the 10 classes costs ln(10), about 2.3, in cross-entropy; a
# running training loss above 100, over 40 times that, means the fit has blown up.
DIVERGED_LOSS = 100.0


class TrainingDiverged(ArithmeticError):
    """The training loss became NaN, infinite or absurdly large."""


class StopOnDivergence(keras.callbacks.Callback):
    """Stop a fit at the first batch whose running loss is not a sane number.

    Keras computes the cross-entropy of a softmax output from its logits, so a
    blown-up network can report a huge but finite loss (1e30, say) instead of
    NaN; both count. The reason is kept in :attr:`diverged` for the estimator.
    """

    def __init__(self, limit: float = DIVERGED_LOSS):
        super().__init__()
        self.limit = limit
        self.diverged: str | None = None

    def on_train_begin(self, logs=None) -> None:
        self.diverged = None

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        if math.isfinite(loss) and loss <= self.limit:
            return
        # No epoch or exact value: the folds of one candidate that blow up
        # alike then report one reason.
        self.diverged = (
            f"loss became {loss}"
            if not math.isfinite(loss)
            else f"loss became larger than {self.limit:g}"
        )
        self.model.stop_training = True


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
        Mirror each training image left to right with probability 1/2, drawn
        anew every epoch (the hold-out of ``validation_split`` is left as it is).
    shift_augment : int
        Move each training image by up to this many pixels along each axis,
        drawn anew every epoch, filling the uncovered border with background; 0
        leaves the images in place.
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
        shift_augment: int = 0,
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
        self.shift_augment = shift_augment
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
        if self.flip_augment or self.shift_augment:
            # The hold-out is split off here, before augmenting, exactly as Keras
            # would split it: the last samples.
            X, y, sample_weight, held_out = split_hold_out(
                X, y, sample_weight, self.validation_split
            )
            batches = augmented_batches(
                X,
                y,
                sample_weight,
                batch_size=self.batch_size,
                flip=self.flip_augment,
                max_shift=self.shift_augment,
                # The fit's own integer seed, drawn by SciKeras when random_state
                # is a RandomState.
                seed=self._random_state,
            )
            kwargs.update(
                validation_split=0.0,
                validation_data=held_out,
                steps_per_epoch=math.ceil(len(y) / self.batch_size),
                batch_size=None,
                shuffle=False,
            )
            X, y, sample_weight = batches, None, None
        super()._fit_keras_model(X, y, sample_weight, *args, **kwargs)

    def fit(self, X, y, sample_weight=None, **kwargs) -> FashionMLPClassifier:
        """Fit the network; raise :class:`TrainingDiverged` if the loss blew up."""
        super().fit(X, y, sample_weight=sample_weight, **kwargs)
        if self._divergence.diverged:
            raise TrainingDiverged(
                f"{self._divergence.diverged} for "
                f"{describe_candidate(self.get_params())}; lower the learning rate"
            )
        return self

    def _initialize_callbacks(self) -> None:
        super()._initialize_callbacks()
        # Stop a diverged fit at once instead of training on NaNs to the end.
        self._divergence = StopOnDivergence()
        self._fit_callbacks = [self._divergence, *self._fit_callbacks]
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


def hold_out_start(n_samples: int, validation_split: float) -> int:
    """Where the hold-out begins: Keras' rule, the last samples, rounded down."""
    return int(np.floor(n_samples * (1.0 - validation_split)))


def split_hold_out(x, y, sample_weight, validation_split: float):
    """Split off the last ``validation_split`` of the samples, as Keras would.

    Returns ``(x, y, sample_weight, held_out)`` where ``held_out`` is the
    ``(x, y)`` of the hold-out, or ``None`` without a split.
    """
    if not validation_split:
        return x, y, sample_weight, None
    split_at = hold_out_start(len(x), validation_split)
    if sample_weight is not None:
        sample_weight = sample_weight[:split_at]
    return x[:split_at], y[:split_at], sample_weight, (x[split_at:], y[split_at:])


def shift_images(images: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Move image ``i`` down by ``dy[i]`` and right by ``dx[i]`` pixels.

    Negative offsets move up or left. Pixels moved out of the frame are lost and
    the uncovered border is 0, Fashion-MNIST's background.
    """
    n, height, width = images.shape
    pad = int(max(np.abs(dy).max(initial=0), np.abs(dx).max(initial=0)))
    if pad == 0:
        return images.copy()
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
    rows = (pad - dy)[:, None] + np.arange(height)
    cols = (pad - dx)[:, None] + np.arange(width)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def augmented_batches(
    x: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None,
    batch_size: int,
    flip: bool,
    max_shift: int,
    seed: int | None,
) -> Iterator[tuple[np.ndarray, ...]]:
    """Endless training batches, reshuffled and augmented anew on every pass.

    Each pass over the ``len(y) / batch_size`` batches (one epoch) visits every
    image once in a new order; each image is mirrored left to right with
    probability 1/2 when ``flip`` is set, and moved by a whole number of pixels
    in ``[-max_shift, max_shift]`` along each axis. The draws come from one
    generator seeded with ``seed``, so a seeded fit sees the same batches every
    time. Yields ``(images, labels)``, plus the weights when ``sample_weight`` is
    given.
    """
    if x.ndim != 3:
        raise ValueError(f"augmenting needs images of shape (n, h, w), got {x.shape}")
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(y))
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            images = x[index]
            if flip:
                mirrored = rng.random(len(index)) < 0.5
                images[mirrored] = images[mirrored, :, ::-1]
            if max_shift:
                dy, dx = rng.integers(-max_shift, max_shift + 1, size=(2, len(index)))
                images = shift_images(images, dy, dx)
            if sample_weight is None:
                yield images, y[index]
            else:
                yield images, y[index], sample_weight[index]


def load_model(path) -> keras.Model:
    """Load a saved ``.keras`` model; safe mode refuses embedded Python code.

    Raises
    ------
    PipelineError
        When the file is missing, is not a Keras archive, holds code that safe
        mode refuses, or is not a model of 28x28 images into 10 classes.
    """
    rebuild = "rebuild it with `dvc repro -f train` (or get it with `dvc pull`)"
    if not Path(path).is_file():
        raise PipelineError(
            f"{path} does not exist; run `dvc repro` (or `dvc pull`) to get the model"
        )
    if not zipfile.is_zipfile(path):
        raise PipelineError(f"{path} is not a .keras (zip) archive; {rebuild}")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise PipelineError(
            f"{path} is not a loadable Keras model ({reason}); {rebuild}"
        ) from error
    expected = ((None, *IMAGE_SHAPE), (None, len(CLASS_NAMES)))
    if (tuple(model.input_shape), tuple(model.output_shape)) != expected:
        raise PipelineError(
            f"{path} maps {model.input_shape} to {model.output_shape}, not 28x28 "
            f"images to {len(CLASS_NAMES)} classes; {rebuild}"
        )
    return model
