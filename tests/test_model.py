import pickle
import zipfile

import keras
import numpy as np
import pytest
from sklearn.base import clone, is_classifier

from fmnist_pipeline.errors import PipelineError
from fmnist_pipeline.model import (
    FashionMLPClassifier,
    SmoothedSparseCrossentropy,
    StopOnDivergence,
    TrainingDiverged,
    augmented_batches,
    build_model,
    load_model,
    shift_images,
    split_hold_out,
)
from tests.conftest import synthetic_split


@pytest.fixture(scope="module")
def tiny_data():
    images, labels = synthetic_split(200, seed=0)
    return images.astype(np.float32) / 255.0, labels


def test_build_model_has_flatten_three_hidden_dense_and_softmax_output():
    model = build_model(units=(40, 30, 20), activations=("relu", "elu", "tanh"))
    layers = model.layers
    assert [type(layer) for layer in layers] == [keras.layers.Flatten] + [
        keras.layers.Dense
    ] * 4
    assert [layer.units for layer in layers[1:]] == [40, 30, 20, 10]
    activations = [layer.activation.__name__ for layer in layers[1:]]
    assert activations == ["relu", "elu", "tanh", "softmax"]
    assert model.input_shape == (None, 28, 28)
    assert model.output_shape == (None, 10)


def test_build_model_compiles_adam_with_the_learning_rate_and_accuracy():
    model = build_model(learning_rate=0.0042)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0042)
    assert model.loss == "sparse_categorical_crossentropy"
    assert model.compiled
    assert model.get_compile_config()["metrics"] == ["accuracy"]


def test_build_model_refuses_other_depths():
    with pytest.raises(ValueError, match="3 hidden layers"):
        build_model(units=(10, 10), activations=("relu", "relu"))


def test_estimator_is_a_classifier_for_scikit_learn():
    assert is_classifier(FashionMLPClassifier())


def test_clone_and_params_round_trip():
    estimator = FashionMLPClassifier(units_1=48, activation_2="elu", learning_rate=3e-4)
    copy = clone(estimator)
    assert copy is not estimator
    assert copy.get_params() == estimator.get_params()
    copy.set_params(units_3=7, learning_rate=0.01)
    assert (copy.units_3, copy.learning_rate) == (7, 0.01)
    assert estimator.units_3 == 64


def test_fit_builds_the_searched_architecture_and_pickles(tiny_data):
    x, y = tiny_data
    estimator = FashionMLPClassifier(
        units_1=24,
        units_2=16,
        units_3=12,
        activation_1="gelu",
        epochs=2,
        random_state=0,
    )
    assert estimator.fit(x, y) is estimator
    assert [layer.units for layer in estimator.model_.layers[1:]] == [24, 16, 12, 10]
    assert estimator.model_.layers[1].activation.__name__ == "gelu"
    assert list(estimator.classes_) == list(range(10))
    restored = pickle.loads(pickle.dumps(estimator))
    assert np.array_equal(restored.predict(x), estimator.predict(x))
    np.testing.assert_allclose(restored.predict_proba(x), estimator.predict_proba(x))


def test_patience_stops_early_and_needs_a_validation_split(tiny_data):
    x, y = tiny_data
    with pytest.raises(ValueError, match="validation_split"):
        FashionMLPClassifier(epochs=3, patience=1).fit(x, y)
    estimator = FashionMLPClassifier(
        epochs=50,
        patience=1,
        validation_split=0.2,
        learning_rate=1e-5,
        random_state=0,
    ).fit(x, y)
    assert "val_accuracy" in estimator.history_
    assert len(estimator.history_["loss"]) < 50


def test_saved_model_loads_in_safe_mode_with_the_same_predictions(tiny_data, tmp_path):
    x, y = tiny_data
    estimator = FashionMLPClassifier(epochs=1, random_state=0).fit(x, y)
    path = tmp_path / "model.keras"
    estimator.model_.save(path)
    loaded = load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), estimator.predict_proba(x), rtol=1e-6
    )


def test_smoothed_loss_of_integer_labels_matches_keras_on_one_hot_labels():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(10), size=6).astype(np.float32)
    labels = np.array([0, 3, 9, 3, 5, 1])
    expected = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(
        keras.utils.to_categorical(labels, 10), probabilities
    )
    got = SmoothedSparseCrossentropy(0.1)(labels, probabilities)
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-6)
    plain = keras.losses.SparseCategoricalCrossentropy()(labels, probabilities)
    assert float(got) != pytest.approx(float(plain))


