import pickle

import keras
import numpy as np
import pytest
from sklearn.base import clone, is_classifier

from fmnist_pipeline.model import (
    FashionMLPClassifier,
    SmoothedSparseCrossentropy,
    build_model,
    load_model,
    mirrored_training_set,
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


def test_mirrored_training_set_keeps_the_hold_out_unmirrored():
    x = np.arange(10 * 2 * 3, dtype=np.float32).reshape(10, 2, 3)
    y = np.arange(10)
    mirrored_x, mirrored_y, weights, (held_x, held_y) = mirrored_training_set(
        x, y, None, 0.25
    )
    # Keras would hold out the last 3 of 10 samples (floor of 10 * 0.75 = 7).
    np.testing.assert_array_equal(held_x, x[7:])
    np.testing.assert_array_equal(held_y, y[7:])
    np.testing.assert_array_equal(mirrored_x, np.concatenate([x[:7], x[:7, :, ::-1]]))
    np.testing.assert_array_equal(mirrored_y, np.concatenate([y[:7], y[:7]]))
    assert weights is None
    _, _, _, no_hold_out = mirrored_training_set(x, y, None, 0.0)
    assert no_hold_out is None


class StepCounter(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.steps = self.params["steps"]


def test_flip_augment_doubles_the_training_images_and_validates_on_the_hold_out(
    tiny_data,
):
    x, y = tiny_data
    counts = {}
    for flip in (False, True):
        counter = StepCounter()
        estimator = FashionMLPClassifier(
            epochs=1,
            batch_size=32,
            validation_split=0.2,
            flip_augment=flip,
            label_smoothing=0.1,
            random_state=0,
            callbacks=[counter],
        ).fit(x, y)
        counts[flip] = counter.steps
    # 160 training images make 5 batches of 32; their mirror images 5 more.
    assert counts == {False: 5, True: 10}
    val_loss, _ = estimator.model_.evaluate(x[160:], y[160:], verbose=0)
    assert estimator.history_["val_loss"][0] == pytest.approx(val_loss, rel=1e-5)


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
