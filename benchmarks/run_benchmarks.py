"""Measure the pipeline's speed and memory side by side; write results.json.

Run from the repository root after `dvc repro` (it reads the prepared data and the
searched best params):

    python benchmarks/run_benchmarks.py            # everything (about 20 minutes)
    python benchmarks/run_benchmarks.py --only wrapper throughput
    python benchmarks/run_benchmarks.py --table    # the README's table, no measuring

Each section compares its alternatives within one run on the same machine, so the
ratios hold even where the absolute numbers would differ elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.json"
sys.path.insert(0, str(ROOT))

from fmnist_pipeline.config import load_params  # noqa: E402
from fmnist_pipeline.data import load_split  # noqa: E402
from fmnist_pipeline.io import read_json, write_json  # noqa: E402


def machine() -> dict:
    flags = Path("/proc/cpuinfo").read_text()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in flags.splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mhz = max(
        float(line.split(":", 1)[1])
        for line in flags.splitlines()
        if line.startswith("cpu MHz")
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "mhz": mhz,
        "avx2_fma": " avx2 " in flags and " fma " in flags,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        **{
            pkg: version(pkg)
            for pkg in ("tensorflow-cpu", "keras", "scikeras", "scikit-learn", "numpy")
        },
    }


def _best_params() -> dict:
    return read_json(ROOT / "metrics/best_params.json")


def _train_data():
    return load_split(ROOT / "data/prepared/train.npz")


def _build_best(best: dict):
    """The searched best architecture as a compiled Keras model."""
    from fmnist_pipeline.model import build_model

    return build_model(
        (best["units_1"], best["units_2"], best["units_3"]),
        (best["activation_1"], best["activation_2"], best["activation_3"]),
        best["learning_rate"],
    )


def _steady_epoch_s(model, train, epochs: int, batch_size: int) -> float:
    """Fit ``model`` for ``epochs``; the fastest epoch after the first, in seconds.

    The first epoch includes tracing and compilation.
    """
    timer = EpochTimer()
    model.fit(
        train.x,
        train.y,
        epochs=epochs,
        batch_size=batch_size,
        verbose=0,
        callbacks=[timer],
    )
    return min(timer.times[1:])


class EpochTimer:
    """Keras callback recording the wall time of each epoch."""

    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.times = []

            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.times.append(time.perf_counter() - self._start)

        return _Timer()


def wrapper_overhead(epochs: int = 3, batch_size: int = 128, repeats: int = 2) -> dict:
    """SciKeras fit against plain Keras fit of the same model, data and epochs."""
    from fmnist_pipeline.model import FashionMLPClassifier

    best, train = _best_params(), _train_data()
    plain_times, wrapped_times = [], []
    for _ in range(repeats):
        model = _build_best(best)
        started = time.perf_counter()
        model.fit(train.x, train.y, epochs=epochs, batch_size=batch_size, verbose=0)
        plain_times.append(time.perf_counter() - started)

        estimator = FashionMLPClassifier(**best, epochs=epochs, batch_size=batch_size)
        started = time.perf_counter()
        estimator.fit(train.x, train.y)
        wrapped_times.append(time.perf_counter() - started)
    return {
        "epochs": epochs,
        "batch_size": batch_size,
        "samples": len(train.y),
        "keras_fit_s": round(min(plain_times), 2),
        "scikeras_fit_s": round(min(wrapped_times), 2),
        "ratio": round(min(wrapped_times) / min(plain_times), 3),
    }


def _matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Best float32 matrix-multiply rate TensorFlow reaches on this machine."""
    import tensorflow as tf

    a = tf.random.uniform((size, size))
    b = tf.random.uniform((size, size))
    tf.linalg.matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def throughput(epochs: int = 4, batch_size: int = 128) -> dict:
    """Training samples per second and the share of the machine's float32 peak.

    FLOPs per training sample: each Dense layer of ``n_in x n_out`` weights costs
    ``2 n_in n_out`` in the forward pass and about twice that backwards, so
    ``6 * sum(n_in n_out)``. The peak is reported two ways: the theoretical one
    (cores x clock x 32 float32 FLOPs per cycle for two 256-bit FMA units) and the
    best rate of a large TensorFlow matrix multiply, a practical ceiling.
    """

    best, train = _best_params(), _train_data()
    widths = [784, best["units_1"], best["units_2"], best["units_3"], 10]
    weights = sum(a * b for a, b in zip(widths, widths[1:], strict=False))
    flops_per_sample = 6 * weights
    steady = _steady_epoch_s(_build_best(best), train, epochs, batch_size)
    samples_per_s = len(train.y) / steady
    achieved = samples_per_s * flops_per_sample / 1e9
    info = machine()
    theoretical = info["cores"] * info["mhz"] / 1e3 * 32
    matmul = _matmul_gflops()
    return {
        "architecture": widths,
        "batch_size": batch_size,
        "samples_per_s": round(samples_per_s),
        "flops_per_sample": flops_per_sample,
        "achieved_gflops": round(achieved, 1),
        "theoretical_peak_gflops": round(theoretical, 1),
        "matmul_peak_gflops": round(matmul, 1),
        "fraction_of_theoretical_peak": round(achieved / theoretical, 3),
        "fraction_of_matmul_peak": round(achieved / matmul, 3),
    }