def test_split_hold_out_takes_the_last_samples_as_keras_does():
    x = np.arange(10 * 2 * 3, dtype=np.float32).reshape(10, 2, 3)
    y = np.arange(10)
    weights = np.linspace(0.5, 1.5, 10)
    kept_x, kept_y, kept_weights, (held_x, held_y) = split_hold_out(x, y, weights, 0.25)
    # Keras would hold out the last 3 of 10 samples (floor of 10 * 0.75 = 7).
    np.testing.assert_array_equal(held_x, x[7:])
    np.testing.assert_array_equal(held_y, y[7:])
    np.testing.assert_array_equal(kept_x, x[:7])
    np.testing.assert_array_equal(kept_y, y[:7])
    np.testing.assert_array_equal(kept_weights, weights[:7])
    assert split_hold_out(x, y, None, 0.0)[3] is None


def test_shift_images_moves_each_image_by_its_own_offset_and_fills_with_zeros():
    images = np.zeros((3, 5, 5), dtype=np.float32)
    images[:, 2, 2] = 1.0
    images[:, 0, 4] = 0.5  # a corner pixel that a move up or right pushes out
    moved = shift_images(images, dy=np.array([1, -2, 0]), dx=np.array([0, 1, -1]))
    assert moved.shape == images.shape
    assert moved.dtype == images.dtype
    assert [tuple(np.argwhere(image == 1.0)[0]) for image in moved] == [
        (3, 2),
        (0, 3),
        (2, 1),
    ]
    # Down 1: the corner pixel follows; up 2 (and right 1): it leaves the frame.
    assert moved[0, 1, 4] == 0.5
    assert not (moved[1] == 0.5).any()
    assert moved[2, 0, 3] == 0.5
    np.testing.assert_array_equal(
        shift_images(images, np.zeros(3), np.zeros(3)), images
    )


def test_augmented_batches_cover_every_image_once_per_epoch_and_repeat_by_seed():
    rng = np.random.default_rng(0)
    x = rng.random((50, 28, 28), dtype=np.float32)
    y = np.arange(50)

    def epochs(seed, count=2):
        batches = augmented_batches(
            x, y, None, batch_size=16, flip=True, max_shift=2, seed=seed
        )
        # 50 images in batches of 16: 4 batches make one epoch.
        return [[next(batches) for _ in range(4)] for _ in range(count)]

    first, second = epochs(seed=3)
    for epoch in (first, second):
        assert [len(labels) for _, labels in epoch] == [16, 16, 16, 2]
        assert sorted(np.concatenate([labels for _, labels in epoch])) == list(y)
    # Each pass draws a new order and new augmentations.
    assert not np.array_equal(first[0][1], second[0][1])
    for images, labels in first:
        changed = [
            not np.array_equal(i, x[label])
            for i, label in zip(images, labels, strict=True)
        ]
        assert any(changed)
        # Augmenting moves pixels but never brightens them beyond the originals.
        assert images.max() <= x[labels].max()
    for (images_a, labels_a), (images_b, labels_b) in zip(
        first + second, sum(epochs(seed=3), []), strict=True
    ):
        np.testing.assert_array_equal(labels_a, labels_b)
        np.testing.assert_array_equal(images_a, images_b)
    assert not np.array_equal(epochs(seed=4)[0][0][1], first[0][1])


def test_augmented_batches_without_augmentation_leave_images_as_they_are():
    x = np.random.default_rng(1).random((20, 28, 28), dtype=np.float32)
    y = np.arange(20)
    weights = np.linspace(0.1, 2.0, 20)
    batches = augmented_batches(
        x, y, weights, batch_size=20, flip=False, max_shift=0, seed=0
    )
    images, labels, batch_weights = next(batches)
    np.testing.assert_array_equal(images, x[labels])
    np.testing.assert_array_equal(batch_weights, weights[labels])


def test_flips_are_mirror_images_of_the_originals():
    x = np.random.default_rng(2).random((64, 28, 28), dtype=np.float32)
    y = np.arange(64)
    images, labels = next(
        augmented_batches(x, y, None, batch_size=64, flip=True, max_shift=0, seed=0)
    )
    mirrored = [
        np.array_equal(i, x[label][:, ::-1])
        for i, label in zip(images, labels, strict=True)
    ]
    kept = [
        np.array_equal(i, x[label]) for i, label in zip(images, labels, strict=True)
    ]
    assert all(m != k for m, k in zip(mirrored, kept, strict=True))
    assert 16 < sum(mirrored) < 48


