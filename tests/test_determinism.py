"""Same params, seed and data give the same search and the same model."""

import numpy as np
import pytest

from fmnist_pipeline.model import FashionMLPClassifier
from fmnist_pipeline.search import candidate_rows, run_search
from tests.conftest import synthetic_split, tiny_params


@pytest.fixture(scope="module")
def data():
    images, labels = synthetic_split(160, seed=3)
    return images.astype(np.float32) / 255.0, labels


def test_search_twice_gives_identical_candidates_and_scores(data):
    config = tiny_params([])["search"]
    config.update(n_iter=3, epochs=2, batch_size=16)

    def rows_without_times():
        rows = candidate_rows(run_search(*data, config)[0])
        # Fit and score times are the only columns that may differ.
        return [{k: v for k, v in r.items() if not k.endswith("_time")} for r in rows]

    first = rows_without_times()
    assert first == rows_without_times()
    assert "split0_test_score" in first[0]


def test_seeded_fits_give_the_same_probabilities(data):
    x, y = data

    def fit():
        estimator = FashionMLPClassifier(
            units_1=32,
            units_2=16,
            units_3=16,
            epochs=3,
            batch_size=16,
            validation_split=0.2,
            patience=2,
            random_state=7,
        )
        return estimator.fit(x, y).predict_proba(x)

    np.testing.assert_allclose(fit(), fit(), rtol=0, atol=1e-6)


def test_a_different_seed_gives_a_different_model(data):
    x, y = data
    probabilities = [
        FashionMLPClassifier(epochs=1, random_state=seed).fit(x, y).predict_proba(x)
        for seed in (1, 2)
    ]
    assert not np.allclose(*probabilities)