def xla(epochs: int = 4, batch_size: int = 128) -> dict:
    """Steady epoch time of the best architecture with and without XLA.

    ``build_model`` leaves ``jit_compile`` at Keras' default, ``"auto"``, which on
    the TensorFlow backend compiles the training step with XLA when it can; the
    model's ``jit_compile`` attribute after a fit tells what "auto" chose.
    """

    best, train = _best_params(), _train_data()
    results = {"epochs": epochs, "batch_size": batch_size}
    for setting in ("auto", False, True):
        model = _build_best(best)
        model.compile(
            optimizer=model.optimizer,
            loss=model.loss,
            metrics=["accuracy"],
            jit_compile=setting,
        )
        name = {"auto": "auto", False: "off", True: "on"}[setting]
        results[f"xla_{name}_epoch_s"] = round(
            _steady_epoch_s(model, train, epochs, batch_size), 2
        )
        if setting == "auto":
            results["auto_chose_xla"] = bool(model.jit_compile)
    return results


def augmentation_cost(epochs: int = 3) -> dict:
    """Epoch time of the final training with and without its augmented batches.

    Both fits use the train section of params.yaml (hold-out included) and the same
    number of batches per epoch; the augmented one draws each batch's mirror images
    and shifts in numpy and feeds them to Keras as a Python generator.
    """
    from fmnist_pipeline.train import make_final_estimator

    params = load_params(ROOT / "params.yaml")["train"]
    best, train = _best_params(), _train_data()
    results = {"epochs": epochs, "batch_size": params["batch_size"]}
    settings = {
        "plain": {"flip_augment": False, "shift_augment": 0},
        "augmented": {"flip_augment": True, "shift_augment": params["shift_augment"]},
    }
    for name, augment in settings.items():
        timer = EpochTimer()
        config = {**params, **augment, "max_epochs": epochs, "patience": epochs}
        estimator = make_final_estimator(best, config, [timer]).set_params(verbose=0)
        estimator.fit(train.x, train.y)
        # The first epoch includes tracing and compilation.
        results[f"{name}_epoch_s"] = round(min(timer.times[1:]), 2)
    results["ratio"] = round(results["augmented_epoch_s"] / results["plain_epoch_s"], 3)
    return results


def _flatten(images):
    return images.reshape(len(images), -1)


def _unflatten(rows):
    return rows.reshape(len(rows), 28, 28)


