import logging

import numpy as np
import pytest
from scipy.stats import loguniform, randint
from sklearn.model_selection import ParameterSampler, StratifiedKFold

from fmnist_pipeline.config import describe_candidate
from fmnist_pipeline.errors import PipelineError
from fmnist_pipeline.search import (
    SEARCHED,
    best_params,
    candidate_rows,
    fit_search,
    make_search,
    run_search,
    search_metrics,
    stratified_subsample,
    to_distributions,
)
from tests.conftest import REPO_ROOT, synthetic_split, tiny_params


def space(**overrides):
    base = {
        "units_1": [64, 128],
        "units_2": {"low": 16, "high": 32},
        "units_3": [8],
        "activation_1": ["relu", "elu"],
        "activation_2": ["tanh"],
        "activation_3": ["gelu"],
        "learning_rate": {"low": 1e-4, "high": 1e-2},
    }
    return {**base, **overrides}


def test_lists_become_choices_and_ranges_become_distributions():
    distributions = to_distributions(space())
    assert set(distributions) == set(SEARCHED)
    assert distributions["units_1"] == [64, 128]
    assert distributions["activation_1"] == ["relu", "elu"]
    units_2 = distributions["units_2"]
    assert isinstance(units_2.dist, type(randint))
    assert units_2.support() == (16, 32)
    learning_rate = distributions["learning_rate"]
    assert isinstance(learning_rate.dist, type(loguniform))
    assert learning_rate.support() == pytest.approx((1e-4, 1e-2))


def test_sampled_candidates_stay_inside_the_space_and_repeat_with_the_seed():
    distributions = to_distributions(space())
    first = list(ParameterSampler(distributions, n_iter=30, random_state=3))
    again = list(ParameterSampler(distributions, n_iter=30, random_state=3))
    assert first == again
    for candidate in first:
        assert candidate["units_1"] in (64, 128)
        assert 16 <= candidate["units_2"] <= 32
        assert 1e-4 <= candidate["learning_rate"] <= 1e-2


def test_stratified_subsample_keeps_class_balance():
    x = np.zeros((1000, 28, 28), np.float32)
    y = np.repeat(np.arange(10, dtype=np.uint8), 100)
    x_part, y_part = stratified_subsample(x, y, 200, seed=0)
    assert len(x_part) == 200
    assert np.bincount(y_part).tolist() == [20] * 10
    assert stratified_subsample(x, y, None, seed=0)[1] is y


def test_search_uses_stratified_folds_and_the_param_space():
    config = tiny_params([])["search"]
    search = make_search(config)
    assert isinstance(search.cv, StratifiedKFold)
    assert search.cv.n_splits == config["folds"]
    assert search.n_iter == config["n_iter"]
    assert search.scoring == config["scoring"]


def test_tiny_search_scores_and_logs_every_candidate(caplog, capsys):
    images, labels = synthetic_split(240, seed=0)
    x = images.astype(np.float32) / 255.0
    config = tiny_params([])["search"]
    config.update(n_iter=3, epochs=5, batch_size=16)
    config["space"]["learning_rate"] = {"low": 3e-3, "high": 1e-2}
    with caplog.at_level(logging.INFO, logger="fmnist_pipeline.search"):
        search, failures = run_search(x, labels, config)
    assert failures == []
    rows = candidate_rows(search, failures)
    assert len(rows) == 3
    # Every fold prints a line as it finishes; the end logs every candidate
    # with its params, mean and std.
    folds_done = [
        line for line in capsys.readouterr().out.splitlines() if " END " in line
    ]
    assert len(folds_done) == 3 * config["folds"]
    messages = [record.getMessage() for record in caplog.records]
    ranked = [line for line in messages if line.startswith("rank ")]
    assert len(ranked) == 3
    for row in rows:
        params = {name: row[f"param_{name}"] for name in SEARCHED}
        mean, std = row["mean_test_score"], row["std_test_score"]
        expected = f"mean CV score {mean:.4f} (std {std:.4f}): "
        assert any(
            expected in line and describe_candidate(params) in line for line in ranked
        )
    # The CSV holds the whole cv_results_: every fold's score and the times too.
    assert {"split0_test_score", "split1_test_score", "std_fit_time"} <= set(rows[0])
    assert all(0.0 <= row["mean_test_score"] <= 1.0 for row in rows)
    assert sorted(row["rank_test_score"] for row in rows)[0] == 1
    best = best_params(search)
    assert set(best) == set(SEARCHED)
    # The bar images are easy: the best candidate must beat chance by far.
    assert search.best_score_ > 0.5
    assert REPO_ROOT.exists()


