"""The search's fits on a real dask.distributed cluster of local worker processes."""

import os
import signal
import socket
from pathlib import Path

import keras
import numpy as np
import pytest
from distributed import Client, LocalCluster, SchedulerPlugin
from sklearn.model_selection import ParameterSampler

from fmnist_pipeline.config import validate_params
from fmnist_pipeline.errors import ParamsError, PipelineError
from fmnist_pipeline.search import SCHEDULER_TIMEOUT_S, fit_search, make_search
from tests.conftest import synthetic_split, tiny_params


class KillWorkerOnce(keras.callbacks.Callback):
    """Kill the process that starts a fit, the first time any fit starts.

    The marker file is created atomically, so exactly one fit of the whole search
    kills its dask worker (with SIGKILL, as the kernel's OOM killer would), and
    only once it is running; the fits that run after it go on as usual.
    """

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    def on_train_begin(self, logs=None):
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)


class KillWorkerAlways(keras.callbacks.Callback):
    """Kill the process of every fit as soon as it starts."""

    def on_train_begin(self, logs=None):
        os.kill(os.getpid(), signal.SIGKILL)


class FitDependencies(SchedulerPlugin):
    """Record, on the scheduler, which data each submitted fit task depends on."""

    name = "test-fit-dependencies"

    def __init__(self):
        self.dependencies = {}

    def update_graph(self, scheduler, *, tasks, **kwargs):
        for key in tasks:
            if "fit_and_score" in str(key):
                deps = scheduler.tasks[key].dependencies
                self.dependencies[key] = {str(dep.key) for dep in deps}


@pytest.fixture(scope="module")
def data():
    images, labels = synthetic_split(240, seed=0)
    return images.astype(np.float32) / 255.0, labels


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        yield cluster


@pytest.fixture
def client(cluster):
    with Client(cluster.scheduler_address, set_as_default=False) as client:
        yield client


def search_config(**backend) -> dict:
    config = tiny_params([])["search"]
    config.update(n_iter=2, epochs=2, batch_size=16, **backend)
    return config


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on once this returns."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def with_search(**changes) -> dict:
    params = tiny_params(["/usr/share/datasets/fashion-mnist"])
    params["search"].update(changes)
    return params


def test_committed_defaults_run_locally():
    search = tiny_params([])["search"]
    assert search["backend"] == "local"
    assert search["scheduler"] is None


def test_dask_backend_without_scheduler_names_the_key():
    with pytest.raises(ParamsError) as caught:
        validate_params(with_search(backend="dask", scheduler=None))
    problems = str(caught.value).splitlines()[:-1]
    assert problems == [
        "params.yaml: search.scheduler: got None, expected a dask scheduler address "
        "such as tcp://host:8786 when search.backend is dask"
    ]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"backend": "spark"}, "search.backend: got 'spark', expected one of local"),
        ({"scheduler": "127.0.0.1"}, "search.scheduler: got '127.0.0.1', expected"),
        ({"scheduler": 8786}, "search.scheduler: got 8786, expected null or"),
    ],
)
def test_backend_keys_are_checked(changes, expected):
    with pytest.raises(ParamsError, match=expected):
        validate_params(with_search(**changes))


def test_a_scheduler_with_the_local_backend_is_allowed():
    validate_params(with_search(backend="local", scheduler="tcp://127.0.0.1:8786"))
    validate_params(with_search(backend="dask", scheduler="tls://scheduler:8786"))


@pytest.mark.slow
def test_dask_search_draws_the_same_candidates_as_a_local_one(data, cluster, client):
    x, y = data
    local = make_search(search_config())
    fit_search(local, x, y, search_config())

    recorder = FitDependencies()
    client.register_plugin(recorder)
    config = search_config(backend="dask", scheduler=cluster.scheduler_address)
    remote = make_search(config)
    assert fit_search(remote, x, y, config) == []

    assert remote.cv_results_["params"] == local.cv_results_["params"]
    scores = remote.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    # The scores themselves are not compared: see "Running on a cluster" in the
    # README. A dask worker's event loop draws from Python's global `random`
    # while a fit runs, and Keras seeds each layer's initial weights from it.

    # Every fit refers to the same two scattered arrays instead of carrying them.
    fits = cluster.scheduler.plugins[FitDependencies.name].dependencies
    assert len(fits) == 2 * 2
    shipped = set().union(*fits.values())
    assert len(shipped) == 2 and all(deps == shipped for deps in fits.values())

    # Each worker's TensorFlow was given the worker's one thread.
    threads = client.run(lambda: os.environ.get("TF_NUM_INTRAOP_THREADS"))
    assert set(threads.values()) == {"1"}


def test_an_unreachable_scheduler_fails_fast_with_one_line(data):
    x, y = data
    address = f"tcp://127.0.0.1:{free_port()}"
    config = search_config(backend="dask", scheduler=address)
    with pytest.raises(PipelineError) as caught:
        fit_search(make_search(config), x, y, config)
    message = str(caught.value)
    assert message.startswith(
        f"search.scheduler: cannot reach the dask scheduler at {address}"
    )
    assert "\n" not in message
    # The search's own connect timeout applies, not dask's default of 30 s.
    assert f"after {SCHEDULER_TIMEOUT_S} s" in message


@pytest.mark.slow
def test_a_worker_killed_mid_search_leaves_a_search_that_finishes(
    data, cluster, tmp_path: Path
):
    x, y = data
    marker = tmp_path / "killed"
    config = search_config(backend="dask", scheduler=cluster.scheduler_address)
    search = make_search(config)
    search.estimator.set_params(callbacks=[KillWorkerOnce(str(marker))])

    assert fit_search(search, x, y, config) == []
    assert marker.exists()
    drawn = ParameterSampler(
        search.param_distributions, config["n_iter"], random_state=config["seed"]
    )
    assert search.cv_results_["params"] == list(drawn)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


@pytest.mark.slow
def test_fits_that_keep_killing_workers_fail_with_a_clear_message(
    data, cluster, client
):
    x, y = data
    config = search_config(backend="dask", scheduler=cluster.scheduler_address)
    search = make_search(config)
    search.estimator.set_params(callbacks=[KillWorkerAlways()])

    # Give up on a fit when its first worker dies (dask's default allows three).
    allowed = client.run_on_scheduler(
        lambda dask_scheduler: dask_scheduler.allowed_failures
    )
    client.run_on_scheduler(_set_allowed_failures, 0)
    try:
        with pytest.raises(PipelineError) as caught:
            fit_search(search, x, y, config)
    finally:
        client.run_on_scheduler(_set_allowed_failures, allowed)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        f"search.scheduler: the dask cluster at {cluster.scheduler_address} gave up "
        "on a search fit: 1 worker(s) died running it"
    )


def _set_allowed_failures(count, dask_scheduler=None):
    dask_scheduler.allowed_failures = count
