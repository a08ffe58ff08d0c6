import copy
import re

import keras
import pytest
import yaml

from fmnist_pipeline.config import (
    ACTIVATIONS,
    SCHEMA,
    check_candidate,
    load_params,
    validate_params,
)
from fmnist_pipeline.errors import ParamsError, PipelineError
from tests.conftest import REPO_ROOT

DEFAULTS = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def with_change(path: str, value):
    params = copy.deepcopy(DEFAULTS)
    *parents, leaf = path.split(".")
    node = params
    for key in parents:
        node = node[key]
    node[leaf] = value
    return params


def test_committed_params_are_valid():
    assert load_params(REPO_ROOT / "params.yaml") == DEFAULTS


def test_every_listed_activation_is_known_to_keras():
    for name in ACTIVATIONS:
        assert callable(keras.activations.get(name))


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("search.n_iter", 0, "search.n_iter: got 0, expected an integer >= 1"),
        ("search.folds", 1, "search.folds: got 1, expected an integer >= 2"),
        ("search.epochs", "ten", "search.epochs: got 'ten', expected an integer"),
        ("search.batch_size", 0, "search.batch_size: got 0"),
        ("train.validation_fraction", 1.0, "expected a number > 0 and < 1"),
        ("search.space.units_1", [128, -4], "search.space.units_1: got [128, -4]"),
        ("search.space.units_2", {"low": 64, "high": 32}, "low <= high"),
        ("search.space.activation_3", ["relu", "rleu"], "Keras activation names"),
        ("search.space.learning_rate", {"low": 0.1, "high": 0.01}, "low < high"),
        ("search.space.learning_rate", {"low": 0, "high": 0.01}, "number > 0"),
        ("search.scoring", "auc", "one of accuracy"),
        ("search.label_smoothing", 1.0, "expected a number >= 0 and < 1"),
        ("train.label_smoothing", -0.1, "expected a number >= 0 and < 1"),
        ("train.flip_augment", "yes", "train.flip_augment: got 'yes', expected true"),
        ("train.shift_augment", -1, "expected an integer >= 0 and <= 7"),
        ("search.shift_augment", 8, "search.shift_augment: got 8, expected an integer"),
        ("train.shift_augment", 1.5, "train.shift_augment: got 1.5"),
        ("fetch.sources", [], "a non-empty list"),
        ("fetch.sources", ["htp://example.org"], "directories or http(s) URLs"),
        ("fetch.timeout", 0, "fetch.timeout: got 0, expected a number > 0"),
        ("fetch.files", {"x.gz": "abc"}, "SHA-256"),
        ("search.seed", -1, "search.seed: got -1, expected an integer >= 0"),
        ("train.seed", 2**32, "expected an integer >= 0 and <= 4294967295"),
        ("fetch.timeout", 1e300, "expected a number > 0 and < 86400"),
        ("search.subsample", 10, "expected null or an integer >= 20"),
        ("search.n_jobs", 0, "search.n_jobs: got 0, expected an integer >= 1"),
        ("search.strategy", "grid", "expected one of random, halving"),
        ("search.halving_factor", 1, "expected an integer >= 2"),
        ("search.backend", "ray", "expected one of local, dask"),
        ("search.scheduler", "localhost", "a dask scheduler address"),
        ("search.flip_augment", 1, "search.flip_augment: got 1, expected true"),
        ("search.space.units_3", {"low": 0, "high": 4}, "search.space.units_3: got"),
        ("search.space.learning_rate", {"low": 0.1, "high": 0.1}, "low < high"),
        ("train.seed", 1.5, "train.seed: got 1.5, expected an integer >= 0"),
        ("train.max_epochs", 0, "train.max_epochs: got 0, expected an integer >= 1"),
        ("train.batch_size", 0, "train.batch_size: got 0, expected an integer >= 1"),
        ("train.patience", 0, "train.patience: got 0, expected an integer >= 1"),
        ("train.validation_fraction", 0, "expected a number > 0 and < 1"),
        ("evaluate.misclassified", -1, "expected an integer >= 0"),
    ],
)
def test_each_rule_names_key_value_and_what_is_allowed(path, value, expected):
    with pytest.raises(ParamsError) as caught:
        validate_params(with_change(path, value))
    assert expected in str(caught.value)


def _leaf_paths(schema, prefix=""):
    for key, value in schema.items():
        if isinstance(value, dict):
            yield from _leaf_paths(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


@pytest.mark.parametrize("path", list(_leaf_paths(SCHEMA)))
def test_every_key_is_checked(path):
    with pytest.raises(ParamsError, match=f"^params.yaml: {re.escape(path)}: got "):
        validate_params(with_change(path, {"not": "valid"}))


def test_data_files_must_be_the_four_fashion_mnist_files():
    files = dict(DEFAULTS["fetch"]["files"])
    files["train-imags-idx3-ubyte.gz"] = files.pop("train-images-idx3-ubyte.gz")
    with pytest.raises(ParamsError, match="fetch.files: got .* expected a mapping"):
        validate_params(with_change("fetch.files", files))


def test_dask_backend_needs_a_scheduler():
    params = with_change("search.backend", "dask")
    with pytest.raises(
        ParamsError, match="search.scheduler: got None, expected a dask"
    ):
        validate_params(params)
    params["search"]["scheduler"] = "tcp://127.0.0.1:8786"
    validate_params(params)


def test_unknown_section_and_non_mapping_file_are_reported():
    with pytest.raises(ParamsError, match="trian: unknown section, expected one of"):
        validate_params({**DEFAULTS, "trian": {}})
    with pytest.raises(ParamsError, match="expected a mapping of sections, got"):
        validate_params(["search"])


def test_unknown_and_missing_keys_are_reported_together():
    params = with_change("search.n_iters", 5)
    del params["train"]["patience"]
    with pytest.raises(ParamsError) as caught:
        validate_params(params)
    lines = str(caught.value).splitlines()
    assert any("search.n_iters: unknown key (set to 5)" in line for line in lines)
    assert any("train.patience: missing" in line for line in lines)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("search:\n  n_iter: [1, 2\n")
    with pytest.raises(ParamsError, match=r"params.yaml: line \d+ is not valid YAML"):
        load_params(path)


def test_missing_file_is_a_params_error(tmp_path):
    with pytest.raises(ParamsError, match="cannot read"):
        load_params(tmp_path / "absent.yaml")


def test_params_that_are_not_utf8_name_the_byte(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"search:\n  scoring: caf\xe9\n")
    with pytest.raises(ParamsError, match="byte 22 is not UTF-8 text; save the file"):
        load_params(path)


BEST = {
    "units_1": 256,
    "units_2": 128,
    "units_3": 64,
    "activation_1": "relu",
    "activation_2": "elu",
    "activation_3": "gelu",
    "learning_rate": 1e-3,
}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, None),
        ({"units_1": "abc"}, "best.json: units_1: got 'abc', expected an integer >= 1"),
        ({"activation_2": "nosuch"}, "best.json: activation_2: got 'nosuch'"),
        ({"learning_rate": -1}, "learning_rate: got -1, expected a number > 0"),
        ({"extra": 1}, "expected a mapping of units_1"),
    ],
)
def test_a_candidate_file_is_checked_key_by_key(change, expected):
    best = {**BEST, **change}
    if expected is None:
        check_candidate(best, "best.json")
        return
    with pytest.raises(PipelineError, match="rerun `dvc repro -f search`$") as caught:
        check_candidate(best, "best.json")
    assert expected in str(caught.value)
    with pytest.raises(PipelineError, match="^best.json: got \\[1, 2\\]"):
        check_candidate([1, 2], "best.json")