def levers(max_epochs: int = 30, patience: int = 4) -> dict:
    """Mean CV accuracy of the best candidate with each training lever, side by side.

    Scored as the search scores candidates (its subsample, folds, seed and parallel
    fits), so the test set plays no part. The baseline is the search's own fit of
    ``search.epochs`` epochs; each other row changes one thing, or, last, combines
    early stopping with the final training's regularisers.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from fmnist_pipeline.model import FashionMLPClassifier
    from fmnist_pipeline.search import stratified_subsample, tensorflow_threads

    params = load_params(ROOT / "params.yaml")
    config, final = params["search"], params["train"]
    best, train = _best_params(), _train_data()
    x, y = stratified_subsample(train.x, train.y, config["subsample"], config["seed"])
    folds = StratifiedKFold(config["folds"], shuffle=True, random_state=config["seed"])
    common = {
        **best,
        "batch_size": config["batch_size"],
        "random_state": config["seed"],
    }
    early = {
        "epochs": max_epochs,
        "validation_split": final["validation_fraction"],
        "patience": patience,
    }
    regularisers = {
        "label_smoothing": final["label_smoothing"],
        "flip_augment": final["flip_augment"],
        "shift_augment": final["shift_augment"],
    }
    flat, square = FunctionTransformer(_flatten), FunctionTransformer(_unflatten)

    def plain(**settings):
        return FashionMLPClassifier(**common, **settings)

    settings = {
        "baseline": plain(epochs=config["epochs"]),
        "standardized inputs": make_pipeline(
            flat, StandardScaler(), square, plain(epochs=config["epochs"])
        ),
        "final-training regularisers": plain(epochs=config["epochs"], **regularisers),
        "early stopping": plain(**early),
        "early stopping + regularisers": plain(**early, **regularisers),
    }
    results = {
        "images": len(y),
        "folds": config["folds"],
        "search_epochs": config["epochs"],
        "max_epochs": max_epochs,
        "patience": patience,
    }
    with tensorflow_threads(config["n_jobs"]):
        for name, estimator in settings.items():
            started = time.perf_counter()
            scores = cross_val_score(
                estimator, x, y, cv=folds, scoring="accuracy", n_jobs=config["n_jobs"]
            )
            results[name] = {
                "mean_cv_accuracy": round(float(scores.mean()), 4),
                "std": round(float(scores.std()), 4),
                "wall_s": round(time.perf_counter() - started, 1),
            }
    return results


def search_strategies() -> dict:
    """Randomized against successive-halving search at the same candidates."""
    from fmnist_pipeline.search import make_search, run_search
    from fmnist_pipeline.train import make_final_estimator

    params = load_params(ROOT / "params.yaml")
    train = _train_data()
    test = load_split(ROOT / "data/prepared/test.npz")
    results = {}
    for strategy in ("random", "halving"):
        config = {**params["search"], "strategy": strategy}
        make_search(config)  # fails early if the strategy is unknown
        started = time.perf_counter()
        search, _ = run_search(train.x, train.y, config)
        wall = time.perf_counter() - started
        best = {
            k: v.item() if hasattr(v, "item") else v
            for k, v in search.best_params_.items()
        }
        started = time.perf_counter()
        final = make_final_estimator(best, params["train"]).set_params(verbose=0)
        final.fit(train.x, train.y)
        results[strategy] = {
            "search_wall_s": round(wall, 1),
            "candidates": params["search"]["n_iter"],
            "best_mean_cv_score": round(float(search.best_score_), 4),
            "best_params": best,
            "retrain_s": round(time.perf_counter() - started, 1),
            "test_accuracy": round(float(final.score(test.x, test.y)), 4),
        }
    return results


def _peak_tree_rss(command: list[str], env: dict) -> tuple[float, float]:
    """Run ``command``; return (peak RSS of it and its children in MiB, seconds)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    root = psutil.Process(process.pid)
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            done.wait(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    code = process.wait()
    done.set()
    sampler.join()
    if code != 0:
        raise RuntimeError(f"{command} exited {code}")
    return peak / 2**20, time.perf_counter() - started


def search_memory() -> dict:
    """Peak resident memory of the search stage (all its processes) by n_jobs."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for n_jobs in (1, 2):
            params["search"].update(n_jobs=n_jobs, n_iter=2, epochs=2)
            path = Path(scratch) / "params.yaml"
            path.write_text(yaml.safe_dump(params))
            command = [
                sys.executable,
                "stages/search.py",
                "--params",
                str(path),
                "--best-params",
                f"{scratch}/best.json",
                "--cv-results",
                f"{scratch}/cv.csv",
                "--metrics",
                f"{scratch}/search.json",
                "--figure",
                f"{scratch}/cv.png",
            ]
            peak, seconds = _peak_tree_rss(command, dict(os.environ))
            results[f"n_jobs_{n_jobs}"] = {
                "peak_rss_mib": round(peak),
                "wall_s": round(seconds, 1),
            }
    results["setting"] = "search stage, default params with n_iter=2 and epochs=2"
    return results


SECTIONS = {
    "wrapper": wrapper_overhead,
    "throughput": throughput,
    "xla": xla,
    "augmentation": augmentation_cost,
    "levers": levers,
    "search": search_strategies,
    "memory": search_memory,
}


def markdown_table(results: dict) -> str:
    """The README's Performance table, built from results.json."""
    rows = []
    if "wrapper" in results:
        w = results["wrapper"]
        rows.append(
            (
                f"fit, {w['epochs']} epochs of {w['samples']:,} images",
                f"Keras `Model.fit` {w['keras_fit_s']} s, SciKeras estimator "
                f"{w['scikeras_fit_s']} s (ratio {w['ratio']})",
            )
        )
    if "throughput" in results:
        t = results["throughput"]
        rows.append(
            (
                f"training throughput, {'-'.join(map(str, t['architecture']))}",
                f"{t['samples_per_s']:,} images/s = {t['achieved_gflops']} GFLOP/s: "
                f"{t['fraction_of_matmul_peak']:.0%} of a large matmul "
                f"({t['matmul_peak_gflops']} GFLOP/s), "
                f"{t['fraction_of_theoretical_peak']:.0%} of "
                f"{t['theoretical_peak_gflops']} GFLOP/s from the nominal clock",
            )
        )
    if "xla" in results:
        x = results["xla"]
        chose = "XLA" if x["auto_chose_xla"] else "no XLA"
        rows.append(
            (
                "training epoch, XLA off / on / Keras' default",
                f"{x['xla_off_epoch_s']} s / {x['xla_on_epoch_s']} s / "
                f"{x['xla_auto_epoch_s']} s (the default chose {chose})",
            )
        )
    if "augmentation" in results:
        a = results["augmentation"]
        rows.append(
            (
                "final training epoch, plain against augmented batches",
                f"{a['plain_epoch_s']} s against {a['augmented_epoch_s']} s "
                f"(ratio {a['ratio']})",
            )
        )
    lever_results = results.get("levers", {})
    for name, r in lever_results.items():
        if not isinstance(r, dict):
            continue
        rows.append(
            (
                f"best candidate, {name} (CV on {lever_results['images']:,} images)",
                f"mean CV accuracy {r['mean_cv_accuracy']} (std {r['std']}) "
                f"in {r['wall_s']} s",
            )
        )
    for strategy, r in results.get("search", {}).items():
        rows.append(
            (
                f"`{strategy}` search, {r['candidates']} candidates",
                f"{r['search_wall_s']} s, best mean CV accuracy "
                f"{r['best_mean_cv_score']}; winner retrained in {r['retrain_s']} s: "
                f"test accuracy {r['test_accuracy']}",
            )
        )
    memory = results.get("memory", {})
    for key in ("n_jobs_1", "n_jobs_2"):
        if key in memory:
            m = memory[key]
            rows.append(
                (
                    f"peak memory of the search stage, `n_jobs: {key[-1]}`",
                    f"{m['peak_rss_mib']:,} MiB (all its processes)",
                )
            )
    lines = ["| measurement | result |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--table",
        action="store_true",
        help="print the README's table from results.json and measure nothing",
    )
    args = parser.parse_args(argv)
    results = read_json(RESULTS) if RESULTS.exists() else {}
    if args.table:
        print(markdown_table(results))
        return
    results["machine"] = machine()
    for name in args.only:
        print(f"benchmark {name} ...", flush=True)
        started = time.perf_counter()
        results[name] = SECTIONS[name]()
        print(json.dumps(results[name], indent=2), flush=True)
        print(f"benchmark {name} took {time.perf_counter() - started:.0f}s", flush=True)
        # Saved after each section, so a long run stopped half-way keeps its results.
        write_json(RESULTS, results)


if __name__ == "__main__":
    main()
