"""Randomized hyperparameter search over the MLP with stratified cross-validation."""

from __future__ import annotations

import csv
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from distributed import CancelledError, Client, KilledWorker, WorkerPlugin
from distributed import TimeoutError as DaskTimeoutError
from joblib._dask import DaskDistributedBackend
from scipy.stats import loguniform, randint
from sklearn.exceptions import FitFailedWarning
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.model_selection import (
    HalvingRandomSearchCV,
    RandomizedSearchCV,
    StratifiedKFold,
    train_test_split,
)

from fmnist_pipeline.config import SEARCHED, describe_candidate, load_params
from fmnist_pipeline.data import load_split
from fmnist_pipeline.errors import PipelineError
from fmnist_pipeline.io import atomic_path, write_json
from fmnist_pipeline.plots import cv_scores_png

logger = logging.getLogger(__name__)

# Seconds to reach the dask scheduler, and then for a first worker to be there.
SCHEDULER_TIMEOUT_S = 5


def to_distributions(space: Mapping[str, Any]) -> dict[str, Any]:
    """Turn the ``search.space`` section of params.yaml into sampler inputs.

    A list is a set of choices sampled uniformly. ``{low, high}`` is an integer
    range (both ends included) for units and a log-uniform range for the learning
    rate.
    """
    distributions: dict[str, Any] = {}
    for name in SEARCHED:
        spec = space[name]
        if isinstance(spec, list):
            distributions[name] = list(spec)
        elif name == "learning_rate":
            distributions[name] = loguniform(float(spec["low"]), float(spec["high"]))
        else:
            distributions[name] = randint(int(spec["low"]), int(spec["high"]) + 1)
    return distributions


