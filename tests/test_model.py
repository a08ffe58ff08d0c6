import pickle

import keras
import numpy as np
import pytest
from sklearn.base import clone, is_classifier

from fmnist_pipeline.model import FashionMLPClassifier, build_model, load_model
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