def test_diverging_candidates_are_recorded_as_failed_and_the_search_goes_on():
    images, labels = synthetic_split(120, seed=0)
    x = images.astype(np.float32) / 255.0
    config = tiny_params([])["search"]
    config.update(n_iter=2, epochs=2, batch_size=16)
    search = make_search(config)
    search.set_params(
        param_distributions={"learning_rate": [1e-3, 1e30], "units_1": [16]}
    )
    failures = fit_search(search, x, labels)
    assert len(failures) == 1
    assert failures[0].startswith("TrainingDiverged: loss became")
    assert "learning_rate 1e+30" in failures[0]
    rows = {row["param_learning_rate"]: row for row in candidate_rows(search, failures)}
    assert np.isnan(rows[1e30]["mean_test_score"])
    assert rows[1e30]["status"] == f"failed: {failures[0]}"
    assert rows[1e-3]["status"] == "ok"
    assert not np.isnan(rows[1e-3]["mean_test_score"])


def test_search_where_every_candidate_fails_says_what_to_change():
    images, labels = synthetic_split(120, seed=0)
    x = images.astype(np.float32) / 255.0
    config = tiny_params([])["search"]
    config.update(n_iter=2, epochs=2, batch_size=16)
    config["space"]["learning_rate"] = {"low": 1e29, "high": 1e30}
    with pytest.raises(PipelineError) as caught:
        run_search(x, labels, config)
    message = str(caught.value)
    assert message.startswith("all 2 search candidates failed to fit (TrainingDiverged")
    assert message.endswith(
        "narrow search.space in params.yaml, for example a lower learning_rate.high"
    )


def test_each_failed_candidate_gets_its_own_reason():
    images, labels = synthetic_split(120, seed=0)
    x = images.astype(np.float32) / 255.0
    config = tiny_params([])["search"]
    config.update(n_iter=3, epochs=2, batch_size=16)
    search = make_search(config)
    search.set_params(param_distributions={"learning_rate": [1e-3, 1e29, 1e30]})
    search.set_params(n_iter=3)
    failures = fit_search(search, x, labels)
    rows = {row["param_learning_rate"]: row for row in candidate_rows(search, failures)}
    assert len(failures) == 2
    for rate in (1e29, 1e30):
        status = rows[rate]["status"]
        assert status.startswith("failed: TrainingDiverged")
        assert f"learning_rate {rate:.3g}" in status
        assert ";" not in status.removesuffix("; lower the learning rate")


def test_successive_halving_scores_rounds_on_growing_subsets():
    images, labels = synthetic_split(270, seed=0)
    x = images.astype(np.float32) / 255.0
    config = tiny_params([])["search"]
    config.update(n_iter=4, epochs=3, batch_size=16, strategy="halving")
    search, failures = run_search(x, labels, config)
    assert failures == []
    rows = candidate_rows(search, failures)
    rounds = sorted({row["iter"] for row in rows})
    assert rounds == [0, 1]
    first = [row for row in rows if row["iter"] == 0]
    second = [row for row in rows if row["iter"] == 1]
    assert len(first) == 4 and len(second) == 2
    assert second[0]["n_resources"] == 3 * first[0]["n_resources"]
    assert set(best_params(search)) == set(SEARCHED)
    metrics = search_metrics(search, wall_time=1.0)
    assert metrics["candidates"] == 4 and metrics["fits"] == 6 * config["folds"]


def test_more_folds_than_images_of_a_class_is_a_clear_error():
    images, labels = synthetic_split(100, seed=0)  # ten images of each class
    config = tiny_params([])["search"]
    config.update(subsample=None, folds=11)
    with pytest.raises(PipelineError, match="^search.folds: 11 stratified folds"):
        run_search(images.astype(np.float32) / 255.0, labels, config)