class StepCounter(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.steps = self.params["steps"]


@pytest.mark.parametrize(
    ("flip", "shift"), [(False, 0), (True, 0), (False, 2), (True, 1)]
)
def test_augmented_fits_train_on_the_split_and_validate_on_the_plain_hold_out(
    tiny_data, flip, shift
):
    x, y = tiny_data
    counter = StepCounter()
    estimator = FashionMLPClassifier(
        epochs=2,
        batch_size=32,
        validation_split=0.2,
        flip_augment=flip,
        shift_augment=shift,
        label_smoothing=0.1,
        random_state=0,
        callbacks=[counter],
    ).fit(x, y)
    # 160 training images make 5 batches of 32 per epoch, augmented or not.
    assert counter.steps == 5
    assert len(estimator.history_["loss"]) == 2
    val_loss, _ = estimator.model_.evaluate(x[160:], y[160:], verbose=0)
    assert estimator.history_["val_loss"][-1] == pytest.approx(val_loss, rel=1e-5)


def test_seeded_augmented_fits_repeat_and_differ_from_plain_ones(tiny_data):
    x, y = tiny_data

    def probabilities(**augment):
        estimator = FashionMLPClassifier(
            epochs=2, batch_size=32, random_state=5, **augment
        )
        return estimator.fit(x, y).predict_proba(x)

    augmented = probabilities(flip_augment=True, shift_augment=1)
    np.testing.assert_allclose(
        augmented, probabilities(flip_augment=True, shift_augment=1), atol=1e-6
    )
    assert not np.allclose(augmented, probabilities())


def test_a_model_trained_with_label_smoothing_loads_in_safe_mode(tiny_data, tmp_path):
    x, y = tiny_data
    estimator = FashionMLPClassifier(epochs=1, label_smoothing=0.2, random_state=0).fit(
        x, y
    )
    path = tmp_path / "model.keras"
    estimator.model_.save(path)
    np.testing.assert_allclose(
        load_model(path).predict(x, verbose=0), estimator.predict_proba(x), rtol=1e-6
    )


@pytest.mark.parametrize(
    ("loss", "reason"),
    [
        (float("nan"), "loss became nan"),
        (float("inf"), "loss became inf"),
        (1e30, "loss became larger than 100"),
        (2.3, None),
    ],
)
def test_stop_on_divergence_flags_non_finite_and_huge_losses(loss, reason):
    callback = StopOnDivergence()
    callback.set_model(build_model(units=(4, 4, 4)))
    callback.on_train_begin()
    callback.on_train_batch_end(0, {"loss": loss})
    assert callback.diverged == reason
    assert callback.model.stop_training is (reason is not None)


def test_a_blown_up_fit_raises_training_diverged(tiny_data):
    x, y = tiny_data
    estimator = FashionMLPClassifier(epochs=50, learning_rate=1e30, random_state=0)
    with pytest.raises(TrainingDiverged, match="learning_rate 1e\\+30; lower"):
        estimator.fit(x, y)
    # Stopped in its first epoch instead of training on NaNs for 50.
    assert len(estimator.history_["loss"]) == 1


def test_a_model_with_embedded_python_code_is_refused(tmp_path):
    model = keras.Sequential(
        [keras.Input(shape=(28, 28)), keras.layers.Lambda(lambda t: t * 2.0)]
    )
    path = tmp_path / "model.keras"
    model.save(path)
    # Keras' own loader runs the lambda when safe mode is off; ours must not.
    keras.saving.load_model(path, safe_mode=False)
    with pytest.raises(PipelineError, match="not a loadable Keras model.*safe_mode"):
        load_model(path)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("truncate", "is not a .keras (zip) archive"),
        ("garbage", "is not a .keras (zip) archive"),
        ("no config", "is not a loadable Keras model"),
        ("other shapes", "not 28x28 images to 10 classes"),
    ],
)
def test_a_damaged_model_file_is_a_one_line_error(tmp_path, damage, reason):
    path = tmp_path / "model.keras"
    build_model(units=(4, 4, 4)).save(path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "garbage":
        path.write_bytes(b"not a model")
    elif damage == "no config":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("metadata.json", "{}")
    else:
        keras.Sequential([keras.Input(shape=(5,)), keras.layers.Dense(3)]).save(path)
    with pytest.raises(PipelineError, match="rebuild it with `dvc repro -f train`"):
        try:
            load_model(path)
        except PipelineError as error:
            assert reason in str(error) and "\n" not in str(error)
            raise