def stratified_subsample(
    x: np.ndarray, y: np.ndarray, size: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``size`` samples with the class balance of ``y``; all when ``None``."""
    if size is None or size >= len(y):
        return x, y
    x_part, _, y_part, _ = train_test_split(
        x, y, train_size=size, stratify=y, random_state=seed
    )
    return x_part, y_part


@contextmanager
def tensorflow_threads(n_jobs: int) -> Iterator[None]:
    """Give each of ``n_jobs`` worker processes an equal share of the cores.

    TensorFlow reads these variables when it starts in a worker; without them
    every worker would spin up one thread per core and they would all fight.
    """
    per_worker = max(1, (os.cpu_count() or 1) // n_jobs)
    wanted = {"TF_NUM_INTRAOP_THREADS": str(per_worker), "TF_NUM_INTEROP_THREADS": "1"}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        with joblib.parallel_config(backend="loky", inner_max_num_threads=per_worker):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class TensorFlowThreads(WorkerPlugin):
    """Size TensorFlow's thread pools in each dask worker to the worker's threads.

    A dask worker process runs up to ``nthreads`` fits at once, one per thread,
    and they share the process's TensorFlow: one intra-op pool of ``nthreads``
    threads keeps the process within the cores it was given, and one inter-op
    thread per concurrent fit matches the local backend's one per fit.

    A plugin rather than ``client.run``: the scheduler also runs ``setup`` on
    workers that join later, such as one that its nanny restarts after it died
    mid-search. The environment variables work because TensorFlow reads them
    when it starts in the worker, at the first fit there; a worker in which
    TensorFlow already started keeps its pools (a warning says so).
    """

    name = "fmnist-tensorflow-threads"
    idempotent = True

    def setup(self, worker: Any) -> None:
        threads = worker.state.nthreads
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
        tensorflow = sys.modules.get("tensorflow")
        if tensorflow is None:
            return
        try:
            tensorflow.config.threading.set_intra_op_parallelism_threads(threads)
            tensorflow.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            logger.warning(
                "TensorFlow already started in dask worker %s; it keeps its "
                "thread pools instead of %d threads",
                worker.address,
                threads,
            )


class SearchDaskBackend(DaskDistributedBackend):
    """joblib's dask backend, with two of its gaps closed for the search.

    - A fit that dask gives up on (``KilledWorker``: the workers running it kept
      dying) reaches joblib 1.6's dask backend only as a future that nothing
      waits on, so the search would wait forever. Retrieving results in the
      calling thread (joblib's older retrieval path) raises that error there.
    - joblib runs a call in the calling process when the backend reports one
      worker, so a cluster with a single worker thread would see no fits.
    """

    supports_retrieve_callback = False

    def retrieve_result(self, out: Any, timeout: float | None = None) -> Any:
        return self.retrieve_result_callback(out.result())

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        return max(2, super().effective_n_jobs(n_jobs))


@contextmanager
def dask_cluster(address: str, data: Sequence[Any]) -> Iterator[None]:
    """Send the fits of searches run inside to the dask cluster at ``address``.

    Uses joblib's dask backend (:class:`SearchDaskBackend`), so scikit-learn's
    ``Parallel`` submits each fit as a dask task. ``data`` (the arrays passed to
    ``search.fit``) is broadcast to every worker once, and each fit refers to that
    copy instead of carrying the arrays. If a worker dies, the scheduler runs its
    fits again on the others; if the cluster keeps losing the workers that run a
    fit, the search fails with :class:`PipelineError`.

    The candidates are those of a local run, but the scores are not reproducible:
    a worker's event loop draws from Python's global ``random`` (sizing the
    messages it sends) while a fit runs, and Keras takes the seeds of a fit's
    initial weights from that same generator.

    Parameters
    ----------
    address : str
        The scheduler, such as ``tcp://127.0.0.1:8786``.
    data : sequence of array-like
        The very objects the search is fitted on (matched by identity).

    Raises
    ------
    PipelineError
        The scheduler is unreachable, has no workers, or lost the fits.
    """
    try:
        client = Client(address, timeout=SCHEDULER_TIMEOUT_S, set_as_default=False)
    except (OSError, DaskTimeoutError, ValueError) as error:
        reason = " ".join(str(error).split())
        raise PipelineError(
            f"search.scheduler: cannot reach the dask scheduler at {address} "
            f"({reason}); start it or fix search.scheduler in params.yaml"
        ) from error

    with client:
        try:
            client.wait_for_workers(1, timeout=SCHEDULER_TIMEOUT_S)
        except DaskTimeoutError as error:
            raise PipelineError(
                f"search.scheduler: the dask scheduler at {address} has no workers "
                f"after {SCHEDULER_TIMEOUT_S}s; start some with "
                f"`dask worker {address}`"
            ) from error
        client.register_plugin(TensorFlowThreads())
        threads = client.nthreads()
        logger.info(
            "fits run on the dask cluster at %s: %d workers, %d threads",
            address,
            len(threads),
            sum(threads.values()),
        )

        backend = SearchDaskBackend(client=client, scatter=list(data))
        with joblib.parallel_config(backend=backend):
            try:
                yield
            except KilledWorker as error:
                raise PipelineError(
                    f"search.scheduler: the dask cluster at {address} gave up on a "
                    f"search fit: {error.allowed_failures + 1} worker(s) died running "
                    f"it, the last {error.last_worker.address}; check that worker's "
                    "log (out of memory?) and rerun"
                ) from error
            except CancelledError as error:
                reason = " ".join(str(error).split())
                raise PipelineError(
                    f"search.scheduler: the dask cluster at {address} cancelled "
                    f"search fits ({reason}); check the scheduler's log and rerun"
                ) from error


@contextmanager
def search_backend(
    config: Mapping[str, Any], n_jobs: int, data: Sequence[Any]
) -> Iterator[None]:
    """Run the search's fits where ``search.backend`` says.

    Parameters
    ----------
    config : mapping
        The ``search`` section; ``backend`` (``local`` when absent) and
        ``scheduler`` are read.
    n_jobs : int
        Parallel fits of the local backend; with ``dask``, the cluster's worker
        threads decide instead.
    data : sequence of array-like
        The arrays the search is fitted on, for :func:`dask_cluster`.
    """
    if config.get("backend", "local") == "dask":
        with dask_cluster(config["scheduler"], data):
            yield
    else:
        with tensorflow_threads(n_jobs):
            yield


def make_search(config: Mapping[str, Any]) -> RandomizedSearchCV:
    """Build the (unfitted) search from the ``search`` section of params.yaml."""
    from fmnist_pipeline.model import FashionMLPClassifier

    seed = config["seed"]
    estimator = FashionMLPClassifier(
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        label_smoothing=config["label_smoothing"],
        flip_augment=config["flip_augment"],
        shift_augment=config["shift_augment"],
        random_state=seed,
    )
    common = {
        "scoring": config["scoring"],
        "cv": StratifiedKFold(
            n_splits=config["folds"], shuffle=True, random_state=seed
        ),
        "n_jobs": config["n_jobs"],
        "refit": False,
        "random_state": seed,
        "error_score": np.nan,
        "return_train_score": False,
        # One line per finished fold: its candidate, params, score and time.
        "verbose": 3,
    }
    distributions = to_distributions(config["space"])
    if config["strategy"] == "halving":
        # Successive halving: all candidates start on a few images, and each
        # round keeps the best 1/factor of them on factor times more images; the
        # last round uses the whole subsample.
        return HalvingRandomSearchCV(
            estimator,
            param_distributions=distributions,
            n_candidates=config["n_iter"],
            factor=config["halving_factor"],
            resource="n_samples",
            min_resources="exhaust",
            **common,
        )
    return RandomizedSearchCV(
        estimator, param_distributions=distributions, n_iter=config["n_iter"], **common
    )


def fit_search(
    search: RandomizedSearchCV,
    x: np.ndarray,
    y: np.ndarray,
    config: Mapping[str, Any] | None = None,
) -> list[str]:
    """Fit ``search``; return the distinct reasons of failed fits (empty if none).

    A candidate whose fit fails (its loss diverges, say) scores NaN and the search
    goes on. If every fit fails, :class:`PipelineError` says so and what to change.
    ``config`` (the ``search`` section) chooses the backend, local when ``None``.
    """
    with (
        search_backend(config or {}, search.n_jobs, [x, y]),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always", FitFailedWarning)
        try:
            search.fit(x, y)
        except ValueError as error:
            if "fits failed" not in str(error):
                raise
            reasons = "; ".join(_failure_reasons(str(error)))
            raise PipelineError(
                f"all {_candidate_count(search)} search candidates failed to fit "
                f"({reasons}); "
                "narrow search.space in params.yaml, for example a lower "
                "learning_rate.high"
            ) from error
    reasons = []
    for warning in caught:
        message = str(warning.message)
        if issubclass(warning.category, FitFailedWarning):
            reasons.extend(_failure_reasons(message))
        elif "test scores are non-finite" not in message:  # implied by failures
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    for reason in reasons:
        logger.warning("some candidates failed: %s", reason)
    return reasons


def _failure_reasons(message: str) -> list[str]:
    """The last line (the exception) of each traceback in a fit-failure message."""
    blocks = re.findall(
        r"with the following error:\n(.*?)(?=\n-{20,}|\Z)", message, re.S
    )
    # The exception's last line, without its module path: "TrainingDiverged: ...".
    return [
        re.sub(r"^(\w+\.)+(?=\w+: )", "", block.strip().splitlines()[-1])
        for block in blocks
        if block.strip()
    ]


def run_search(
    x: np.ndarray, y: np.ndarray, config: Mapping[str, Any]
) -> tuple[RandomizedSearchCV, list[str]]:
    """Search on a stratified subsample of the training data.

    Returns the fitted search and the reasons of any failed fits.
    """
    x_search, y_search = stratified_subsample(x, y, config["subsample"], config["seed"])
    per_class = np.unique(y_search, return_counts=True)[1]
    smallest = int(per_class.min()) if per_class.size else 0
    if smallest < config["folds"]:
        raise PipelineError(
            f"search.folds: {config['folds']} stratified folds need at least as many "
            f"images of every class, and the search's {len(y_search)} images have "
            f"{smallest} of one; lower search.folds or raise search.subsample"
        )
    search = make_search(config)
    logger.info(
        "searching %d candidates x %d folds on %d images (%d epochs each, n_jobs=%d)",
        config["n_iter"],
        config["folds"],
        len(y_search),
        config["epochs"],
        config["n_jobs"],
    )
    started = time.perf_counter()
    failures = fit_search(search, x_search, y_search, config)
    results, names = search.cv_results_, candidate_names(search)
    for index in np.argsort(results["rank_test_score"], kind="stable"):
        logger.info(
            "rank %d: mean CV score %.4f (std %.4f): %s",
            results["rank_test_score"][index],
            results["mean_test_score"][index],
            results["std_test_score"][index],
            names[index],
        )
    logger.info(
        "search done in %.0fs: best mean CV %s %.4f with %s",
        time.perf_counter() - started,
        config["scoring"],
        search.best_score_,
        best_params(search),
    )
    return search, failures


def _plain(value: Any) -> Any:
    """Convert numpy scalars to Python ones for JSON and CSV."""
    return value.item() if isinstance(value, np.generic) else value


def best_params(search: RandomizedSearchCV) -> dict[str, Any]:
    return {name: _plain(search.best_params_[name]) for name in SEARCHED}


def _candidate_count(search: RandomizedSearchCV) -> int:
    """Candidates drawn; successive halving scores some of them several times."""
    if isinstance(search, HalvingRandomSearchCV):
        return search.n_candidates
    return search.n_iter


def search_metrics(search: RandomizedSearchCV, wall_time: float) -> dict[str, Any]:
    """Best mean CV score and its std, candidate counts and fit times."""
    results = search.cv_results_
    best = search.best_index_
    scores = results["mean_test_score"]
    failed = {
        str(params)
        for params, score in zip(results["params"], scores, strict=True)
        if np.isnan(score)
    }
    return {
        "best_mean_cv_score": float(scores[best]),
        "best_std_cv_score": float(results["std_test_score"][best]),
        "scoring": search.scoring,
        "candidates": _candidate_count(search),
        "fits": int(len(scores) * search.n_splits_),
        "failed_candidates": len(failed),
        "mean_fit_time_s": float(np.mean(results["mean_fit_time"])),
        "best_fit_time_s": float(results["mean_fit_time"][best]),
        "wall_time_s": round(wall_time, 1),
    }


def candidate_names(search: RandomizedSearchCV) -> list[str]:
    """:func:`describe_candidate` of each row of ``cv_results_``.

    A row's params are only the searched ones; the estimator's own values fill in
    any hyperparameter that the search space left out.
    """
    defaults = search.estimator.get_params()
    return [describe_candidate({**defaults, **p}) for p in search.cv_results_["params"]]


def candidate_rows(
    search: RandomizedSearchCV, failures: list[str] | None = None
) -> list[dict[str, Any]]:
    """One row per scored candidate: the whole ``cv_results_`` and a status.

    Columns: the candidate's index, successive halving's round (``iter``) and
    images (``n_resources``) when present, rank, mean and std of the CV score,
    the searched params, each fold's score, fit and score times, and ``status``:
    ``ok``, or for a candidate whose folds failed (NaN score) ``failed: `` and the
    reasons in ``failures`` that name it (all of them when none does).
    """
    results = search.cv_results_
    n_rows = len(results["params"])
    leading = ["iter", "n_resources", "rank_test_score"]
    leading += ["mean_test_score", "std_test_score"]
    leading += [f"param_{name}" for name in SEARCHED]
    columns = [c for c in leading if c in results]
    columns += [c for c in results if c not in columns and c != "params"]
    names = candidate_names(search)
    rows = []
    for index in range(n_rows):
        row = {"candidate": index, **{c: _plain(results[c][index]) for c in columns}}
        row["status"] = "ok"
        if np.isnan(row["mean_test_score"]):
            name = names[index]
            reasons = [r for r in failures or [] if name in r] or failures
            row["status"] = "failed: " + ("; ".join(reasons or ["fit raised an error"]))
        rows.append(row)
    return rows


def write_cv_results(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Write the candidate rows as CSV, a table that ``dvc plots`` can draw."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def run(
    params_path: str | Path,
    train_path: str | Path,
    best_params_path: str | Path,
    cv_results_path: str | Path,
    metrics_path: str | Path,
    figure_path: str | Path,
) -> dict[str, Any]:
    """Search, then write the best params, every candidate's scores and a figure."""
    config = load_params(params_path)["search"]
    train = load_split(train_path)
    started = time.perf_counter()
    search, failures = run_search(train.x, train.y, config)
    metrics = search_metrics(search, time.perf_counter() - started)

    rows = candidate_rows(search, failures)
    write_json(best_params_path, best_params(search))
    write_cv_results(rows, cv_results_path)
    write_json(metrics_path, metrics)
    cv_scores_png(rows, SEARCHED, config["scoring"], figure_path)
    return metrics
